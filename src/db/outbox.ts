import { sql, type SQL } from 'drizzle-orm';
import { PgDialect } from 'drizzle-orm/pg-core';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { rows, type Database } from './client.js';
import { arrayLiteral, quotedLiteral } from './prepared.js';
import { organizationOfEvent, userOfEvent, type EventEntities } from './access-events.js';
import type { AccessChange } from './queries/changes.js';

/**
 * The event outbox (`event_outbox`): a row per (subscription, change), written in the transaction that
 * records the change, then claimed by the event sender of any replica with `FOR UPDATE SKIP LOCKED` under
 * a lease, like the webhook inbox. A row waits while an earlier open row of its subscription is about the
 * same user or organization, which keeps those events in order per subscription.
 */

/** The channel the applying transaction notifies (payload: the largest change id it wrote). */
export const changesChannel = 'access_changes';

export type OutboxRow = {
  id: number;
  subscriptionId: string;
  changeId: number;
  /** The user and organization the event is about: its events are sent in order per subscription. */
  userId: string | null;
  organizationId: string | null;
  status: 'pending' | 'processing' | 'delivered' | 'failed';
  attempts: number;
  /** The serialised body of the first attempt, kept once an attempt failed (retries send the same bytes). */
  payload: string | null;
  lastStatus: number | null;
  lastError: string | null;
  lastAttemptAt: Date | null;
  nextAttemptAt: Date;
  deliveredAt: Date | null;
  replay: boolean;
  createdAt: Date;
};

type RawOutboxRow = {
  id: string | number;
  subscription_id: string;
  change_id: string | number;
  user_id: string | null;
  organization_id: string | null;
  status: OutboxRow['status'];
  attempts: number;
  payload: string | null;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: string | Date | null;
  next_attempt_at: string | Date;
  delivered_at: string | Date | null;
  replay: boolean;
  created_at: string | Date;
};

const date = (value: string | Date | null): Date | null => (value === null ? null : new Date(value));

const toOutboxRow = (row: RawOutboxRow): OutboxRow => ({
  id: Number(row.id),
  subscriptionId: row.subscription_id,
  changeId: Number(row.change_id),
  userId: row.user_id,
  organizationId: row.organization_id,
  status: row.status,
  attempts: row.attempts,
  payload: row.payload,
  lastStatus: row.last_status,
  lastError: row.last_error,
  lastAttemptAt: date(row.last_attempt_at),
  nextAttemptAt: new Date(row.next_attempt_at),
  deliveredAt: date(row.delivered_at),
  replay: row.replay,
  createdAt: new Date(row.created_at),
});

const idArray = (ids: number[]) => `{${ids.join(',')}}`;

/**
 * Change ids are handed out before commit, so a transaction can commit change 134 while the one holding
 * 133 is still running. Each outbox row keeps the ids of the other transactions of this database running
 * as it was written (usually none; read once per statement, and only when a row is written); it is sent only once they are over, so an earlier change about the
 * same entity is visible by then (and goes first) or was rolled back. A transaction left open forever
 * must not hold events back forever: after 30 s a row goes out regardless.
 * Read from `pg_stat_get_activity` itself, not through the `pg_stat_activity` view: rewriting the view
 * (its joins over a function of some thirty columns) cost PostgreSQL milliseconds per reference, and a
 * claim refers to it three times (pgbench on a 50,000-row backlog: a claim's scan 18-32 ms with the
 * view, 8-15 ms without).
 */
const runningTransactions = sql`(select coalesce(array_agg(a.backend_xid::text::bigint), '{}') from pg_stat_get_activity(null) a
  where a.datid = (select oid from pg_database where datname = current_database()) and a.backend_xid is not null and a.pid <> pg_backend_pid())`;

/**
 * The enabled subscriptions, each locked FOR KEY SHARE until the transaction ends: what a foreign key
 * would take per inserted row, taken once per subscription per statement instead. A subscription being
 * deleted is waited for and then left out; its delete, in turn, waits for this transaction and then
 * removes the rows it queued (see `deleteEventSubscription`). Updates of a subscription (its URL, its
 * secret, disabling it) do not conflict with the lock.
 */
const subscriptionsKeptUntilCommit = sql`(select id, start_change_id, kinds from event_subscriptions where enabled for key share)`;

/**
 * Wraps the insert of change rows (`insertChanges`, an `insert … into access_changes` without its
 * `returning`) so that the same statement writes the outbox rows of the enabled subscriptions whose types
 * match and notifies the live streams: one round trip per batch of changes, in the applying transaction.
 * The NOTIFY is delivered at commit, so nothing uncommitted is announced. Without any subscription the
 * outbox insert joins an empty table, and the running transactions are never read. Yields the new change
 * ids in insertion order, with each row's kind, user and role. `writes` are data-modifying CTEs that go first
 * in the same statement (a page's memberships): the change rows can then select from what they returned.
 * `alongside` selects rows of the same columns, id null, that come after the change rows (what the writes
 * returned, when the caller needs it whether or not any change was recorded).
 */
export const insertChangesWithEvents = (insertChanges: SQL, writes?: SQL, alongside?: SQL): SQL => sql`
  ${changesAndTheirEvents(insertChanges, writes)}
  select i.id, i.kind, i.user_id, i.organization_id, i.organization_role_id from inserted i
  cross join ${notified}
  ${alongside === undefined ? sql`order by i.id` : sql`union all ${alongside} order by id nulls last`}`;

/**
 * `insertChangesWithEvents` (the same rows, outbox rows and wake-up) yielding only how many changes of
 * each kind it recorded (`kind`, `n`): for a caller that needs totals, not rows. A baseline records a
 * change per membership and member role, and receiving each one back (~820,000 rows at 100,000 users)
 * to count it cost the sync process more than the statements that wrote them.
 */
export const insertChangesCountingKinds = (insertChanges: SQL, writes?: SQL): SQL => sql`
  ${changesAndTheirEvents(insertChanges, writes)}
  select i.kind, count(*)::int as n from inserted i
  cross join ${notified}
  group by i.kind`;

