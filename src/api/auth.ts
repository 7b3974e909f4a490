import { timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import type { Config } from '../config.js';
import { findApiKeyByHash, hashApiKey, touchApiKey, type ApiKeyScope } from '../db/api-keys.js';
import type { Database } from '../db/client.js';
import type { Logger } from '../logger.js';
import { sendProblem } from './problem.js';

/** The caller behind a request: the key's name is the actor recorded for its writes. */
export type Principal = { name: string; scope: ApiKeyScope; source: 'database' | 'environment'; keyId?: number };

export type KeyAuthenticator = {
  /** The principal for a presented secret, or null when the key is unknown or revoked. */
  authenticate(secret: string): Promise<Principal | null>;
};

export type KeyAuthenticatorOptions = {
  db: Database;
  environmentKeys: Config['http']['apiKeys'];
  logger: Logger;
  /** How long a database lookup (found or not) is reused; a revoked key stops working within it. */
  cacheTtlMs?: number;
  clock?: () => number;
  /** Bound on cached lookups, so a flood of random keys cannot grow memory. */
  maxCacheEntries?: number;
};

/**
 * Keys are compared by their SHA-256: environment keys with `timingSafeEqual` over every configured
 * key (no early exit), stored keys by looking the hash up in its unique index (the hash of an
 * unknown secret reveals nothing through timing). Lookups are cached briefly, so a busy caller
 * costs one query per key per window; `last_used_at` is written once per window, off the request path.
 */
export const createKeyAuthenticator = (options: KeyAuthenticatorOptions): KeyAuthenticator => {
  const ttlMs = options.cacheTtlMs ?? 5000;
  const clock = options.clock ?? Date.now;
  const maxEntries = options.maxCacheEntries ?? 10_000;
  const environmentKeys = options.environmentKeys.map((key) => ({
    principal: { name: key.name, scope: key.scope, source: 'environment' } satisfies Principal,
    hash: Buffer.from(hashApiKey(key.secret), 'hex'),
  }));
  const cache = new Map<string, { principal: Principal | null; expiresAt: number }>();
  const pending = new Map<string, Promise<Principal | null>>();

  const lookUp = async (hash: string): Promise<Principal | null> => {
    const stored = await findApiKeyByHash(options.db, hash);
    if (!stored || stored.revokedAt) return null;
    touchApiKey(options.db, stored.id).catch((error: unknown) => options.logger.warn({ err: error }, 'could not record API key use'));
    return { name: stored.name, scope: stored.scope, source: 'database', keyId: stored.id };
  };

  return {
    async authenticate(secret) {
      const hex = hashApiKey(secret);
      const presented = Buffer.from(hex, 'hex');
      let match: Principal | null = null;
      for (const key of environmentKeys) {
        if (timingSafeEqual(key.hash, presented) && match === null) match = key.principal;
      }
      if (match) return match;

      const cached = cache.get(hex);
      if (cached && clock() < cached.expiresAt) return cached.principal;
      const inFlight = pending.get(hex);
      if (inFlight) return inFlight;
      const lookup = lookUp(hex)
        .then((principal) => {
          cache.delete(hex);
          if (cache.size >= maxEntries) {
            const oldest = cache.keys().next();
            if (!oldest.done) cache.delete(oldest.value);
          }
          cache.set(hex, { principal, expiresAt: clock() + ttlMs });
          return principal;
        })
        .finally(() => pending.delete(hex));
      pending.set(hex, lookup);
      return lookup;
    },
  };
};

const bearer = /^Bearer[ ]+([A-Za-z0-9._~+/=-]{1,512})[ ]*$/i;

/**
 * Requires `Authorization: Bearer <key>` on everything below it and records the principal in
 * `res.locals.principal`. Missing, unknown or revoked keys get a 401 problem; `onInvalidKey` hears
 * of each unknown or revoked one (the rate limiter of guesses).
 */
export const requireApiKey =
  (authenticator: KeyAuthenticator, onInvalidKey?: (req: Request) => void): RequestHandler =>
  async (req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    const header = req.get('authorization');
    const secret = header ? bearer.exec(header)?.[1] : undefined;
    if (!secret) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="logto-access-sync"');
      sendProblem(req, 401, 'missing_api_key', 'Send an API key as "Authorization: Bearer <key>"');
      return;
    }
    const principal = await authenticator.authenticate(secret);
    if (!principal) {
      onInvalidKey?.(req);
      res.setHeader('WWW-Authenticate', 'Bearer realm="logto-access-sync", error="invalid_token"');
      sendProblem(req, 401, 'invalid_api_key', 'The API key is unknown or has been revoked');
      return;
    }
    res.locals.principal = principal;
    next();
  };

export const satisfies = (principal: Principal | undefined, scope: 'read' | 'write'): boolean =>
  principal !== undefined && (scope === 'read' || principal.scope === 'write');

/** 403 unless the caller's key has `scope` (write includes read). */
export const requireScope =
  (scope: 'read' | 'write'): RequestHandler =>
  (req, res, next) => {
    if (satisfies(res.locals.principal as Principal | undefined, scope)) {
      next();
      return;
    }
    sendProblem(req, 403, 'insufficient_scope', `This route needs an API key with the ${scope} scope`, { requiredScope: scope });
  };
