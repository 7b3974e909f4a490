import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { rows, type Database, type DatabaseHandle } from '../db/client.js';

/** A stable 63-bit advisory lock key for a job name, so every replica derives the same key. */
export const lockKey = (name: string): bigint =>
  BigInt.asIntN(64, BigInt(`0x${createHash('sha256').update(`logto-access-sync:${name}`).digest('hex').slice(0, 16)}`));

const heldInProcess = new Set<string>();

/**
 * Runs `fn` only if no other replica (PostgreSQL advisory lock, held on one dedicated session for the
 * whole run) and no other caller in this process holds the lock `name`. Returns null when it was held.
 */
export const withJobLock = async <T>(
  database: DatabaseHandle,
  name: string,
  fn: (session: Database) => Promise<T>,
): Promise<{ value: T } | null> => {
  if (heldInProcess.has(name)) return null;
  heldInProcess.add(name);
  try {
    return await database.withSession(async (session) => {
      const key = lockKey(name);
      const [row] = await rows<{ locked: boolean }>(session, sql`select pg_try_advisory_lock(${key.toString()}::bigint) as locked`);
      if (!row?.locked) return null;
      try {
        return { value: await fn(session) };
      } finally {
        await session.execute(sql`select pg_advisory_unlock(${key.toString()}::bigint)`);
      }
    });
  } finally {
    heldInProcess.delete(name);
  }
};
