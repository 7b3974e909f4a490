import { and, desc, eq, inArray, sql } from 'drizzle-orm';
import { organizationRoles, organizations, syncRuns, syncSeen, syncState, users } from '../../db/schema.js';
import { rows, type Database } from './client.js';

export type SyncRunKind = 'baseline' | 'reconcile' | 'sweep';
export type SyncRun = typeof syncRuns.$inferSelect;

export const startSyncRun = async (db: Database, kind: SyncRunKind, trigger: string): Promise<SyncRun> => {
  const [run] = await db.insert(syncRuns).values({ kind, trigger }).returning();
  return run!;
};

export const finishSyncRun = async (
  db: Database,
  id: number,
  outcome: {
    status: 'succeeded' | 'failed';
    counts: Record<string, number>;
    report?: Record<string, unknown>;
    error?: string | null;
    organizationsAvailable?: boolean | null;
    notes?: string | null;
  },
): Promise<SyncRun> => {
  const [run] = await db
    .update(syncRuns)
    .set({
      status: outcome.status,
      finishedAt: new Date(),
      counts: outcome.counts,
      report: outcome.report ?? null,
      error: outcome.error ?? null,
      organizationsAvailable: outcome.organizationsAvailable ?? null,
      notes: outcome.notes ?? null,
    })
    .where(eq(syncRuns.id, id))
    .returning();
  return run!;
};

export const findSyncRun = async (db: Database, id: number): Promise<SyncRun | null> =>
  (await db.select().from(syncRuns).where(eq(syncRuns.id, id)))[0] ?? null;

export const lastSyncRun = async (
  db: Database,
  kinds: SyncRunKind[],
  status?: SyncRun['status'],
): Promise<SyncRun | null> =>
  (
    await db
      .select()
      .from(syncRuns)
      .where(and(inArray(syncRuns.kind, kinds), status ? eq(syncRuns.status, status) : undefined))
      .orderBy(desc(syncRuns.id))
      .limit(1)
  )[0] ?? null;

/** Runs still marked running: after a crash, the next start marks them failed so history stays truthful. */
export const failAbandonedRuns = async (db: Database, kinds: SyncRunKind[], reason: string): Promise<number> => {
  const updated = await db
    .update(syncRuns)
    .set({ status: 'failed', finishedAt: new Date(), error: reason })
    .where(and(eq(syncRuns.status, 'running'), inArray(syncRuns.kind, kinds)))
    .returning({ id: syncRuns.id });
  return updated.length;
};

export type SeenEntity = 'user' | 'organization' | 'organization_role';

export const markSeen = async (db: Database, runId: number, entity: SeenEntity, ids: string[]): Promise<void> => {
  if (ids.length === 0) return;
  await db
    .insert(syncSeen)
    .values(ids.map((id) => ({ runId, entity, id })))
    .onConflictDoNothing();
};

const tables = { user: users, organization: organizations, organization_role: organizationRoles } as const;

/** Stored ids of `entity` that the run's crawl never saw, in batches: the candidates for removal. */
export const unseenIds = async (db: Database, runId: number, entity: SeenEntity, after: string | null, limit: number) => {
  const table = tables[entity];
  const found = await rows<{ id: string }>(
    db,
    sql`select t.id from ${table} t
        where ${after === null ? sql`true` : sql`t.id > ${after}`}
          and not exists (select 1 from ${syncSeen} s where s.run_id = ${runId} and s.entity = ${entity} and s.id = t.id)
        order by t.id limit ${limit}`,
  );
  return found.map((row) => row.id);
};

export const clearSeen = async (db: Database, runId: number): Promise<void> => {
  await db.delete(syncSeen).where(eq(syncSeen.runId, runId));
};

export const readSyncState = async <T extends Record<string, unknown>>(db: Database, key: string): Promise<T | null> =>
  ((await db.select().from(syncState).where(eq(syncState.key, key)))[0]?.value as T | undefined) ?? null;

export const writeSyncState = async (db: Database, key: string, value: Record<string, unknown>): Promise<void> => {
  await db
    .insert(syncState)
    .values({ key, value, updatedAt: new Date() })
    .onConflictDoUpdate({ target: syncState.key, set: { value, updatedAt: new Date() } });
};
