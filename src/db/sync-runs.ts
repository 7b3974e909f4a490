import { and, desc, eq, inArray, sql } from 'drizzle-orm';
import { organizationRoles, organizations, syncRuns, syncSeen, syncState, users } from '../../db/schema.js';
import { rows, type Database } from './client.js';
import { namedRows, textArray } from './prepared.js';

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

/** The sync_runs sequence's last id: a run whose row is written later has a higher one (read outside any snapshot). */
export const lastSyncRunId = async (db: Database): Promise<number> => {
  const [sequence] = await rows<{ last: string | number }>(db, sql`select case when is_called then last_value else 0 end as last from sync_runs_id_seq`);
  return Number(sequence!.last);
};

/** Runs still marked running: after a crash, the next start marks them failed so history stays truthful. */
export const failAbandonedRuns = async (db: Database, kinds: SyncRunKind[], reason: string): Promise<number> => {
  const updated = await db
    .update(syncRuns)
    .set({ status: 'failed', finishedAt: new Date(), error: reason })
    .where(and(eq(syncRuns.status, 'running'), inArray(syncRuns.kind, kinds)))
    .returning({ id: syncRuns.id });
  return updated.length;
};

/**
 * What a crawl's seen set (`sync_seen`) holds: `organization_members` for organizations whose member
 * crawl is complete, `gone_user` for users a member crawl found deleted in Logto. The ids of the lists
 * it crawled are kept apart, in chunks (`recordListProgress`).
 */
export type SeenEntity = 'organization_members' | 'gone_user';

/**
 * Adds ids to the crawl's seen set. With `flush: false` the statement (its own transaction) does not wait
 * for the WAL flush: for marks a crash may lose, because the next run then crawls those again (which
 * writes nothing), so a flush each buys nothing.
 */
export const markSeen = async (
  db: Database,
  runId: number,
  entity: SeenEntity,
  ids: string[],
  options: { flush?: boolean } = {},
): Promise<void> => {
  if (ids.length === 0) return;
  const insert = sql`insert into ${syncSeen} (run_id, entity, id)
      select ${runId}::bigint, ${entity}, t.id from unnest(${sql.param(textArray(ids))}::text[]) as t(id)
      on conflict do nothing`;
  await namedRows(db, options.flush === false ? sql`with seen as (${insert} returning 1) select set_config('synchronous_commit', 'off', true)` : insert);
};

export const listSeen = async (db: Database, runId: number, entity: SeenEntity): Promise<string[]> =>
  (await db.select({ id: syncSeen.id }).from(syncSeen).where(and(eq(syncSeen.runId, runId), eq(syncSeen.entity, entity)))).map(
    (row) => row.id,
  );

const tables = { user: users, organization: organizations, organization_role: organizationRoles } as const;
/** The lists a crawl reads whole, whose stored rows it removes when Logto no longer has them. */
export type ListEntity = keyof typeof tables;

/**
 * Stored ids of `entity` after `after`, in id order: the removal phase compares them with the crawl's
 * seen ids in its own process. One index range a batch, whatever the seen set's size.
 */
export const storedIdsAfter = async (db: Database, entity: ListEntity, after: string | null, limit: number): Promise<string[]> => {
  const table = tables[entity];
  const found = await rows<{ id: string }>(
    db,
    sql`select t.id from ${table} t where ${after === null ? sql`true` : sql`t.id > ${after}`} order by t.id limit ${limit}`,
  );
  return found.map((row) => row.id);
};

export const clearSeen = async (db: Database, runId: number): Promise<void> => {
  await db.delete(syncSeen).where(eq(syncSeen.runId, runId));
};

/** How far one list of a full sync's crawl got: pages applied in order, the total it last saw. */
export type CrawlListPosition = { pages: number; total: number | null; moved: boolean; done: boolean };

/**
 * Where an unfinished full sync's crawl stands, so that the next run continues it instead of starting
 * over. `crawlId` is the run that began the crawl: its id keys the seen set (`sync_seen`).
 */
export type CrawlPosition = {
  crawlId: number;
  startedAt: string;
  lists: Partial<Record<'organization_role' | 'organization' | 'user', CrawlListPosition>>;
};

const crawlPositionKey = 'full-sync:crawl';