/** The head both inserts of change rows share: `writes`, the change rows (`inserted`) and their outbox rows. */
const changesAndTheirEvents = (insertChanges: SQL, writes?: SQL): SQL => sql`
  with ${writes === undefined ? sql`` : sql`${writes},`}
  inserted as (${insertChanges} returning id, kind, user_id, organization_id, organization_role_id),
  queued as (
    insert into event_outbox (subscription_id, change_id, waits_for, user_id, organization_id)
    select s.id, c.id, ${runningTransactions}, c.user_id, c.organization_id
    from ${subscriptionsKeptUntilCommit} s
    join inserted c on c.id > s.start_change_id
    where s.kinds is null or c.kind = any(s.kinds)
    order by c.id, s.id
    returning 1
  )`;

/**
 * The wake-up sent at commit: `<last change id recorded>:<outbox rows queued>` (see `parseChangeNotice`).
 * The count lets the event sender sleep through commits that queued nothing for it: without any
 * subscription, every applying commit (some 50 a second under 1,000 webhook deliveries a second) had it
 * run a claim transaction that found nothing, on the pool the receiver and the API share.
 */
const notified = sql`(select pg_notify(${changesChannel},
  coalesce((select max(id) from inserted)::text, '') || ':' || (select count(*) from queued)::text)) as notified`;

/** What a notification on `changesChannel` says (what `notified` sends); `outboxRows` true when it cannot tell. */
export type ChangeNotice = { lastChangeId: number | null; outboxRows: boolean };

/**
 * Reads a notification's payload. One without the count (sent by a replica from before it was added)
 * may have queued outbox rows: it says so, and the sender claims as it used to.
 */
export const parseChangeNotice = (payload: string): ChangeNotice => {
  const [idText = '', queuedText] = payload.split(':');
  const id = idText === '' ? Number.NaN : Number(idText);
  return { lastChangeId: Number.isSafeInteger(id) ? id : null, outboxRows: queuedText === undefined || queuedText !== '0' };
};

/** What sending a claimed row needs of its subscription (null when the subscription is gone). */
export type ClaimedSubscription = { url: string; secret: string; previousSecret: string | null; previousSecretExpiresAt: Date | null };

/**
 * A claimed row: what sending it needs (not the row's bookkeeping, which the sender never reads: its
 * dates and the transactions it waited for, parsed for every claimed row, were a good part of a claim's
 * cost in the sender), when it was attempted before this claim (restored if it is handed back unsent),
 * its subscription, and its change. The change comes with one row of the claim per change among those
 * without a body yet (the other subscriptions' rows of that change share the body built from it), and
 * never with a retry, which resends its body.
 */
export type ClaimedOutboxRow = Pick<OutboxRow, 'id' | 'subscriptionId' | 'changeId' | 'userId' | 'organizationId' | 'attempts' | 'payload'> & {
  previousAttemptAt: Date | null;
  subscription: ClaimedSubscription | null;
  change: AccessChange | null;
  /** With the change: the current fields of the entities it names, as its event body shows them. */
  entities: EventEntities;
};

/**
 * An open row (`alias`): pending or being sent. `open` is what the open-row indexes are partial on; the
 * status test says the same for the planner's estimate. Neither column has statistics (0004, 0008), and
 * without them a boolean counts as half the table, which would have the backlog gauge and the frontier
 * scan the whole delivered history instead of the open-row indexes; two values of a text column count
 * as about 1 %, as before the column existed.
 */
const isOpen = (alias: SQL) => sql`${alias}.open and ${alias}.status in ('pending', 'processing')`;

/** Whether the transactions a row (`alias`) waits for are over (or it waited long enough). */
const clearOfWriters = (alias: SQL) => sql`(${alias}.waits_for is null or cardinality(${alias}.waits_for) = 0
  or ${alias}.created_at < now() - interval '30 seconds' or not (${alias}.waits_for && ${runningTransactions}))`;

/** A row a sender may claim now (`alias`): open, not held under a live lease, due, clear of its writers. */
const claimable = (alias: SQL) => sql`(${alias}.status = 'pending' or (${alias}.status = 'processing' and ${alias}.lease_until < now()))
  and ${alias}.next_attempt_at <= now() and ${clearOfWriters(alias)}`;

/**
 * Earlier open rows of the subscription about the same user or organization as `r`, as a condition on
 * `e` (one of them): the rows that must be settled before `r` is sent.
 */
const earlierAboutSameEntity = (entity: 'user_id' | 'organization_id') =>
  sql`e.subscription_id = r.subscription_id and e.${sql.raw(entity)} = r.${sql.raw(entity)} and e.change_id < r.change_id
      and ${isOpen(sql`e`)}`;

/**
 * Whether an earlier open row of the subscription about the same user or organization as `r` cannot be
 * claimed now, as a probe of the open-row index per candidate row. Written as a scalar subquery, not as
 * `not exists`: the planner turns that into an anti join that reads the whole backlog once per claim
 * (milliseconds per thousand open rows, so a growing backlog slows the claims that would shrink it).
 */
const heldBack = (entity: 'user_id' | 'organization_id') =>
  sql`coalesce((select true from event_outbox e where ${earlierAboutSameEntity(entity)} and not (${claimable(sql`e`)}) limit 1), false)`;

/**
 * `heldBack` negated, probed only for a row about such an entity: most events are about a user or an
 * organization, not both, and a probe by a null id, which finds nothing, still cost a subplan run per
 * candidate row.
 */
const notHeldBack = (entity: 'user_id' | 'organization_id') => sql`(r.${sql.raw(entity)} is null or not ${heldBack(entity)})`;

/**
 * Due, clear of the transactions it waits for, and no open row of the subscription about the same user or
 * organization comes from an earlier change (`r` is the row): sendable on its own.
 */
