import { sql } from 'drizzle-orm';
import { rows, type Database } from './client.js';

/**
 * The time up to which the stored access state is known to follow Logto:
 * - null when no baseline or reconcile has ever succeeded (the copy was never complete);
 * - the receipt time of the oldest delivery still waiting in the inbox (changes after it may not be applied yet);
 * - otherwise now (taken before the inbox is read, so it never claims more than was checked).
 * One statement: an indexed probe of sync_runs and the partial index of unfinished deliveries.
 */
export const accessStateAsOf = async (db: Database, now: () => Date = () => new Date()): Promise<Date | null> => {
  const checkedAt = now();
  const [row] = await rows<{ synced: boolean; oldest: string | null }>(
    db,
    sql`select
      exists (
        select 1 from sync_runs where kind in ('baseline', 'reconcile') and status = 'succeeded'
      ) as synced,
      (
        select to_char(min(received_at) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        from webhook_deliveries where outcome is null
      ) as oldest`,
  );
  if (!row?.synced) return null;
  return row.oldest ? new Date(row.oldest) : checkedAt;
};

/**
 * `accessStateAsOf` cached for `ttlMs` (default 250 ms), with concurrent callers sharing one query,
 * so the header costs nothing on the hot path. A cached "now" stays the time it was checked.
 */
export const cachedAccessStateAsOf = (
  db: Database,
  options: { ttlMs?: number; clock?: () => number } = {},
): (() => Promise<Date | null>) => {
  const ttlMs = options.ttlMs ?? 250;
  const clock = options.clock ?? Date.now;
  let cached: { value: Date | null; expiresAt: number } | null = null;
  let inFlight: Promise<Date | null> | null = null;
  return async () => {
    if (cached && clock() < cached.expiresAt) return cached.value;
    if (inFlight) return inFlight;
    inFlight = accessStateAsOf(db, () => new Date(clock()))
      .then((value) => {
        cached = { value, expiresAt: clock() + ttlMs };
        return value;
      })
      .finally(() => {
        inFlight = null;
      });
    return inFlight;
  };
};
