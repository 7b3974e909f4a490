import { and, desc, eq, inArray, isNotNull, lt, sql, type SQL } from 'drizzle-orm';
import { syncRuns, syncState, webhookDeliveries } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';

export const syncRunKinds = ['baseline', 'reconcile', 'sweep'] as const;
export const syncRunStatuses = ['running', 'succeeded', 'failed'] as const;

export type SyncRun = {
  id: number;
  kind: string;
  trigger: string;
  status: string;
  startedAt: Date;
  finishedAt: Date | null;
  counts: Record<string, number>;
  error: string | null;
  organizationsAvailable: boolean | null;
  notes: string | null;
  /** Drift found by kind, from the report (without reading the report itself). */
  drift: Record<string, number> | null;
};

export type SyncRunDetail = SyncRun & { report: Record<string, unknown> | null };

const syncRunColumns = {
  id: syncRuns.id,
  kind: syncRuns.kind,
  trigger: syncRuns.trigger,
  status: syncRuns.status,
  startedAt: syncRuns.startedAt,
  finishedAt: syncRuns.finishedAt,
  counts: syncRuns.counts,
  error: syncRuns.error,
  organizationsAvailable: syncRuns.organizationsAvailable,
  notes: syncRuns.notes,
  drift: sql<Record<string, number> | null>`${syncRuns.report} -> 'drift' -> 'totals'`,
};

export type SyncRunFilters = {
  kind?: (typeof syncRunKinds)[number] | undefined;
  status?: (typeof syncRunStatuses)[number] | undefined;
};

export type SyncRunCursor = [id: number];

/** Sync runs, newest first, without their (possibly large) reports. */
export const listSyncRuns = async (
  db: Database,
  filters: SyncRunFilters,
  page: Page<SyncRunCursor>,
): Promise<Paged<SyncRun, SyncRunCursor>> => {
  const conditions: (SQL | undefined)[] = [];
  if (filters.kind !== undefined) conditions.push(eq(syncRuns.kind, filters.kind));
  if (filters.status !== undefined) conditions.push(eq(syncRuns.status, filters.status));
  if (page.after) conditions.push(lt(syncRuns.id, page.after[0]));
  const rows = await db
    .select(syncRunColumns)
    .from(syncRuns)
    .where(and(...conditions))
    .orderBy(desc(syncRuns.id))
    .limit(fetchSize(page));
  return toPaged(rows, page, (row) => [row.id]);
};

export const findSyncRun = async (db: Database, id: number): Promise<SyncRunDetail | null> => {
  const [row] = await db
    .select({ ...syncRunColumns, report: syncRuns.report })
    .from(syncRuns)
    .where(eq(syncRuns.id, id));
  return row ?? null;
};

const latestRun = async (db: Database, condition: SQL | undefined): Promise<SyncRun | null> => {
  const [row] = await db.select(syncRunColumns).from(syncRuns).where(condition).orderBy(desc(syncRuns.id)).limit(1);
  return row ?? null;
};

export type SyncStatus = {
  lastFullSync: SyncRun | null;
  lastReconcile: SyncRun | null;
  lastSweep: SyncRun | null;
  /** The latest baseline or reconcile that succeeded: the last time the whole tenant was compared. */
  lastSuccessfulFullSync: SyncRun | null;
  lastWebhookAppliedAt: Date | null;
  inbox: { depth: number; oldestPendingAt: Date | null };
  deadLetters: number;
  roleSweep: { value: Record<string, unknown>; updatedAt: Date } | null;
  /** From the latest run that determined whether the tenant has the organizations feature. */
  organizations: { available: boolean | null; notes: string | null; runId: number | null };
};

/** Everything `/v1/sync/status` reports, read concurrently (each query is a small indexed read). */
export const getSyncStatus = async (db: Database): Promise<SyncStatus> => {
  const [lastFullSync, lastReconcile, lastSweep, lastSuccessfulFullSync, organizationsRun, webhooks, roleSweep] =
    await Promise.all([
      latestRun(db, eq(syncRuns.kind, 'baseline')),
      latestRun(db, eq(syncRuns.kind, 'reconcile')),
      latestRun(db, eq(syncRuns.kind, 'sweep')),
      latestRun(db, and(inArray(syncRuns.kind, ['baseline', 'reconcile']), eq(syncRuns.status, 'succeeded'))),
      latestRun(db, isNotNull(syncRuns.organizationsAvailable)),
      db
        .select({
          // Exact and cheap: the partial index on applied deliveries' processed_at answers max() directly.
          lastAppliedAt: sql<Date | null>`(select max(${webhookDeliveries.processedAt}) from ${webhookDeliveries} where ${webhookDeliveries.outcome} = 'applied')`.mapWith(
            webhookDeliveries.processedAt,
          ),
          depth: sql<number>`(select count(*) from ${webhookDeliveries} where ${webhookDeliveries.outcome} is null)`.mapWith(
            Number,
          ),
          oldestPendingAt: sql<Date | null>`(select min(${webhookDeliveries.receivedAt}) from ${webhookDeliveries} where ${webhookDeliveries.outcome} is null)`.mapWith(
            webhookDeliveries.receivedAt,
          ),
          deadLetters: sql<number>`(select count(*) from ${webhookDeliveries} where ${webhookDeliveries.outcome} = 'dead')`.mapWith(
            Number,
          ),
        })
        .from(sql`(select 1) as one`),
      db.select({ value: syncState.value, updatedAt: syncState.updatedAt }).from(syncState).where(eq(syncState.key, 'role_sweep')),
    ]);
  const [counters] = webhooks;
  return {
    lastFullSync,
    lastReconcile,
    lastSweep,
    lastSuccessfulFullSync,
    lastWebhookAppliedAt: counters?.lastAppliedAt ?? null,
    inbox: { depth: counters?.depth ?? 0, oldestPendingAt: counters?.oldestPendingAt ?? null },
    deadLetters: counters?.deadLetters ?? 0,
    roleSweep: roleSweep[0] ?? null,
    organizations: {
      available: organizationsRun?.organizationsAvailable ?? null,
      notes: organizationsRun?.notes ?? null,
      runId: organizationsRun?.id ?? null,
    },
  };
};
