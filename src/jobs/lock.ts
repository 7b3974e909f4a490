import { createHash } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { rows, type Database, type DatabaseHandle } from '../db/client.js';
import { failAbandonedRuns, type SyncRunKind } from '../db/sync-runs.js';

/** A stable 63-bit advisory lock key for a job name, so every replica derives the same key. */
export const lockKey = (name: string): bigint =>
  BigInt.asIntN(64, BigInt(`0x${createHash('sha256').update(`logto-access-sync:${name}`).digest('hex').slice(0, 16)}`));

/** Why a run left 'running' is marked failed by the next holder of its lock. */
export const abandonedRunReason = 'process ended while running';

/**
 * The sync_runs kinds each lock guards: a run of these kinds is only ever 'running' while some process
 * holds the lock, so whoever takes the lock knows any such run still 'running' was left by a process
 * that died (SIGKILL, OOM, lost host) and marks it failed before doing anything else.
 */
const runKindsGuardedBy: Record<string, SyncRunKind[]> = {
  'full-sync': ['baseline', 'reconcile'],
  'role-sweep': ['sweep'],
};

const heldInProcess = new Set<string>();

/** Runs `fn` holding the advisory lock `name` on `session`; null, without running it, when another session holds it. */
const holdingAdvisoryLock = async <T>(session: Database, name: string, fn: () => Promise<T>): Promise<{ value: T } | null> => {
  const key = lockKey(name).toString();
  const [row] = await rows<{ locked: boolean }>(session, sql`select pg_try_advisory_lock(${key}::bigint) as locked`);
  if (!row?.locked) return null;
  try {
    return { value: await fn() };
  } finally {
    await session.execute(sql`select pg_advisory_unlock(${key}::bigint)`);
  }
};

/**
 * The other locks whose abandoned runs a taker also fails when nobody holds them, so a service start or a
 * CLI sync clears a role sweep a killed process left 'running'. One direction only: probing the sweep lock
 * can at worst make another replica skip one sweep tick, while probing 'full-sync' could turn away a
 * reconcile starting at that instant.
 */
const alsoClearedBy: Record<string, string[]> = {
  'full-sync': ['role-sweep'],
};

/** Fails the runs no live holder owns: those of the lock just taken, and those of `alsoClearedBy` locks nobody holds. */
const failRunsNobodyOwns = async (session: Database, taken: string): Promise<void> => {
  await failAbandonedRuns(session, runKindsGuardedBy[taken] ?? [], abandonedRunReason);
  for (const name of alsoClearedBy[taken] ?? []) {
    // PGlite serves one process on one session, where advisory locks are re-entrant: the in-process set decides there.
    if (heldInProcess.has(name)) continue;
    heldInProcess.add(name);
    try {
      await holdingAdvisoryLock(session, name, () => failAbandonedRuns(session, runKindsGuardedBy[name] ?? [], abandonedRunReason));
    } finally {
      heldInProcess.delete(name);
    }
  }
};

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
    return await database.withSession((session) =>
      holdingAdvisoryLock(session, name, async () => {
        if (runKindsGuardedBy[name]) await failRunsNobodyOwns(session, name);
        return fn(session);
      }),
    );
  } finally {
    heldInProcess.delete(name);
  }
};
