import { and, gt, inArray, eq, sql, type SQL } from 'drizzle-orm';
import { accessChanges } from '../../../db/schema.js';
import { rows, type Database } from '../../db/client.js';
import { insertChangesCountingKinds, insertChangesWithEvents } from '../../db/outbox.js';
import { keepsNamedPlans, namedRows, namedShapeRows } from '../../db/prepared.js';
import { transaction, type LastStatement } from '../../db/transaction.js';
import { entityLocks } from './entity-locks.js';
import { metrics } from '../../metrics.js';

export type ChangeSource = 'baseline' | 'webhook' | 'reconcile' | 'sweep' | 'provision';

export type ChangeKind =
  | 'user.created'
  | 'user.updated'
  | 'user.suspended'
  | 'user.unsuspended'
  | 'user.deleted'
  | 'organization.created'
  | 'organization.updated'
  | 'organization.deleted'
  | 'organization_role.created'
  | 'organization_role.updated'
  | 'organization_role.deleted'
  | 'member.added'
  | 'member.removed'
  | 'member_role.granted'
  | 'member_role.revoked';

/**
 * Who is writing and what they saw. `observedAt` is when the snapshot being applied was true in Logto
 * (the time its page was read, or the event's time): a snapshot never overrides a change recorded after it.
 */
export type ChangeContext = {
  source: ChangeSource;
  observedAt: Date;
  actor?: string | null;
  syncRunId?: number | null;
  deliveryId?: number | null;
};

export type ChangeRecord = {
  kind: ChangeKind;
  userId?: string | null;
  organizationId?: string | null;
  organizationRoleId?: string | null;
  details?: Record<string, unknown>;
  /**
   * The context of this change when it differs from the call's: a batch of webhook deliveries applied in
   * one transaction records each change with its own delivery, actor and observation time.
   */
  context?: ChangeContext;
};

/** How many changes of each kind were recorded. */
export type ChangeCounts = Partial<Record<ChangeKind, number>>;

/**
 * What an apply wrote: the changes it recorded, in order, and the rows it wrote. `counted`: changes
 * recorded besides `changes`, only counted by kind, for a caller that asked for totals (`countChanges`).
 */
export type ApplyResult = { changes: ChangeRecord[]; rowsWritten: number; counted?: ChangeCounts };

export const emptyResult = (): ApplyResult => ({ changes: [], rowsWritten: 0 });

export const mergeResults = (target: ApplyResult, source: ApplyResult): ApplyResult => {
  target.changes.push(...source.changes);
  target.rowsWritten += source.rowsWritten;
  if (source.counted) target.counted = addCounts(target.counted ?? {}, source.counted);
  return target;
};

/** `into` with `counts` added (changed in place). */
export const addCounts = (into: ChangeCounts, counts: ChangeCounts): ChangeCounts => {
  for (const [kind, count] of Object.entries(counts) as [ChangeKind, number][]) into[kind] = (into[kind] ?? 0) + count;
  return into;
};

/** Every change an apply recorded: those listed and those only counted. */
export const changeCount = (result: Pick<ApplyResult, 'changes' | 'counted'>): number =>
  result.changes.length + Object.values(result.counted ?? {}).reduce((sum, count) => sum + count, 0);

const insertBatchSize = 5000;

/** A change row's own columns (kind, ids, details), as the change-log inserts read them from JSON. */
const sharedContextRow = (change: ChangeRecord) => ({
  k: change.kind,
  u: change.userId ?? null,
  o: change.organizationId ?? null,
  r: change.organizationRoleId ?? null,
  d: change.details ?? null,
});

const insertIntoChanges = sql`insert into ${accessChanges} (observed_at, kind, source, actor, user_id, organization_id, organization_role_id, details, sync_run_id, delivery_id)`;

/** A call's context as the parameters of the change rows' shared columns (or placeholders for them). */
type ContextValues = { observedAt: unknown; source: unknown; actor: unknown; syncRunId: unknown; deliveryId: unknown };

const contextValues = (context: ChangeContext): ContextValues => ({
  observedAt: context.observedAt.toISOString(),
  source: context.source,
  actor: context.actor ?? null,
  syncRunId: context.syncRunId ?? null,
  deliveryId: context.deliveryId ?? null,
});

/** The select list of change rows whose own columns are `row`'s (`sharedContextRow`) and whose context is the call's, sent once. */
const selectWithSharedContext = (row: SQL, context: ContextValues) =>
  sql`select ${context.observedAt}::timestamptz, ${row}.k, ${context.source}::text, ${context.actor}::text, ${row}.u, ${row}.o, ${row}.r, ${row}.d,
          ${context.syncRunId}::bigint, ${context.deliveryId}::bigint`;