const inTurn = sql`r.next_attempt_at <= now() and ${clearOfWriters(sql`r`)}
  and not exists (select 1 from event_outbox e where ${earlierAboutSameEntity('user_id')})
  and not exists (select 1 from event_outbox e where ${earlierAboutSameEntity('organization_id')})`;

/**
 * Where the sender's change frontier starts: below the oldest open row, or at the newest change when
 * nothing is open (what came before was sent by an earlier sender).
 */
export const outboxFrontierStart = async (db: Database): Promise<number> => {
  const [row] = await rows<{ start: string | number }>(
    db,
    sql`select coalesce((select min(change_id) - 1 from event_outbox o where ${isOpen(sql`o`)}),
                        (select max(id) from access_changes), 0) as start`,
  );
  return Number(row!.start);
};

/**
 * Rows scanned per claim beyond the rows wanted: room for the rows that turn out to wait (behind a row
 * another sender holds, or beyond the limit). Each one scanned is locked and probed, so it is kept in
 * proportion to the claim.
 */
const claimScanSlack = (limit: number) => Math.min(256, Math.ceil(limit / 4) + 16);

/**
 * Claims up to `limit` rows of enabled subscriptions in chains: a row is claimed when every earlier open
 * row of its subscription about the same user or organization is claimed by the same call, so the sender
 * can send a chain in order, one after the other, instead of one row per entity per claim. Rows are
 * scanned in due order on the ready index (not sorted as a whole backlog), locked with SKIP LOCKED; those
 * behind a row that is not claimed (being sent, waiting for a retry, locked by another sender, beyond the
 * limit, or itself behind such a row about its other entity) are left alone. Each claim counts as an
 * attempt; a claim whose lease runs out (its sender died) is claimed again. Rows come back in change order.
 */
export const claimOutbox = async (db: Database, limit: number, leaseMs: number, upToChangeId: number): Promise<ClaimedOutboxRow[]> =>
  (await claimOutboxRows(db, limit, leaseMs, { upTo: upToChangeId })).rows;

/**
 * `claimOutbox` for a sender that keeps a change frontier (see `createChangeFrontier`): only changes up to
 * `frontier`, extended in the same round trip over the change ids that follow it without a gap (each of
 * them is committed, so none before it can still appear). Returns how far the claim reached, and whether a
 * change beyond a gap was seen: then the frontier's own gap watch decides when to step over the gap.
 */
export const claimOutboxFromFrontier = async (
  db: Database,
  limit: number,
  leaseMs: number,
  frontier: number,
): Promise<{ rows: ClaimedOutboxRow[]; reached: number; gap: boolean }> => claimOutboxRows(db, limit, leaseMs, { extendFrom: frontier });

/** The ids scanned past a frontier per claim at the most (the next claim goes on from there). */
const frontierStep = 5000;

/** A statement prepared once per connection by name (`types`: its parameters' types, as PREPARE lists them). */
type PreparedText = { name: string; types: string; text: string };

/** Named after its text, so that a changed text is prepared afresh on connections that hold the old one. */
const preparedText = (prefix: string, types: string, text: string): PreparedText => ({
  name: `las_${prefix}_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`,
  types,
  text,
});

/**
 * The claim's scan of candidate rows (`$1`: how many at the most). Its text is the same for every claim,
 * so it is prepared once per connection: parsing and planning it (a dozen subqueries) cost PostgreSQL a few
 * milliseconds per claim, more than running it. Its plan cannot drift to a sort of the backlog: the claim's
 * transaction rules sorts and bitmap scans out before the first execution plans it, as for every later
 * one, and an ANALYZE of the outbox (see `refreshOutboxStatistics`) makes PostgreSQL plan it again.
 */
let claimCandidatesText: PreparedText | undefined;
const claimCandidates = (): PreparedText => {
  claimCandidatesText ??= preparedText('claim', 'int', sqlText(sql`with candidates as materialized (
            select r.id, r.subscription_id, r.user_id, r.organization_id, r.change_id
            from event_outbox r
            where ${isOpen(sql`r`)} and ${claimable(sql`r`)} and r.change_id <= current_setting('las.claim_up_to')::bigint
              and r.subscription_id in (select id from event_subscriptions where enabled)
              and ${notHeldBack('user_id')} and ${notHeldBack('organization_id')}
            order by r.next_attempt_at, r.id
            limit $1
            for update of r skip locked
          )
          -- Earlier open rows about the same user and organization, counted on the open-row indexes.
          select r.*,
                 case when r.user_id is null then 0
                      else (select count(*) from event_outbox e where ${earlierAboutSameEntity('user_id')}) end as users_before,
                 case when r.organization_id is null then 0
                      else (select count(*) from event_outbox e where ${earlierAboutSameEntity('organization_id')}) end as organizations_before
          from candidates r`));
  return claimCandidatesText;
};

/**
 * How far the change ids run on without a gap after a frontier (`$1`), kept in a setting of the claim's
 * transaction for its scan: the n-th id after the frontier is frontier + n exactly while none is missing.
 * Prepared once per connection, like the scan: as text with the frontier written in, it was parsed and
 * planned for every claim.
 */
let frontierExtensionText: PreparedText | undefined;
const frontierExtension = (): PreparedText => {
  if (!frontierExtensionText) {
    const text = `select set_config('las.claim_up_to', f.reached::text, true), f.reached, f.gap from (
           select coalesce(max(n.id) filter (where n.id = $1 + n.rank), $1) as reached,
                  coalesce(bool_or(n.id <> $1 + n.rank), false) as gap
           from (select ids.id, row_number() over (order by ids.id) as rank
                 from (select id from access_changes where id > $1 order by id limit ${frontierStep}) ids) n) f`;
    frontierExtensionText = preparedText('frontier', 'bigint', text);
  }
  return frontierExtensionText;
};

/**
 * The claim's update of the rows chosen (`$1`: their ids) and its read of what sending them needs. Its text
 * is the same for every claim with the same lease, so it is prepared once per connection like the scan:
 * sent as text with the ids written in, it was parsed and planned anew for every claim.
 */
