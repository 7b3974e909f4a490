import { sql, type SQL } from 'drizzle-orm';
import { rows, type Database } from './client.js';

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
  status: 'pending' | 'processing' | 'delivered' | 'failed';
  attempts: number;
  /** The serialised body of the first attempt. */
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
 */
const runningTransactions = sql`(select coalesce(array_agg(backend_xid::text::bigint), '{}') from pg_stat_activity
  where datname = current_database() and backend_xid is not null and pid <> pg_backend_pid())`;

/**
 * Wraps the insert of change rows (`insertChanges`, an `insert … into access_changes` without its
 * `returning`) so that the same statement writes the outbox rows of the enabled subscriptions whose types
 * match and notifies the live streams: one round trip per batch of changes, in the applying transaction.
 * The NOTIFY is delivered at commit, so nothing uncommitted is announced. Without any subscription the
 * outbox insert joins an empty table, and the running transactions are never read. Yields the new change
 * ids in insertion order.
 */
export const insertChangesWithEvents = (insertChanges: SQL): SQL => sql`
  with inserted as (${insertChanges} returning id, kind, user_id, organization_id),
  queued as (
    insert into event_outbox (subscription_id, change_id, waits_for, user_id, organization_id)
    select s.id, c.id, ${runningTransactions}, c.user_id, c.organization_id
    from event_subscriptions s
    join inserted c on c.id > s.start_change_id
    where s.enabled and (s.kinds is null or c.kind = any(s.kinds))
    order by c.id, s.id
    returning 1
  )
  select i.id from inserted i
  cross join (select pg_notify(${changesChannel}, (select max(id) from inserted)::text)) as notified
  order by i.id`;

/**
 * Due, clear of the transactions it waits for, and no open row of the subscription about the same user or organization comes
 * from an earlier change (`r` is the row).
 */
const inTurn = sql`r.next_attempt_at <= now()
  and (r.waits_for is null or cardinality(r.waits_for) = 0 or r.created_at < now() - interval '30 seconds'
       or not (r.waits_for && ${runningTransactions}))
  and not exists (
    select 1 from event_outbox e
    where e.subscription_id = r.subscription_id and e.user_id = r.user_id and e.change_id < r.change_id
      and e.status in ('pending', 'processing'))
  and not exists (
    select 1 from event_outbox e
    where e.subscription_id = r.subscription_id and e.organization_id = r.organization_id and e.change_id < r.change_id
      and e.status in ('pending', 'processing'))`;

/**
 * Claims up to `limit` due rows of enabled subscriptions whose earlier events about the same user or
 * organization are settled. Each claim counts as an attempt; a claim whose lease runs out (its sender
 * died) is claimed again.
 */
export const claimOutbox = async (db: Database, limit: number, leaseMs: number): Promise<OutboxRow[]> => {
  if (limit <= 0) return [];
  const claimed = await rows<RawOutboxRow>(
    db,
    sql`update event_outbox o
        set status = 'processing', attempts = o.attempts + 1,
            lease_until = now() + make_interval(secs => ${leaseMs / 1000}), last_attempt_at = now()
        where o.id in (
          select r.id from event_outbox r
          join event_subscriptions s on s.id = r.subscription_id and s.enabled
          where r.status in ('pending', 'processing')
            and (r.status = 'pending' or r.lease_until < now()) and ${inTurn}
          order by r.change_id, r.id
          limit ${limit}
          for update of r skip locked)
        returning o.*`,
  );
  return claimed.map(toOutboxRow).sort((a, b) => a.id - b.id);
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
  /** The serialised body that was sent. */
  payload: string;
  /** HTTP status of the answer, null when none came (timeout, refused, blocked address). */
  status: number | null;
  error: string | null;
  /** Null: delivered (or given up when `ok` is false); otherwise the wait before the next attempt. */
  retryInMs: number | null;
  ok: boolean;
};

/**
 * Records the outcome of sent attempts in one statement, only for claims still held (a sender whose
 * lease was taken over cannot settle), and keeps each subscription's failure streak: a success ends
 * it, a failure starts it if none is running.
 */