/**
 * Appends the change log rows for `changes`, in their order, as one set-based insert per few thousand
 * rows (a JSON array expanded by `json_to_recordset`: one parameter whatever the count), and in the same
 * transaction their events: the outbox rows of matching subscriptions and the wake-up of live streams
 * (see `insertChangesWithEvents`: the same statement). Returns the new rows' ids, in the order of `changes`.
 */
export const recordChanges = async (db: Database, changes: ChangeRecord[], context: ChangeContext): Promise<number[]> => {
  const ids: number[] = [];
  for (let start = 0; start < changes.length; start += insertBatchSize) {
    const slice = changes.slice(start, start + insertBatchSize);
    // Named (one text whatever the batch): a batch of webhook deliveries records its changes this way.
    const inserted = await namedRows<{ id: string | number }>(db, insertChangesWithEvents(insertWithOwnContexts(slice, context)));
    ids.push(...inserted.map((row) => Number(row.id)));
  }
  countRecorded(changes, context);
  return ids;
};

/**
 * The insert of change rows that may each carry their own context (a batch of deliveries applied
 * together), else the call's; with `where`, a condition on each row (`t`: `t.u` its user) that it must meet.
 * When none carries its own (a page of a crawl), the call's context goes once as parameters and each row
 * carries only what differs: a third of the JSON to build and for the database to parse.
 */
const insertWithOwnContexts = (changes: ChangeRecord[], context: ChangeContext, where?: SQL): SQL => {
  const condition = where === undefined ? sql`` : sql`where ${where}`;
  // Ids in the order given, whatever the plan: with a condition the rows can come out of a semi-join in
  // another order (on PGlite a user's suspension was recorded before its creation).
  if (changes.every((change) => change.context === undefined)) {
    const batch = changes.map((change, index) => ({ ...sharedContextRow(change), n: index }));
    return sql`${insertIntoChanges}
      ${selectWithSharedContext(sql.raw('t'), contextValues(context))}
      from json_to_recordset(${JSON.stringify(batch)}::json) as t(n int, k text, u text, o text, r text, d jsonb)
      ${condition}
      order by t.n`;
  }
  const batch = changes.map((change, index) => {
    const own = change.context ?? context;
    return {
      ...sharedContextRow(change),
      n: index,
      t: own.observedAt.toISOString(),
      s: own.source,
      a: own.actor ?? null,
      sr: own.syncRunId ?? null,
      dl: own.deliveryId ?? null,
    };
  });
  return sql`${insertIntoChanges}
    select t.t, t.k, t.s, t.a, t.u, t.o, t.r, t.d, t.sr, t.dl
    from json_to_recordset(${JSON.stringify(batch)}::json) as t(n int, k text, u text, o text, r text, d jsonb, t timestamptz, s text, a text, sr bigint, dl bigint)
    ${condition}
    order by t.n`;
};

/**
 * Writes users by `upsert` (a statement returning the ids it wrote) and records, in the same statement,
 * those of `changes` whose user it wrote, in their order, with their events: one round trip where the
 * write and its change log took one each. Returns the ids written and the changes recorded. `run` sends
 * the statement (a transaction's `last`, when it is the final one).
 */
export const writeUsersRecordingChanges = async (
  db: Database,
  upsert: SQL,
  changes: ChangeRecord[],
  context: ChangeContext,
  run: <R>(query: SQL) => Promise<R[]> = (query) => namedRows(db, query),
): Promise<{ written: Set<string>; recorded: ChangeRecord[] }> => {
  if (changes.length === 0) {
    // Nothing to record (only `updatedAt` differed): no change rows, and no wake-up of the live streams.
    return { written: new Set((await run<{ id: string }>(upsert)).map((row) => row.id)), recorded: [] };
  }
  const rows = await run<{ id: string | number | null; user_id: string | null }>(
    insertChangesWithEvents(
      insertWithOwnContexts(changes, context, sql`t.u in (select id from written)`),
      sql`written as (${upsert})`,
      sql`select null::bigint, null::text, w.id, null::text, null::text from written w`,
    ),
  );
  const written = new Set<string>();
  for (const row of rows) if (row.id === null && row.user_id !== null) written.add(row.user_id);
  const recorded = changes.filter((change) => change.userId != null && written.has(change.userId));
  countRecorded(recorded, context);
  return { written, recorded };
};

