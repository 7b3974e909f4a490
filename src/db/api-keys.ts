import { createHash, randomBytes } from 'node:crypto';
import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import { apiKeys } from '../../db/schema.js';
import { AppError } from '../errors.js';
import type { Database } from './client.js';

export type ApiKeyScope = 'read' | 'write';
export const apiKeyScopes: readonly ApiKeyScope[] = ['read', 'write'];

/** Every key starts with this, so a leaked one is recognisable (secret scanners, logs). */
export const API_KEY_PREFIX = 'las_';
const DISPLAY_PREFIX_LENGTH = 8;

/** SHA-256 (hex) of a presented key: keys are 256 random bits, so a slow hash would buy nothing. */
export const hashApiKey = (secret: string): string => createHash('sha256').update(secret, 'utf8').digest('hex');

export const generateApiKeySecret = (): string => `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;

export type ApiKeySummary = {
  id: number;
  name: string;
  scope: ApiKeyScope;
  /** The first characters of the key, for telling keys apart; never enough to use it. */
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
};

export type CreatedApiKey = { id: number; name: string; scope: ApiKeyScope; prefix: string; secret: string };

const summaryColumns = {
  id: apiKeys.id,
  name: apiKeys.name,
  scope: apiKeys.scope,
  prefix: apiKeys.prefix,
  createdAt: apiKeys.createdAt,
  revokedAt: apiKeys.revokedAt,
  lastUsedAt: apiKeys.lastUsedAt,
};

const toScope = (scope: string): ApiKeyScope => (scope === 'write' ? 'write' : 'read');

/**
 * Creates a key and returns its secret: the only time it exists in clear. Only the hash is stored.
 * Names are unique (including revoked keys), because the name is what audit records show as actor.
 */
export const createApiKey = async (db: Database, input: { name: string; scope: ApiKeyScope }): Promise<CreatedApiKey> => {
  const name = input.name.trim();
  if (name.length === 0 || name.length > 100) throw new AppError(400, 'invalid_api_key_name', 'An API key name must be 1 to 100 characters');
  if (!apiKeyScopes.includes(input.scope)) throw new AppError(400, 'invalid_api_key_scope', 'An API key scope must be read or write');
  const secret = generateApiKeySecret();
  const prefix = secret.slice(0, DISPLAY_PREFIX_LENGTH);
  const [row] = await db
    .insert(apiKeys)
    .values({ name, scope: input.scope, hash: hashApiKey(secret), prefix })
    .onConflictDoNothing()
    .returning({ id: apiKeys.id });
  if (!row) throw new AppError(409, 'api_key_exists', `An API key named ${name} already exists`);
  return { id: row.id, name, scope: input.scope, prefix, secret };
};

/** Every key, active and revoked, oldest first; never a hash or a secret. */
export const listApiKeys = async (db: Database): Promise<ApiKeySummary[]> => {
  const rows = await db.select(summaryColumns).from(apiKeys).orderBy(asc(apiKeys.id));
  return rows.map((row) => ({ ...row, scope: toScope(row.scope) }));
};

/**
 * Revokes a key by name or, failing that, by id. Returns the revoked key, or null when no active key
 * matches (unknown, or already revoked: the first revocation time stays). API processes stop
 * accepting it within their key cache window (5 s).
 */
export const revokeApiKey = async (db: Database, idOrName: string | number): Promise<ApiKeySummary | null> => {
  const text = String(idOrName).trim();
  // A name wins over an id, so that a key named "12" cannot revoke key 12 by accident.
  let [target] = await db.select(summaryColumns).from(apiKeys).where(eq(apiKeys.name, text));
  if (!target && /^\d{1,15}$/.test(text)) [target] = await db.select(summaryColumns).from(apiKeys).where(eq(apiKeys.id, Number(text)));
  if (!target) return null;
  if (target.revokedAt) return null;
  const [revoked] = await db
    .update(apiKeys)
    .set({ revokedAt: sql`now()` })
    .where(and(eq(apiKeys.id, target.id), isNull(apiKeys.revokedAt)))
    .returning(summaryColumns);
  return revoked ? { ...revoked, scope: toScope(revoked.scope) } : null;
};

export type StoredApiKey = { id: number; name: string; scope: ApiKeyScope; revokedAt: Date | null };

/** The key with this hash (unique index), revoked or not; null when there is none. */
export const findApiKeyByHash = async (db: Database, hash: string): Promise<StoredApiKey | null> => {
  const [row] = await db
    .select({ id: apiKeys.id, name: apiKeys.name, scope: apiKeys.scope, revokedAt: apiKeys.revokedAt })
    .from(apiKeys)
    .where(eq(apiKeys.hash, hash));
  return row ? { ...row, scope: toScope(row.scope) } : null;
};

/** Records that a key was used (callers do this at most once per cache window, not per request). */
export const touchApiKey = async (db: Database, id: number): Promise<void> => {
  await db.update(apiKeys).set({ lastUsedAt: sql`now()` }).where(eq(apiKeys.id, id));
};
