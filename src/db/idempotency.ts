import { and, eq, lte, sql } from 'drizzle-orm';
import { idempotencyKeys } from '../../db/schema.js';
import { rows, type Database } from './client.js';

export type StoredAnswer = { status: number; headers: Record<string, string>; body: string | null };

export type IdempotencyRecord =
  | { state: 'running'; requestHash: string }
  | { state: 'done'; requestHash: string; answer: StoredAnswer };

export type IdempotencyClaim = { owner: string; key: string; requestHash: string; token: string; leaseMs: number; ttlMs: number };

const milliseconds = (ms: number) => sql`(${ms}::double precision * interval '1 millisecond')`;

/**
 * Takes the key for a request: a new key, an expired one, or one whose request (the same request) stopped
 * renewing its lease, i.e. crashed. Otherwise returns what is stored, for the caller to replay or refuse.
 * One statement, so two replicas racing for a key cannot both win.
 */
export const claimIdempotencyKey = async (
  db: Database,
  claim: IdempotencyClaim,
): Promise<{ claimed: true } | { claimed: false; record: IdempotencyRecord }> => {
  for (let attempt = 0; ; attempt += 1) {
    const won = await rows<{ token: string }>(
      db,
      sql`insert into ${idempotencyKeys} (owner, key, request_hash, state, token, lease_until, expires_at)
        values (${claim.owner}, ${claim.key}, ${claim.requestHash}, 'running', ${claim.token},
          now() + ${milliseconds(claim.leaseMs)}, now() + ${milliseconds(claim.ttlMs)})
        on conflict (owner, key) do update set
          request_hash = excluded.request_hash, state = 'running', token = excluded.token,
          lease_until = excluded.lease_until, expires_at = excluded.expires_at, created_at = now(),
          response_status = null, response_headers = null, response_body = null
        where ${idempotencyKeys.expiresAt} <= now()
          or (${idempotencyKeys.state} = 'running' and ${idempotencyKeys.leaseUntil} <= now()
            and ${idempotencyKeys.requestHash} = excluded.request_hash)
        returning token`,
    );
    if (won.length > 0) return { claimed: true };
    const [stored] = await db
      .select()
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.owner, claim.owner), eq(idempotencyKeys.key, claim.key)));
    if (stored) {
      if (stored.state === 'done' && stored.responseStatus !== null) {
        return {
          claimed: false,
          record: {
            state: 'done',
            requestHash: stored.requestHash,
            answer: { status: stored.responseStatus, headers: stored.responseHeaders ?? {}, body: stored.responseBody },
          },
        };
      }
      return { claimed: false, record: { state: 'running', requestHash: stored.requestHash } };
    }
    // Released between the two statements (its request failed with a 5xx): try to take it again.
    if (attempt >= 3) return { claimed: false, record: { state: 'running', requestHash: claim.requestHash } };
  }
};

const held = (claim: Pick<IdempotencyClaim, 'owner' | 'key' | 'token'>) =>
  and(eq(idempotencyKeys.owner, claim.owner), eq(idempotencyKeys.key, claim.key), eq(idempotencyKeys.token, claim.token));

/** Extends the lease of a request still running. */
export const renewIdempotencyLease = async (db: Database, claim: Pick<IdempotencyClaim, 'owner' | 'key' | 'token' | 'leaseMs'>) => {
  await db
    .update(idempotencyKeys)
    .set({ leaseUntil: sql`now() + ${milliseconds(claim.leaseMs)}` })
    .where(and(held(claim), eq(idempotencyKeys.state, 'running')));
};

/** Stores the first answer; retries of the same request get it back until the key expires. */
export const completeIdempotencyKey = async (
  db: Database,
  claim: Pick<IdempotencyClaim, 'owner' | 'key' | 'token'>,
  answer: StoredAnswer,
) => {
  await db
    .update(idempotencyKeys)
    .set({ state: 'done', leaseUntil: null, responseStatus: answer.status, responseHeaders: answer.headers, responseBody: answer.body })
    .where(held(claim));
};

/** Frees the key (the request failed in a way worth retrying): the next request with it runs anew. */
export const releaseIdempotencyKey = async (db: Database, claim: Pick<IdempotencyClaim, 'owner' | 'key' | 'token'>) => {
  await db.delete(idempotencyKeys).where(held(claim));
};

/** Deletes expired keys (an index on expires_at keeps this cheap); returns how many. */
export const purgeExpiredIdempotencyKeys = async (db: Database): Promise<number> => {
  const deleted = await db.delete(idempotencyKeys).where(lte(idempotencyKeys.expiresAt, sql`now()`)).returning({ key: idempotencyKeys.key });
  return deleted.length;
};