/** Placeholders of the shared context, filled from `contextValues` by `recordWrittenChanges`. */
const contextPlaceholders: ContextValues = {
  observedAt: sql.placeholder('contextObservedAt'),
  source: sql.placeholder('contextSource'),
  actor: sql.placeholder('contextActor'),
  syncRunId: sql.placeholder('contextSyncRunId'),
  deliveryId: sql.placeholder('contextDeliveryId'),
};

/** What a statement of `shape` (see `namedShapeRows`) is built from: its writes and selected change rows, with `values` for their placeholders. */
export type WrittenChangesStatement = { shape: string; writes: () => SQL; selected: () => SQL; values: Record<string, unknown> };

/**
 * Records the change rows `selected` yields (columns `g`, `n`: their order; `k`, `u`, `o`, `r`, `d`: kind,
 * user, organization, role, details) in one statement after the data-modifying CTEs `writes` they select
 * from, with the call's context sent once: a page's writes and their change log then cost one round
 * trip instead of one each. `prior` are changes recorded first, in their order (users the page brings).
 * Returns every change recorded, in order: `prior`, then those `selected` made of the writes; with
 * `countOnly`, those made of the writes are only counted by kind (`counted`), and no row comes back for them.
 * The statement is built once per shape, its values bound as placeholders (`namedShapeRows`).
 */
export const recordWrittenChanges = async (
  db: Database,
  statement: WrittenChangesStatement,
  prior: ChangeRecord[],
  context: ChangeContext,
  countOnly = false,
): Promise<{ changes: ChangeRecord[]; counted?: ChangeCounts }> => {
  const build = () => {
    const insert = sql`${insertIntoChanges}
        ${selectWithSharedContext(sql.raw('c'), contextPlaceholders)}
        from (
          select 0 as g, p.n, p.e->>'k' as k, p.e->>'u' as u, p.e->>'o' as o, p.e->>'r' as r, nullif((p.e->'d')::jsonb, 'null'::jsonb) as d
          from json_array_elements(${sql.placeholder('prior')}::json) with ordinality as p(e, n)
          union all ${statement.selected()}
        ) c
        order by c.g, c.n`;
    return countOnly ? insertChangesCountingKinds(insert, statement.writes()) : insertChangesWithEvents(insert, statement.writes());
  };
  const shared = contextValues(context);
  const values = {
    ...statement.values,
    prior: JSON.stringify(prior.map(sharedContextRow)),
    contextObservedAt: shared.observedAt,
    contextSource: shared.source,
    contextActor: shared.actor,
    contextSyncRunId: shared.syncRunId,
    contextDeliveryId: shared.deliveryId,
  };
  // Named, as below: a page's text is the same every time, and planning it cost more than running a small page.
  const shape = `${statement.shape}:${countOnly ? 'counted' : 'rows'}`;
  if (countOnly) {
    // The prior changes are counted with the rest by the statement: taken out again here.
    const counted: ChangeCounts = {};
    for (const row of await namedShapeRows<{ kind: ChangeKind; n: number }>(db, shape, build, values)) counted[row.kind] = row.n;
    for (const change of prior) counted[change.kind] = (counted[change.kind] ?? 0) - 1;
    for (const kind of Object.keys(counted) as ChangeKind[]) if (!counted[kind]) delete counted[kind];
    countRecorded(prior, context);
    countKinds(counted, context.source);
    return { changes: prior, counted };
  }
  const inserted = await namedShapeRows<{ id: string | number; kind: ChangeKind; user_id: string | null; organization_id: string | null; organization_role_id: string | null }>(
    db,
    shape,
    build,
    values,
  );
  const changes = [
    ...prior,
    ...inserted.slice(prior.length).map(
      (row): ChangeRecord => ({
        kind: row.kind,
        userId: row.user_id,
        organizationId: row.organization_id,
        ...(row.organization_role_id === null ? {} : { organizationRoleId: row.organization_role_id }),
      }),
    ),
  ];
  countRecorded(changes, context);
  return { changes };
};

const countKinds = (counted: ChangeCounts, source: ChangeSource) => {
  for (const [kind, count] of Object.entries(counted) as [ChangeKind, number][]) if (count > 0) metrics.accessChanges.inc({ source, kind }, count);
};

const countRecorded = (changes: ChangeRecord[], context: ChangeContext) => {
  const counted = new Map<string, { source: ChangeSource; kind: ChangeKind; count: number }>();
  for (const change of changes) {
    const source = (change.context ?? context).source;
    const key = `${source}\u0000${change.kind}`;
    const entry = counted.get(key) ?? counted.set(key, { source, kind: change.kind, count: 0 }).get(key)!;
    entry.count += 1;
  }
  for (const { source, kind, count } of counted.values()) metrics.accessChanges.inc({ source, kind }, count);
};