export const settleAttempts = async (db: Database, results: AttemptResult[]): Promise<void> => {
  if (results.length === 0) return;
  const values = sql.join(
    results.map(
      (result) =>
        sql`(${result.claim.id}::bigint, ${result.claim.attempts}::int, ${result.payload}::text, ${result.status}::int,
             ${result.error}::text, ${result.ok}::boolean, ${result.retryInMs}::double precision)`,
    ),
    sql`, `,
  );
  await db.execute(sql`
    update event_outbox o set
      status = case when v.ok then 'delivered' when v.retry_ms is null then 'failed' else 'pending' end,
      payload = coalesce(o.payload, v.payload),
      last_status = v.status,
      last_error = v.error,
      lease_until = null,
      delivered_at = case when v.ok then now() else null end,
      next_attempt_at = case when v.retry_ms is null then o.next_attempt_at else now() + make_interval(secs => v.retry_ms / 1000) end
    from (values ${values}) as v(id, attempts, payload, status, error, ok, retry_ms)
    where o.id = v.id and o.attempts = v.attempts and o.status = 'processing'`);
  const succeeded = [...new Set(results.filter((result) => result.ok).map((result) => result.subscriptionId))];
  const failed = [...new Set(results.filter((result) => !result.ok).map((result) => result.subscriptionId))].filter(
    (id) => !succeeded.includes(id),
  );
  if (succeeded.length > 0) {
    await db.execute(sql`
      update event_subscriptions set failing_since = null
      where failing_since is not null and id in (${sql.join(succeeded.map((id) => sql`${id}`), sql`, `)})`);
  }
  if (failed.length > 0) {
    await db.execute(sql`
      update event_subscriptions set failing_since = now()
      where failing_since is null and id in (${sql.join(failed.map((id) => sql`${id}`), sql`, `)})`);
  }
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
          left join event_outbox o on o.subscription_id = s.id and o.status in ('pending', 'processing')
          group by s.id`,
    )
  ).map((row) => ({ subscriptionId: row.subscription_id, open: Number(row.open), due: Number(row.due) }));

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
            ? sql`(r.status = 'pending' or (r.status = 'processing' and r.lease_until < now())) and ${inTurn}`
            : sql`r.status in ('pending', 'processing')`
        }`,
  );
  return Number(row?.count ?? 0);
};

/** A subscription's deliveries, newest first. */
export const listOutboxRows = async (
  db: Database,
  subscriptionId: string,
  page: { limit: number; beforeId?: number | undefined; status?: OutboxRow['status'] | undefined },
): Promise<OutboxRow[]> =>
  (
    await rows<RawOutboxRow>(
      db,
      sql`select * from event_outbox where subscription_id = ${subscriptionId}
          ${page.beforeId === undefined ? sql`` : sql`and id < ${page.beforeId}`}
          ${page.status === undefined ? sql`` : sql`and status = ${page.status}`}
          order by id desc limit ${page.limit}`,
    )
  ).map(toOutboxRow);

export const findOutboxRow = async (db: Database, subscriptionId: string, id: number): Promise<OutboxRow | null> => {
  const [row] = await rows<RawOutboxRow>(db, sql`select * from event_outbox where subscription_id = ${subscriptionId} and id = ${id}`);
  return row ? toOutboxRow(row) : null;
};

/**
 * Sends a delivery again from now on with a fresh attempt budget; one being sent right now is left alone.
 * Null when there is no such delivery.
 */
export const retryOutboxRow = async (db: Database, subscriptionId: string, id: number): Promise<OutboxRow | null> => {
  const [row] = await rows<RawOutboxRow>(
    db,
    sql`update event_outbox set status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = null, delivered_at = null
        where subscription_id = ${subscriptionId} and id = ${id} and status <> 'processing'
        returning *`,
  );
  return row ? toOutboxRow(row) : findOutboxRow(db, subscriptionId, id);
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
          from event_subscriptions s
          join access_changes c on c.at >= ${since.toISOString()}::timestamptz
          where s.id = ${subscriptionId} and (s.kinds is null or c.kind = any(s.kinds))
          order by c.id
          returning 1)
        select count(*)::int as count from queued`,
  );
  return Number(row?.count ?? 0);
};