const claimChosenTexts = new Map<number, PreparedText>();
const claimChosen = (leaseMs: number): PreparedText => {
  let prepared = claimChosenTexts.get(leaseMs);
  if (!prepared) {
    const text = sqlText(sql`with previous as (select id, last_attempt_at from event_outbox where id = any($1)),
          claimed as (
            update event_outbox o
            set status = 'processing', attempts = o.attempts + 1,
                lease_until = now() + make_interval(secs => ${sql.raw(String(leaseMs / 1000))}), last_attempt_at = now()
            from previous p
            where o.id = p.id
            returning o.id, o.subscription_id, o.change_id, o.user_id, o.organization_id, o.attempts, o.payload,
                      p.last_attempt_at as previous_attempt_at
          )
          -- What sending needs, read in the same round trip: the subscription's address and secrets, and
          -- the change of a row never sent (a retry resends the body it kept) with the current fields of
          -- the user, organization and role it names, which its body shows (read here rather than by a
          -- query per claim afterwards: a round trip, and a statement parsed and planned, fewer per claim).
          -- Each is looked up per row (lateral, kept from being flattened by offset 0): as a join, a change
          -- log of some ten thousand rows was read whole into a hash per claim.
          -- The change and its entities come as one JSON array, on the rows that carry a change only: as
          -- columns of their own, every claimed row came with some forty, mostly null, and the driver built
          -- each row as an object of that many properties, past what V8 keeps in fast form (~3 KB a row,
          -- the largest share of the bytes the sender allocated per delivery).
          select k.id, k.subscription_id, k.change_id, k.user_id, k.organization_id, k.attempts, k.payload, k.previous_attempt_at,
                 s.url as subscription_url, s.secret as subscription_secret,
                 s.previous_secret as subscription_previous_secret,
                 s.previous_secret_expires_at as subscription_previous_secret_expires_at,
                 case when c.id is null then null else json_build_array(
                   c.id, c.at, c.observed_at, c.kind, c.source, c.actor, c.user_id, c.organization_id, c.organization_role_id,
                   c.details, c.sync_run_id, c.delivery_id,
                   u.id, u.username, u.primary_email, u.primary_phone, u.name, u.avatar, u.is_suspended, u.custom_data, u.profile,
                   u.application_id, u.last_sign_in_at, u.created_at, u.updated_at,
                   g.id, g.name, g.description, g.custom_data, g.is_mfa_required, g.created_at,
                   ro.id, ro.name, ro.description, ro.type) end as carried
          from (
            -- The first row of each change without a body carries the change (see ClaimedOutboxRow).
            select *, payload is null and id = min(id) over (partition by change_id, payload is null) as carries_change from claimed
          ) k
          left join event_subscriptions s on s.id = k.subscription_id
          left join lateral (select * from access_changes c where c.id = k.change_id and k.carries_change offset 0) c on true
          left join lateral (select u.id, u.username, u.primary_email, u.primary_phone, u.name, u.avatar, u.is_suspended, u.custom_data, u.profile,
                                    u.application_id, u.last_sign_in_at, u.created_at, u.updated_at
                             from users u where u.id = c.user_id offset 0) u on true
          left join lateral (select g.id, g.name, g.description, g.custom_data, g.is_mfa_required, g.created_at
                             from organizations g where g.id = c.organization_id offset 0) g on true
          left join lateral (select ro.id, ro.name, ro.description, ro.type
                             from organization_roles ro where ro.id = c.organization_role_id offset 0) ro on true`);
    prepared = preparedText('claimed', 'bigint[]', text);
    claimChosenTexts.set(leaseMs, prepared);
  }
  return prepared;
};

const claimOutboxRows = async (
  db: Database,
  limit: number,
  leaseMs: number,
  bound: { upTo: number } | { extendFrom: number },
): Promise<{ rows: ClaimedOutboxRow[]; reached: number; gap: boolean }> => {
  const start = 'upTo' in bound ? bound.upTo : bound.extendFrom;
  if (limit <= 0) return { rows: [], reached: start, gap: false };
  for (const value of [limit, leaseMs, start]) if (!Number.isSafeInteger(value)) throw new Error('claimOutbox: integer arguments expected');
  // The bound is kept in a setting of the transaction, which the scan reads (see `frontierExtension`).
  const frontierQuery: Statement =
    'upTo' in bound
      ? `select set_config('las.claim_up_to', '${start}', true), ${start}::bigint as reached, false as gap`
      : { prepared: frontierExtension(), args: [start] };
  // The scan must walk the ready index in due order and stop at the limit, probing only the rows it
  // keeps. Planned on statistics from before a burst (or none yet), PostgreSQL may instead sort the
  // whole backlog, probing every open row first: hundreds of milliseconds per claim at 50,000 open rows,
  // growing with the backlog the claims should shrink. Sorts and bitmap scans are ruled out for this
  // transaction, whatever the statistics say. The planner prices that scan as if it might walk the whole
  // backlog, and past JIT's thresholds (a few tens of thousands of open rows) it compiled the claim:
  // over a second per claim for a scan that takes milliseconds, so JIT is off too. The update finds the
  // chosen rows by primary key with sequential scans off: bitmap scans being off, a sequential scan was
  // the planner's only other way to a list of ids, and it read the whole outbox, delivered history
  // included, twice per claim until the table held tens of thousands of rows. The claim also
  // commits without waiting for the WAL flush, as the settlement does (see `settleAttempts`).
  const settings = ['enable_sort', 'enable_bitmapscan', 'enable_seqscan', 'jit', 'synchronous_commit'];
  const claimQuery = (chosen: number[]): Statement => ({ prepared: claimChosen(leaseMs), args: [chosen] });

  let reached = start;
  let gap = false;
  const claimed = await inOneTransaction(db, settings, async (run) => {
    const [frontierRows, candidates] = await run([frontierQuery, { prepared: claimCandidates(), args: [limit + claimScanSlack(limit)] }], true);
    const [frontierRow] = frontierRows as { reached: string | number; gap: boolean }[];
    reached = Number(frontierRow!.reached);
    gap = frontierRow!.gap;
    const chosen = chooseInChainOrder(candidates as CandidateRow[], limit);
    if (chosen.length === 0) return [];
    return (await run([claimQuery(chosen)], false))[0] as RawClaimedRow[];
  });
  return { rows: claimed.map(toClaimedOutboxRow).sort((a, b) => a.changeId - b.changeId || a.id - b.id), reached, gap };
};