/**
 * Changes of `kinds` recorded after `since`, for the given entity keys: what a snapshot observed at
 * `since` must not undo. Keys are `userId`, `organizationId`, `organizationId:userId` or
 * `organizationId:userId:organizationRoleId` according to `key`.
 */
export const changedSince = async (
  db: Database,
  kinds: ChangeKind[],
  since: Date,
  scope: { organizationId?: string; userIds?: string[]; organizationIds?: string[]; organizationRoleIds?: string[] },
): Promise<ChangeRecord[]> => {
  const lists = [scope.userIds, scope.organizationIds, scope.organizationRoleIds];
  if (lists.some((list) => list !== undefined && list.length === 0)) return [];
  if (scope.userIds) return changedSinceForUsers(db, kinds, since, { ...scope, userIds: scope.userIds });
  const filters = [inArray(accessChanges.kind, kinds), gt(accessChanges.observedAt, since)];
  if (scope.organizationId) filters.push(eq(accessChanges.organizationId, scope.organizationId));
  if (scope.userIds) filters.push(inArray(accessChanges.userId, scope.userIds));
  if (scope.organizationIds)
    filters.push(inArray(accessChanges.organizationId, scope.organizationIds));
  if (scope.organizationRoleIds)
    filters.push(
      inArray(accessChanges.organizationRoleId, scope.organizationRoleIds),
    );
  const found = await db
    .select({
      kind: accessChanges.kind,
      userId: accessChanges.userId,
      organizationId: accessChanges.organizationId,
      organizationRoleId: accessChanges.organizationRoleId,
    })
    .from(accessChanges)
    .where(and(...filters))
    .orderBy(sql`${accessChanges.id}`);
  return found.map((row) => ({ ...row, kind: row.kind as ChangeKind }));
};

const sqlList = (values: string[]) => sql.join(values.map((value) => sql`${value}`), sql`, `);

/**
 * The change rows of one user, as `a`, read through `access_changes_user_idx` alone: a few rows per
 * user. `offset 0` keeps the planner from adding the other filters to the index scan: with an
 * organization among them it combined `access_changes_organization_idx` (BitmapAnd), which reads the
 * organization's whole history for every user probed, quadratic in a large organization's baseline.
 */
export const changesOfUser = (userId: SQL) =>
  sql`(select * from ${accessChanges} where user_id = ${userId} offset 0) a`;

/**
 * `changedSince` for a list of users: one index lookup per user (`access_changes_user_idx`), whatever
 * the planner would make of the other filters. An organization's history grows with every page a
 * baseline applies to it; scanning it for each page would make a large organization quadratic.
 */
const changedSinceForUsers = async (
  db: Database,
  kinds: ChangeKind[],
  since: Date,
  scope: { organizationId?: string; userIds: string[]; organizationIds?: string[]; organizationRoleIds?: string[] },
): Promise<ChangeRecord[]> => {
  const found = await rows<{ kind: string; user_id: string | null; organization_id: string | null; organization_role_id: string | null }>(
    db,
    sql`select c.kind, c.user_id, c.organization_id, c.organization_role_id
      from json_array_elements_text(${JSON.stringify([...new Set(scope.userIds)])}::json) as u(id)
      cross join lateral (
        select a.id, a.kind, a.user_id, a.organization_id, a.organization_role_id from ${changesOfUser(sql`u.id`)}
        where a.observed_at > ${since.toISOString()}::timestamptz and a.kind in (${sqlList(kinds)})
          ${scope.organizationId === undefined ? sql`` : sql`and a.organization_id = ${scope.organizationId}`}
          ${scope.organizationIds === undefined ? sql`` : sql`and a.organization_id in (${sqlList(scope.organizationIds)})`}
          ${scope.organizationRoleIds === undefined ? sql`` : sql`and a.organization_role_id in (${sqlList(scope.organizationRoleIds)})`}
      ) c
      order by c.id`,
  );
  return found.map((row) => ({
    kind: row.kind as ChangeKind,
    userId: row.user_id,
    organizationId: row.organization_id,
    organizationRoleId: row.organization_role_id,
  }));
};

/** Crawls (baseline, reconcile, sweep): the writers of whole pages, each statement once per page. */
const isCrawl = (context: ChangeContext) => context.source === 'baseline' || context.source === 'reconcile' || context.source === 'sweep';

