import { createHash, randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import {
  claimIdempotencyKey,
  completeIdempotencyKey,
  purgeExpiredIdempotencyKeys,
  releaseIdempotencyKey,
  renewIdempotencyLease,
  type IdempotencyClaim,
} from '../db/idempotency.js';
import type { Database } from '../db/client.js';
import type { Logger } from '../logger.js';
import type { Principal } from './auth.js';
import { sendProblem } from './problem.js';
import type { Route } from './route.js';

export type IdempotencyOptions = {
  db: Database;
  logger: Logger;
  /** How long an answer is kept for retries (default 24 h). */
  ttlMs?: number;
  /** How long a running request holds its key without renewing it (default 30 s); it renews every third of that. */
  leaseMs?: number;
  /** Expired keys are deleted at most this often per process, on the way of a request that carries a key (default 60 s). */
  purgeIntervalMs?: number;
};

/** Every write under /v1 (POST, PUT, PATCH, DELETE) honours `Idempotency-Key`, whoever declares the route. */
export const isIdempotentWrite = (route: Pick<Route, 'method' | 'path'>): boolean => route.method !== 'get' && route.path.startsWith('/v1/');

export const IDEMPOTENCY_HEADER = 'Idempotency-Key';
/** Set on an answer that was stored by an earlier request with the same key. */
export const REPLAYED_HEADER = 'Idempotent-Replayed';

const keyPattern = /^[\x21-\x7e]{1,255}$/;
/** Response headers that are part of the answer (the rest, like X-Request-Id, belong to each response). */
const storedHeaders = ['content-type', 'location'];

/** JSON with object keys sorted, so `{a,b}` and `{b,a}` are the same request. */
const canonicalJson = (value: unknown): string => {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
};

/** Whose keys these are: keys are scoped per API key, so two clients never see each other's answers. */
const ownerOf = (principal: Principal | undefined): string =>
  principal === undefined ? 'anonymous' : principal.source === 'database' ? `key:${principal.keyId}` : `env:${principal.name}`;

/**
 * `Idempotency-Key` for write routes. The first request with a key runs and its answer (status, body,
 * content type) is stored in PostgreSQL, so every replica sees it; a retry of the same request gets
 * that answer back without running again; the same key with another request is 422; while the first
 * still runs, others are 409. A 5xx (Logto unreachable, a crash of ours) is not stored: the key is
 * freed, so a retry really retries. Runs after authentication and body parsing.
 */
export const idempotency = (options: IdempotencyOptions): RequestHandler => {
  const { db, logger } = options;
  const ttlMs = options.ttlMs ?? 24 * 3_600_000;
  const leaseMs = options.leaseMs ?? 30_000;
  const purgeIntervalMs = options.purgeIntervalMs ?? 60_000;
  let lastPurge = 0;

  const purgeNowAndThen = () => {
    const now = Date.now();
    if (now - lastPurge < purgeIntervalMs) return;
    lastPurge = now;
    purgeExpiredIdempotencyKeys(db).catch((error: unknown) => logger.warn({ err: error }, 'could not delete expired idempotency keys'));
  };

  const replay = (res: Response, answer: { status: number; headers: Record<string, string>; body: string | null }) => {
    for (const [name, value] of Object.entries(answer.headers)) res.setHeader(name, value);
    res.setHeader(REPLAYED_HEADER, 'true');
    res.status(answer.status);
    res.end(answer.body ?? undefined);
  };

  return async (req, res, next) => {
    const key = req.get(IDEMPOTENCY_HEADER);
    if (key === undefined) {
      next();
      return;
    }
    if (!keyPattern.test(key)) {
      sendProblem(req, 400, 'invalid_idempotency_key', `${IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters`);
      return;
    }
    const owner = ownerOf(res.locals.principal as Principal | undefined);
    const requestHash = createHash('sha256')
      .update(canonicalJson([owner, req.method, req.originalUrl, req.body ?? null]))
      .digest('hex');
    const claim: IdempotencyClaim = { owner, key, requestHash, token: randomUUID(), leaseMs, ttlMs };
    purgeNowAndThen();

    const outcome = await claimIdempotencyKey(db, claim);
    if (!outcome.claimed) {
      const { record } = outcome;
      if (record.requestHash !== requestHash) {
        sendProblem(
          req,
          422,
          'idempotency_key_reused',
          `This ${IDEMPOTENCY_HEADER} was already used for a different request (method, path or body); use a new key for a new request`,
        );
        return;
      }
      if (record.state === 'running') {
        res.setHeader('Retry-After', '1');
        sendProblem(req, 409, 'idempotency_key_in_use', `A request with this ${IDEMPOTENCY_HEADER} is still running; retry when it has finished`);
        return;
      }
      replay(res, record.answer);
      return;
    }

    const renewal = setInterval(() => {
      renewIdempotencyLease(db, claim).catch((error: unknown) => logger.warn({ err: error }, 'could not renew an idempotency key lease'));
    }, Math.max(1, Math.floor(leaseMs / 3)));
    renewal.unref();

    // The answer is stored before it is sent: a client that got it and retries finds it stored.
    const originalWrite = res.write;
    const originalEnd = res.end;
    let streamed = false;
    res.write = function (this: Response, ...args: unknown[]) {
      streamed = true;
      return (originalWrite as (...a: unknown[]) => boolean).apply(this, args);
    } as Response['write'];
    res.end = function (this: Response, ...args: unknown[]) {
      res.write = originalWrite;
      res.end = originalEnd;
      clearInterval(renewal);
      const [chunk] = args;
      const body =
        typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : chunk instanceof Uint8Array ? Buffer.from(chunk).toString('utf8') : null;
      const headers: Record<string, string> = {};
      for (const name of storedHeaders) {
        const value = res.getHeader(name);
        if (value !== undefined) headers[name] = String(value);
      }
      const settle =
        res.statusCode >= 500 || streamed
          ? releaseIdempotencyKey(db, claim)
          : completeIdempotencyKey(db, claim, { status: res.statusCode, headers, body });
      settle
        .catch((error: unknown) => logger.error({ err: error }, 'could not store the answer of an idempotent request'))
        .finally(() => {
          (originalEnd as (...a: unknown[]) => Response).apply(res, args);
        });
      return res;
    } as Response['end'];
    next();
  };
};
