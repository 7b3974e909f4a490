import { and, desc, eq, inArray, ne, sql } from 'drizzle-orm';
import { syncRuns, webhookDeliveries } from '../../db/schema.js';
import { rows, type Database } from './client.js';
import { readSyncState, writeSyncState } from './sync-runs.js';

/** sync_state key of the service's lifecycle marker. */
export const serviceLifecycleKey = 'service_lifecycle';

/**
 * 'running' from the start of a process until its clean shutdown writes 'stopped'; a process that dies
 * leaves 'running' behind, so the next start knows the stop was not clean.
 */
export type ServiceLifecycle =
  | { state: 'running'; startedAt: string }
  | { state: 'stopped'; stoppedAt: string; inboxEmpty: boolean };

export const readServiceLifecycle = async (db: Database): Promise<ServiceLifecycle | null> => {
  const value = await readSyncState<Record<string, unknown>>(db, serviceLifecycleKey);
  if (value?.state === 'running' && typeof value.startedAt === 'string') return { state: 'running', startedAt: value.startedAt };
  if (value?.state === 'stopped' && typeof value.stoppedAt === 'string') {
    return { state: 'stopped', stoppedAt: value.stoppedAt, inboxEmpty: value.inboxEmpty === true };
  }
  return null;
};

export const writeServiceLifecycle = (db: Database, lifecycle: ServiceLifecycle): Promise<void> =>
  writeSyncState(db, serviceLifecycleKey, lifecycle);

/**
 * When the latest delivery sent to this service (not one recovered from Logto's hook logs) was received.
 * Ids grow with receipt, so the primary key answers it without a scan.
 */
export const lastDeliveryReceivedAt = async (db: Database): Promise<Date | null> => {
  const [row] = await db
    .select({ receivedAt: webhookDeliveries.receivedAt })
    .from(webhookDeliveries)
    .where(ne(webhookDeliveries.channel, 'recent_logs'))
    .orderBy(desc(webhookDeliveries.id))
    .limit(1);
  return row?.receivedAt ?? null;
};

/** When the latest baseline or reconcile that succeeded started: the state was complete as of then. */
export const lastFullSyncStartedAt = async (db: Database): Promise<Date | null> => {
  const [row] = await db
    .select({ startedAt: syncRuns.startedAt })
    .from(syncRuns)
    .where(and(inArray(syncRuns.kind, ['baseline', 'reconcile']), eq(syncRuns.status, 'succeeded')))
    .orderBy(desc(syncRuns.id))
    .limit(1);
  return row?.startedAt ?? null;
};

/** Deliveries not yet settled (pending or processing): none after a clean shutdown means nothing was left. */
export const unsettledDeliveries = async (db: Database, ids?: number[]): Promise<number> => {
  if (ids && ids.length === 0) return 0;
  const [row] = await rows<{ count: number }>(
    db,
    sql`select count(*)::int as count from ${webhookDeliveries}
        where outcome is null ${ids ? sql`and id in (${sql.join(ids.map((id) => sql`${id}`), sql`, `)})` : sql``}`,
  );
  return row?.count ?? 0;
};

/** True once a baseline or reconcile has succeeded: until then the stored access state is partial. */
export const firstFullSyncSucceeded = async (db: Database): Promise<boolean> => (await lastFullSyncStartedAt(db)) !== null;

/**
 * `firstFullSyncSucceeded` for the request path: once true it stays true in memory (a database that was
 * synced never becomes unsynced), so after the first sync it costs nothing. Until then concurrent callers
 * share one query.
 */
export const cachedFirstFullSyncSucceeded = (db: Database): (() => Promise<boolean>) => {
  let synced = false;
  let inFlight: Promise<boolean> | null = null;
  return async () => {
    if (synced) return true;
    inFlight ??= firstFullSyncSucceeded(db)
      .then((value) => (synced = value))
      .finally(() => {
        inFlight = null;
      });
    return inFlight;
  };
};