type CandidateRow = {
  id: string | number;
  subscription_id: string;
  user_id: string | null;
  organization_id: string | null;
  change_id: string | number;
  users_before: string | number;
  organizations_before: string | number;
};

/**
 * In change order, a row goes when every earlier open row about its user and its organization went
 * before it in this claim; one that stays behind holds back every later row about either of its
 * entities, transitively (a count can only fall short from then on). Returns the ids chosen.
 */
const chooseInChainOrder = (candidates: CandidateRow[], limit: number): number[] => {
  const claimedBefore = new Map<string, number>();
  const chosen: number[] = [];
  const keysOf = (row: CandidateRow): [string | null, string | null] => [
    row.user_id === null ? null : `${row.subscription_id}\u0000user\u0000${row.user_id}`,
    row.organization_id === null ? null : `${row.subscription_id}\u0000organization\u0000${row.organization_id}`,
  ];
  for (const row of [...candidates].sort((a, b) => Number(a.change_id) - Number(b.change_id) || Number(a.id) - Number(b.id))) {
    if (chosen.length >= limit) break;
    const [userKey, organizationKey] = keysOf(row);
    const followsItsChains =
      (userKey === null || (claimedBefore.get(userKey) ?? 0) === Number(row.users_before)) &&
      (organizationKey === null || (claimedBefore.get(organizationKey) ?? 0) === Number(row.organizations_before));
    if (!followsItsChains) continue;
    chosen.push(Number(row.id));
    for (const key of [userKey, organizationKey]) if (key !== null) claimedBefore.set(key, (claimedBefore.get(key) ?? 0) + 1);
  }
  return chosen;
};

type RawClaimedRow = Pick<RawOutboxRow, 'id' | 'subscription_id' | 'change_id' | 'user_id' | 'organization_id' | 'attempts' | 'payload'> & {
  previous_attempt_at: string | Date | null;
  subscription_url: string | null;
  subscription_secret: string | null;
  subscription_previous_secret: string | null;
  subscription_previous_secret_expires_at: string | Date | null;
  /** The change and its entities, in the order of the claim's json_build_array (timestamps as ISO text). */
  carried: Carried | string | null;
};

type Json = Record<string, unknown>;
type Carried = [
  changeId: number, at: string, observedAt: string, kind: string, source: string, actor: string | null,
  userId: string | null, organizationId: string | null, organizationRoleId: string | null,
  details: Json | null, syncRunId: number | null, deliveryId: number | null,
  userRowId: string | null, username: string | null, primaryEmail: string | null, primaryPhone: string | null,
  name: string | null, avatar: string | null, isSuspended: boolean | null, customData: Json | null, profile: Json | null,
  applicationId: string | null, lastSignInAt: string | null, createdAt: string | null, updatedAt: string | null,
  organizationRowId: string | null, organizationName: string | null, organizationDescription: string | null,
  organizationCustomData: Json | null, isMfaRequired: boolean | null, organizationCreatedAt: string | null,
  roleRowId: string | null, roleName: string | null, roleDescription: string | null, roleType: string | null,
];

const entitiesOf = (carried: Carried): EventEntities => {
  const [, , , , , , , , , , , , userRowId, username, primaryEmail, primaryPhone, name, avatar, isSuspended, customData, profile,
    applicationId, lastSignInAt, createdAt, updatedAt, organizationRowId, organizationName, organizationDescription,
    organizationCustomData, isMfaRequired, organizationCreatedAt, roleRowId, roleName, roleDescription, roleType] = carried;
  return {
    user:
      userRowId === null
        ? undefined
        : userOfEvent({
            id: userRowId,
            username,
            primaryEmail,
            primaryPhone,
            name,
            avatar,
            isSuspended: isSuspended!,
            customData: customData ?? {},
            profile: profile ?? {},
            applicationId,
            lastSignInAt: lastSignInAt === null ? null : new Date(lastSignInAt),
            createdAt: new Date(createdAt!),
            updatedAt: new Date(updatedAt!),
          }),
    organization:
      organizationRowId === null
        ? undefined
        : organizationOfEvent({
            id: organizationRowId,
            name: organizationName!,
            description: organizationDescription,
            customData: organizationCustomData ?? {},
            isMfaRequired: isMfaRequired!,
            createdAt: new Date(organizationCreatedAt!),
          }),
    organizationRole: roleRowId === null ? undefined : { id: roleRowId, name: roleName, description: roleDescription, type: roleType },
  };
};

const changeOf = (carried: Carried): AccessChange => {
  const [id, at, observedAt, kind, source, actor, userId, organizationId, organizationRoleId, details, syncRunId, deliveryId] = carried;
  return {
    id: Number(id),
    at: new Date(at),
    observedAt: new Date(observedAt),
    kind,
    source,
    actor,
    userId,
    organizationId,
    organizationRoleId,
    details,
    syncRunId: syncRunId === null ? null : Number(syncRunId),
    deliveryId: deliveryId === null ? null : Number(deliveryId),
  };
};

const toClaimedOutboxRow = (row: RawClaimedRow): ClaimedOutboxRow => {
  const carried = typeof row.carried === 'string' ? (JSON.parse(row.carried) as Carried) : row.carried;
  return {
    id: Number(row.id),
    subscriptionId: row.subscription_id,
    changeId: Number(row.change_id),
    userId: row.user_id,
    organizationId: row.organization_id,
    attempts: row.attempts,
    payload: row.payload,
    previousAttemptAt: date(row.previous_attempt_at),
    subscription:
      row.subscription_url === null
        ? null
        : {
            url: row.subscription_url,
            secret: row.subscription_secret!,
            previousSecret: row.subscription_previous_secret,
            previousSecretExpiresAt: date(row.subscription_previous_secret_expires_at),
          },
    change: carried === null ? null : changeOf(carried),
    entities: carried === null ? {} : entitiesOf(carried),
  };
};