/**
 * How a transaction's named statements are planned. `custom` (the default): for their values each time.
 * `generic`: once per connection, then reused (see `genericPlanSettings`); asked for by a crawl's users
 * page and member page that revokes nothing, whose statements are planned well without their values, and
 * honoured only for crawls on a driver that keeps named statements' plans. Such a statement must not test
 * rows against an array parameter (`x = any($n)` as a filter): only a constant array is hashed.
 */
export type PlanChoice = 'custom' | 'generic';

/**
 * Plans made once per connection and reused: planning the member page write (a dozen CTEs) cost PostgreSQL
 * about a millisecond per page, a tenth of a baseline's statement CPU (`PROBE_STATS`, scale 0.3: its bind
 * 0.73 s of 6.8 s, 0.20 s planned once per connection, its execution unchanged). Without sequential scans:
 * a generic plan is made once, often early in a baseline while the tables are nearly empty and unanalysed,
 * and a sequential scan chosen then would read a whole table on every page afterwards; each table the page
 * statement reads has an index for its lookups.
 */
const genericPlanSettings = sql`set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true)`;
/** Plans made for a statement's values each time (see `transactionSettings`). */
const customPlanSettings = sql`set_config('plan_cache_mode', 'force_custom_plan', true)`;

/**
 * The settings of the transaction every apply function writes in. Crawls (baseline, reconcile, sweep)
 * commit without waiting for the WAL flush: a crash can lose only the last moments of a run that is then
 * marked failed and repaired by the next one, and any later synchronous commit (a webhook's) flushes them
 * anyway. That removes one disk flush per page, which dominates a baseline on small machines.
 */
const transactionSettings = (context: ChangeContext, plans: PlanChoice): SQL =>
  // Planned for their values each time although named (`namedRows` saves the parse): a generic plan made
  // early in a baseline probed a page's removals through an index that reads a whole history per row
  // (at 100,000 users, a quarter of PostgreSQL's CPU by perf, where planning each page cost a twelfth).
  // The same statements apply webhooks and provisioning, where a generic plan could go as wrong.
  // A statement that no value can plan better (the member page write, whose later removals are one range
  // of a partial index per page: see `laterRemovals` in members.ts) may ask for `generic` (see `PlanChoice`).
  isCrawl(context)
    ? // Nor JIT-compiled: a page's statements run once each, and their estimates (a probe per row) pass
      // jit_above_cost on a large tenant, where compiling cost ~50 ms a statement, more than running it.
      sql`set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true), ${
        plans === 'generic' ? genericPlanSettings : customPlanSettings
      }`
    : customPlanSettings;

/**
 * The transaction every apply function writes in (see `transactionSettings`). With `lock`, the entity
 * locks its writes begin with are taken by the statement that makes the settings: a webhook's apply is a
 * handful of round trips, each one a wait in a busy event loop, and this was one of them. On the inbox
 * worker's pipelining connections that statement goes out with BEGIN and `fn`'s first statement, and
 * `last` sends COMMIT behind `fn`'s final write (see `transaction`). `plans`: see `PlanChoice`; on PGlite,
 * which runs every statement unnamed (nothing to reuse a plan from), statements stay planned for their values.
 */
export const applyTransaction = <T>(
  db: Database,
  context: ChangeContext,
  fn: (tx: Database, last: LastStatement) => Promise<T>,
  lock?: { entity: 'user' | 'organization' | 'organization_role'; ids: readonly string[] },
  plans: PlanChoice = 'custom',
): Promise<T> => {
  const settings = transactionSettings(context, plans === 'generic' && keepsNamedPlans(db) ? 'generic' : 'custom');
  return transaction(db, lock ? entityLocks(lock.entity, lock.ids, settings) : sql`select ${settings}`, fn);
};

/**
 * Of `ids` that a deletion found nothing stored for, those without a deletion on record yet. Recording one
 * (a tombstone) keeps a creation observed before the deletion, but processed after it, from resurrecting
 * the entity; recording it once keeps a repeated deletion free of effects.
 */
export const newTombstones = async (
  db: Database,
  kind: 'user.deleted' | 'organization.deleted' | 'organization_role.deleted',
  scope: 'userIds' | 'organizationIds' | 'organizationRoleIds',
  ids: string[],
): Promise<string[]> => {
  if (ids.length === 0) return [];
  const key = scope === 'userIds' ? 'userId' : scope === 'organizationIds' ? 'organizationId' : 'organizationRoleId';
  const recorded = new Set((await changedSince(db, [kind], new Date(0), { [scope]: ids })).map((change) => change[key]));
  return ids.filter((id) => !recorded.has(id));
};