export const readCrawlPosition = async (db: Database): Promise<CrawlPosition | null> => {
  const value = await readSyncState<Record<string, unknown>>(db, crawlPositionKey);
  if (!value || typeof value.crawlId !== 'number' || typeof value.startedAt !== 'string' || typeof value.lists !== 'object') return null;
  return value as unknown as CrawlPosition;
};

export const writeCrawlPosition = (db: Database, position: CrawlPosition): Promise<void> =>
  writeSyncState(db, crawlPositionKey, position as unknown as Record<string, unknown>);

/**
 * Where the ids a crawl has seen of its lists are kept: one `sync_state` row per recorded stretch of
 * pages (`<prefix><crawl>:<entity>:<run>:<n>`), its ids as one array. A row per id (`sync_seen`) cost an
 * index entry per user to insert and again to delete at the end: an unchanged reconcile's largest write,
 * left as dead rows until a vacuum.
 */
const seenChunkPrefix = 'full-sync:seen:';

/**
 * Records a stretch of one list's crawl: the ids its pages held, as one chunk, and, if given, the crawl's
 * new position, in one statement (its own transaction) that does not wait for the WAL flush. A crash can
 * lose only the latest of these, and the next run then applies those pages again (which writes nothing),
 * so a flush per stretch buys nothing. `chunk` names the stretch uniquely within the run.
 */
export const recordListProgress = async (
  db: Database,
  crawlId: number,
  entity: ListEntity,
  chunk: string,
  ids: string[],
  position?: CrawlPosition,
): Promise<void> => {
  if (ids.length === 0 && !position) return;
  const value = position === undefined ? null : JSON.stringify(position);
  const idList = textArray(ids);
  await namedRows(
    db,
    sql`
    with seen as (
      insert into ${syncState} (key, value, updated_at)
      select ${`${seenChunkPrefix}${crawlId}:${entity}:${chunk}`}, jsonb_build_object('ids', to_jsonb(${sql.param(idList)}::text[])), now()
      where cardinality(${sql.param(idList)}::text[]) > 0
      on conflict (key) do update set value = excluded.value, updated_at = excluded.updated_at
      returning 1
    ), positioned as (
      insert into ${syncState} (key, value, updated_at)
      select ${crawlPositionKey}, ${value}::jsonb, now() where ${value}::jsonb is not null
      on conflict (key) do update set value = excluded.value, updated_at = excluded.updated_at
      returning 1
    )
    select set_config('synchronous_commit', 'off', true)`);
};

/** The ids a crawl has recorded as seen, by list: what a continuing run starts its seen sets from. */
export const readSeenIds = async (db: Database, crawlId: number): Promise<Record<ListEntity, Set<string>>> => {
  const seen: Record<ListEntity, Set<string>> = { user: new Set(), organization: new Set(), organization_role: new Set() };
  const prefix = `${seenChunkPrefix}${crawlId}:`;
  const found = await rows<{ key: string; ids: string[] }>(
    db,
    sql`select key, value -> 'ids' as ids from ${syncState} where starts_with(key, ${prefix})`,
  );
  for (const { key, ids } of found) {
    const entity = key.slice(prefix.length).split(':')[0] as ListEntity;
    const into = seen[entity];
    if (into) for (const id of ids) into.add(id);
  }
  return seen;
};

/** Forgets a crawl: its position, its seen ids (any crawl's: only one is kept at a time) and its seen set. */
export const clearCrawl = async (db: Database, crawlId: number): Promise<void> => {
  await db.transaction(async (tx) => {
    await tx.delete(syncState).where(sql`${syncState.key} = ${crawlPositionKey} or starts_with(${syncState.key}, ${seenChunkPrefix})`);
    await tx.delete(syncSeen).where(eq(syncSeen.runId, crawlId));
  });
};

export const readSyncState = async <T extends Record<string, unknown>>(db: Database, key: string): Promise<T | null> =>
  ((await db.select().from(syncState).where(eq(syncState.key, key)))[0]?.value as T | undefined) ?? null;

export const writeSyncState = async (db: Database, key: string, value: Record<string, unknown>): Promise<void> => {
  await db
    .insert(syncState)
    .values({ key, value, updatedAt: new Date() })
    .onConflictDoUpdate({ target: syncState.key, set: { value, updatedAt: new Date() } });
};