const dialect = new PgDialect();

/** A statement's text with nothing bound: the claim's values are integers it checked, written into the text. */
const sqlText = (query: SQL): string => {
  const built = dialect.sqlToQuery(query);
  if (built.params.length > 0) throw new Error('a statement sent as text must not bind values');
  return built.sql;
};


/** A statement's text, or the execution of a prepared one with integer arguments. */
type Statement = string | { prepared: PreparedText; args: (number | number[])[] };

/** An argument of a prepared statement as written into its EXECUTE (or its text): integers and arrays of integers only. */
const argumentText = (arg: number | number[]): string => (Array.isArray(arg) ? `'${idArray(arg.map(Math.trunc))}'` : String(Math.trunc(arg)));

/**
 * Runs statements in the transaction: with `first`, after its begin; otherwise before its commit; with
 * 'whole', as the whole transaction, begin to commit in one message. Rows per statement.
 */
type Run = (statements: Statement[], first: boolean | 'whole') => Promise<unknown[][]>;

/** The prepared statements of each pooled connection, by name. */
const preparedOn = new WeakMap<pg.PoolClient, Set<string>>();

/** The text of a statement with its arguments written in (integers only), where nothing is prepared. */
const inlined = (statement: Statement): string =>
  typeof statement === 'string' ? statement : statement.prepared.text.replace(/\$(\d+)/g, (_, index: string) => argumentText(statement.args[Number(index) - 1]!));

/**
 * Runs `body` in a transaction with `settings` off for it, in as few round trips as the driver allows.
 * On PostgreSQL the first statements travel in the same message as the transaction's begin and the last
 * with its commit, through the simple query protocol, which takes several statements without bound
 * values: a claim is two round trips instead of six (frontier, begin, settings, scan, update, commit),
 * each of which woke PostgreSQL and the sender on a busy machine. Elsewhere (PGlite), one statement at a
 * time in a drizzle transaction.
 */
const inOneTransaction = async <T>(db: Database, settings: string[], body: (run: Run) => Promise<T[]>): Promise<T[]> => {
  const pool = (db as { $client?: unknown }).$client;
  if (pool instanceof pg.Pool) {
    const client = await pool.connect();
    let open = false;
    let broken: Error | undefined;
    try {
      const results = (result: pg.QueryResult | pg.QueryResult[]) => (Array.isArray(result) ? result : [result]).map((each) => each.rows);
      const known = preparedOn.get(client) ?? new Set<string>();
      // Statements prepared in this message (before the begin: a PREPARE outlives a rollback, and the name
      // is known to this connection only once the message went through).
      const preparing: PreparedText[] = [];
      const textOf = (statement: Statement): string => {
        if (typeof statement === 'string') return statement;
        const { prepared, args } = statement;
        if (!known.has(prepared.name) && !preparing.includes(prepared)) preparing.push(prepared);
        return `execute ${prepared.name}(${args.map(argumentText).join(', ')})`;
      };
      const send = async (texts: string[]) => {
        const preparations = preparing.map(({ name, types, text }) => `prepare ${name}(${types}) as ${text}`);
        try {
          return results(await client.query([...preparations, ...texts].join(';\n'))).slice(preparations.length);
        } catch (error) {
          // Whether the PREPARE ran before the failure is unknown: the connection is not used again.
          if (preparations.length > 0) broken = error as Error;
          throw error;
        } finally {
          if (!broken) for (const { name } of preparing.splice(0)) known.add(name);
          preparedOn.set(client, known);
        }
      };
      const run: Run = async (statements, first) => {
        const texts = statements.map(textOf);
        if (first === 'whole') {
          // Open until the message went through: a statement that fails leaves the transaction aborted, to be rolled back.
          open = true;
          const all = await send(['begin', ...settings.map((name) => `set local ${name} = off`), ...texts, 'commit']);
          open = false;
          return all.slice(all.length - 1 - statements.length, all.length - 1);
        }
        if (first) {
          open = true;
          const all = await send(['begin', ...settings.map((name) => `set local ${name} = off`), ...texts]);
          return all.slice(all.length - statements.length);
        }
        const all = await send([...texts, 'commit']);
        open = false;
        return all.slice(0, statements.length);
      };
      const result = await body(run);
      if (open) {
        await client.query('commit');
        open = false;
      }
      return result;
    } catch (error) {
      if (open) await client.query('rollback').catch((rollbackError: unknown) => (broken = rollbackError as Error));
      throw error;
    } finally {
      client.release(broken);
    }
  }
  return db.transaction(async (tx) => {
    await tx.execute(sql.raw(`select ${settings.map((name) => `set_config('${name}', 'off', true)`).join(', ')}`));
    return body(async (statements) => {
      const all: unknown[][] = [];
      for (const statement of statements) all.push(await rows<unknown>(tx, sql.raw(inlined(statement))));
      return all;
    });
  });
};

export type OutboxClaim = Pick<OutboxRow, 'id' | 'attempts'>;

export const extendOutboxLeases = async (db: Database, claims: OutboxClaim[], leaseMs: number): Promise<void> => {
  if (claims.length === 0) return;
  await db.execute(sql`
    update event_outbox set lease_until = now() + make_interval(secs => ${leaseMs / 1000})
    where status = 'processing' and id = any(${idArray(claims.map((claim) => claim.id))}::bigint[])`);
};

export type AttemptResult = {
  claim: OutboxClaim;
  subscriptionId: string;
  /**
   * The serialised body that was sent, to keep for the retries; null when delivered (nothing resends it,
   * and not writing it back spares the settlement most of its bytes).
   */
  payload: string | null;
  /** HTTP status of the answer, null when none came (timeout, refused, blocked address). */
  status: number | null;
  error: string | null;
  /** Null: delivered (or given up when `ok` is false); otherwise the wait before the next attempt. */
  retryInMs: number | null;
  ok: boolean;
};

/** The result of an attempt its subscriber answered with a 2xx `status`: delivered, its body not kept. */
export const deliveredAttempt = (row: Pick<ClaimedOutboxRow, 'id' | 'attempts' | 'subscriptionId'>, status: number): AttemptResult => ({
  claim: { id: row.id, attempts: row.attempts },
  subscriptionId: row.subscriptionId,
  payload: null,
  status,
  error: null,
  ok: true,
  retryInMs: null,
});

/**
 * A claimed row handed back unsent (an earlier event of its chain was not delivered): pending again as
 * it was before the claim, which did not count as an attempt.
 */
export type Release = { release: OutboxClaim & { previousAttemptAt: Date | null } };

/**
 * Records the outcome of sent attempts and the rows handed back, in one statement, only for claims still
 * held (a sender whose lease was taken over cannot settle), and keeps each subscription's failure streak:
 * a success ends it, a failure starts it if none is running. The results go as one array per column,
 * not as a VALUES list: planning a list of ten typed columns per row cost PostgreSQL more than the update
 * itself. Not a prepared statement: a plan cached while the outbox was small would keep scanning the
 * whole table once it has grown.
 * The rows are found by primary key, never by reading the table: the planner sees no statistics on
 * `status`, so it took the claimed rows for a handful and read the whole outbox, delivered history
 * included, for every settlement until the table passed some 30,000 rows (and with the key alone, up to
 * several thousand). So the statement runs in a transaction of its own with sequential scans off, sent
 * with its begin and commit in one message (its values written in: that protocol binds none). The
 * transaction commits without waiting for the WAL flush: losing one in a crash only makes a row be sent
 * again, which at-least-once delivery allows (the `webhook-id` lets receivers drop the repeat); the
 * changes and their outbox rows are still committed durably by the apply functions. The flush was the
 * largest part of a settlement's round trip, which the sender's slots wait for.
 * The statuses the rows must still have are a column of the values, joined, not a condition on the table
 * alone: estimated without statistics as one row in two hundred, such a condition made the planner
 * compare every result with every row found (65,000 comparisons for a group of 256).
 */
export const settleAttempts = async (db: Database, results: (AttemptResult | Release)[]): Promise<void> => {
  if (results.length === 0) return;
  const ids = results.map((result) => ('release' in result ? result.release.id : result.claim.id));
  const column = <T extends string | number | boolean | null>(release: (entry: Release['release']) => T, attempt: (entry: AttemptResult) => T) =>
    arrayLiteral(results.map((result) => ('release' in result ? release(result.release) : attempt(result))));
  const settlement = sql`
    with v as materialized (
      select *, 'processing'::text as claimed_status from unnest(
        ${column((release) => release.id, (result) => result.claim.id)}::bigint[],
        ${column((release) => release.attempts, (result) => result.claim.attempts)}::int[],
        ${column(() => null, (result) => result.subscriptionId)}::text[],
        ${column(() => null, (result) => result.payload)}::text[],
        ${column(() => null, (result) => result.status)}::int[],
        ${column(() => null, (result) => result.error)}::text[],
        ${column(() => false, (result) => result.ok)}::boolean[],
        ${column(() => null, (result) => result.retryInMs)}::float8[],
        ${column(() => true, () => false)}::boolean[],
        ${column((release) => release.previousAttemptAt?.toISOString() ?? null, () => null)}::timestamptz[]
      ) as v(id, attempts, subscription_id, payload, status, error, ok, retry_ms, release, previous_attempt_at)
    ),
    settled as (
      update event_outbox o set
        status = case when v.release then 'pending' when v.ok then 'delivered' when v.retry_ms is null then 'failed' else 'pending' end,
        attempts = case when v.release then o.attempts - 1 else o.attempts end,
        payload = coalesce(o.payload, v.payload),
        last_status = case when v.release then o.last_status else v.status end,
        last_error = case when v.release then o.last_error else v.error end,
        last_attempt_at = case when v.release then v.previous_attempt_at else o.last_attempt_at end,
        lease_until = null,
        delivered_at = case when v.ok then now() else null end,
        next_attempt_at = case when v.retry_ms is null then o.next_attempt_at else now() + make_interval(secs => v.retry_ms / 1000) end
      from v
      where o.id = any(${idArray(ids)}::bigint[]) and o.id = v.id and o.attempts = v.attempts and o.status = v.claimed_status
      returning 1
    ),
    streaks as (
      select subscription_id, bool_or(ok) as succeeded from v where not v.release group by subscription_id
    )
    update event_subscriptions s
    set failing_since = case when t.succeeded then null else now() end
    from streaks t
    where s.id = t.subscription_id and (case when t.succeeded then s.failing_since is not null else s.failing_since is null end)`;
  await inOneTransaction(db, ['enable_seqscan', 'synchronous_commit'], (run) => run([withValuesWritten(settlement)], 'whole'));
};

/**
 * A statement's text with its bound values written in as quoted literals, for the simple query protocol
 * (which takes no bound values, but takes a whole transaction in one message). Its values are text only.
 */
const withValuesWritten = (query: SQL): string => {
  const built = dialect.sqlToQuery(query);
  return built.sql.replace(/\$(\d+)/g, (_, index: string) => {
    const value = built.params[Number(index) - 1];
    if (typeof value !== 'string') throw new Error('withValuesWritten: text values expected');
    return quotedLiteral(value);
  });
};

/**
 * Disables the subscriptions whose every attempt has failed for `afterMs`, saying why. Their open rows
 * stay (a re-enabled subscription resumes them). Returns the ids disabled.
 */
export const disableFailingSubscriptions = async (db: Database, afterMs: number): Promise<string[]> => {
  const disabled = await rows<{ id: string }>(
    db,
    sql`update event_subscriptions set enabled = false, updated_at = now(),
          disabled_reason = 'every delivery failed since ' || to_char(failing_since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            || coalesce(' (last: ' || (select coalesce('HTTP ' || o.last_status, o.last_error) from event_outbox o
                 where o.subscription_id = event_subscriptions.id and o.last_attempt_at is not null
                 order by o.last_attempt_at desc limit 1) || ')', '')
        where enabled and failing_since < now() - make_interval(secs => ${afterMs / 1000})
        returning id`,
  );
  return disabled.map((row) => row.id);
};

/** Open rows (pending or being sent) per subscription, and those due now. */
export const outboxBacklog = async (db: Database): Promise<{ subscriptionId: string; open: number; due: number }[]> =>
  (
    await rows<{ subscription_id: string; open: number; due: number }>(
      db,
      sql`select s.id as subscription_id,
                 count(o.id)::int as open,
                 count(o.id) filter (where o.next_attempt_at <= now())::int as due
          from event_subscriptions s
          left join event_outbox o on o.subscription_id = s.id and ${isOpen(sql`o`)}
          group by s.id`,
    )
  ).map((row) => ({ subscriptionId: row.subscription_id, open: Number(row.open), due: Number(row.due) }));

/**
 * The claim's plan rests on the table's statistics: taken before the backlog arrived (a fresh install,
 * a burst), they make the planner believe a few rows are open and walk the backlog once per candidate
 * (seconds per claim at 25,000 rows). Autovacuum's analyze comes a minute or more later, and on a table
 * with a long delivered history not at all, so the sender refreshes them itself when there is a backlog
 * and most of it was written since the last analyze. Returns whether it did.
 */
export const refreshOutboxStatistics = async (db: Database, openRows: number): Promise<boolean> => {
  if (openRows < 1000) return false;
  const [row] = await rows<{ modified: number }>(
    db,
    sql`select coalesce(n_mod_since_analyze, 0)::float8 as modified from pg_stat_user_tables where relid = 'event_outbox'::regclass`,
  );
  if (Number(row?.modified ?? 0) < openRows / 2) return false;
  await db.execute(sql`analyze event_outbox`);
  return true;
};

/**
 * Open rows of enabled subscriptions: with `claimableOnly`, those a sender could claim now (due, in turn,
 * not held under a live lease); otherwise all, including those scheduled for a retry (for `drain`).
 */
export const openOutboxCount = async (db: Database, options: { claimableOnly: boolean }): Promise<number> => {
  const [row] = await rows<{ count: number }>(
    db,
    sql`select count(*)::int as count from event_outbox r join event_subscriptions s on s.id = r.subscription_id and s.enabled
        where ${
          options.claimableOnly
            ? sql`${isOpen(sql`r`)} and ${claimable(sql`r`)} and ${inTurn}`
            : isOpen(sql`r`)
        }`,
  );
  return Number(row?.count ?? 0);
};

/** A delivery as listed: its row and the kind of its change (its event type, whether or not a body was kept). */
export type OutboxDelivery = OutboxRow & { kind: string | null };

type RawOutboxDelivery = RawOutboxRow & { kind: string | null };

const toOutboxDelivery = (row: RawOutboxDelivery): OutboxDelivery => ({ ...toOutboxRow(row), kind: row.kind });

const changeKind = sql`(select c.kind from access_changes c where c.id = change_id) as kind`;

/** A subscription's deliveries, newest first. */
export const listOutboxRows = async (
  db: Database,
  subscriptionId: string,
  page: { limit: number; beforeId?: number | undefined; status?: OutboxRow['status'] | undefined },
): Promise<OutboxDelivery[]> =>
  (
    await rows<RawOutboxDelivery>(
      db,
      sql`select *, ${changeKind} from event_outbox where subscription_id = ${subscriptionId}
          ${page.beforeId === undefined ? sql`` : sql`and id < ${page.beforeId}`}
          ${page.status === undefined ? sql`` : sql`and status = ${page.status}`}
          order by id desc limit ${page.limit}`,
    )
  ).map(toOutboxDelivery);

export const findOutboxRow = async (db: Database, subscriptionId: string, id: number): Promise<OutboxDelivery | null> => {
  const [row] = await rows<RawOutboxDelivery>(
    db,
    sql`select *, ${changeKind} from event_outbox where subscription_id = ${subscriptionId} and id = ${id}`,
  );
  return row ? toOutboxDelivery(row) : null;
};

/**
 * Sends a delivery again from now on with a fresh attempt budget; one being sent right now is left alone.
 * Null when there is no such delivery.
 */
export const retryOutboxRow = async (db: Database, subscriptionId: string, id: number): Promise<OutboxDelivery | null> => {
  const [row] = await rows<RawOutboxDelivery>(
    db,
    sql`update event_outbox set status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = null, delivered_at = null
        where subscription_id = ${subscriptionId} and id = ${id} and status <> 'processing'
        returning *, ${changeKind}`,
  );
  return row ? toOutboxDelivery(row) : findOutboxRow(db, subscriptionId, id);
};

/**
 * Queues again, as new deliveries, every matching change recorded at or after `since`: one set-based
 * insert from the change log. Returns how many were queued.
 */
export const replayChanges = async (db: Database, subscriptionId: string, since: Date): Promise<number> => {
  const [row] = await rows<{ count: number }>(
    db,
    sql`with queued as (
          insert into event_outbox (subscription_id, change_id, user_id, organization_id, replay)
          select s.id, c.id, c.user_id, c.organization_id, true
          from (select id, kinds from event_subscriptions where id = ${subscriptionId} for key share) s
          join access_changes c on c.at >= ${since.toISOString()}::timestamptz
          where s.kinds is null or c.kind = any(s.kinds)
          order by c.id
          returning 1)
        select count(*)::int as count from queued`,
  );
  return Number(row?.count ?? 0);
};
