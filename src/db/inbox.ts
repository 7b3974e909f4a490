import { createHash } from 'node:crypto';
import { and, asc, desc, eq, isNull, lt, sql } from 'drizzle-orm';
import { webhookDeliveries } from '../../db/schema.js';
import { canonicalJson } from './canonical-json.js';
import { rows, type Database } from './client.js';
import { prepared, preparedRows } from './prepared.js';
import { isoSql } from './queries/json-text.js';

/**
 * The webhook inbox (`webhook_deliveries`): a verified delivery is committed here before it is
 * acknowledged, then claimed and applied by the inbox worker. Claims use `FOR UPDATE SKIP LOCKED` and
 * leases, so any number of workers (replicas) share one inbox and a crashed worker's deliveries are
 * claimed again once their lease runs out. The same SQL runs on PostgreSQL and PGlite.
 */

export type Delivery = typeof webhookDeliveries.$inferSelect;
export type DeliveryStatus = 'pending' | 'processing' | 'applied' | 'ignored' | 'dead';
/** 'logto' (signed by Logto), 'svix' (relayed, Standard Webhooks), 'recent_logs' (recovered from Logto's hook logs). */
export type DeliveryChannel = 'logto' | 'svix' | 'recent_logs';
/** What identifies one claim of a delivery: a worker whose lease was taken over can no longer settle it. */
export type DeliveryClaim = Pick<Delivery, 'id' | 'attempts'>;

/** Hex SHA-256 of the payload's canonical JSON (keys sorted recursively): one event hashes alike however it was serialised. */
export const contentHash = (payload: unknown): string =>
  createHash('sha256').update(canonicalJson(payload)).digest('hex');

/** The event name stored beside the payload (bounded; 'unknown' when the payload has none). */
export const eventName = (payload: Record<string, unknown>): string =>
  typeof payload.event === 'string' && payload.event.length > 0 ? payload.event.slice(0, 200) : 'unknown';

const insertDeliveryStatement = prepared(
  'insert_webhook_delivery',
  `insert into webhook_deliveries (dedup_key, content_hash, event, channel, payload) values ($1, $2, $3, $4, $5::jsonb)
   on conflict (dedup_key) do nothing returning id::text as id`,
);
// Stored already claimed (its first attempt, under a lease): what the claim would have written, in the insert.
const insertClaimedDeliveryStatement = prepared(
  'insert_claimed_webhook_delivery',
  `insert into webhook_deliveries (dedup_key, content_hash, event, channel, payload, status, attempts, lease_until)
   values ($1, $2, $3, $4, $5::jsonb, 'processing', 1, now() + make_interval(secs => $6::float8))
   on conflict (dedup_key) do nothing
   returning id::text as id, ${isoSql('received_at')} as received_at, ${isoSql('next_attempt_at')} as next_attempt_at,
     ${isoSql('lease_until')} as lease_until`,
);
const deliveryByDedupKeyStatement = prepared('find_webhook_delivery_by_dedup_key', 'select id from webhook_deliveries where dedup_key = $1');

export type DeliveryInput = { dedupKey: string; channel: DeliveryChannel; payload: Record<string, unknown>; payloadText?: string };

const insertValues = (input: DeliveryInput): string[] => [
  input.dedupKey,
  contentHash(input.payload),
  eventName(input.payload),
  input.channel,
  input.payloadText ?? JSON.stringify(input.payload),
];

const existingDelivery = async (db: Database, dedupKey: string): Promise<{ id: number; duplicate: true }> => {
  const [existing] = await preparedRows<{ id: string | number }>(db, deliveryByDedupKeyStatement, [dedupKey]);
  if (!existing) throw new Error('the delivery conflicted on its dedup key but the existing row was not found');
  return { id: Number(existing.id), duplicate: true };
};

/**
 * Stores a verified delivery. A second delivery with the same dedup key is not stored again (insert … on
 * conflict do nothing): the first one's id comes back with `duplicate: true`. `payloadText`, the
 * payload's JSON as received, is stored as it is (PostgreSQL parses it) instead of serialising the
 * parsed payload again: the receiver's hot path.
 */
export const insertDelivery = async (db: Database, input: DeliveryInput): Promise<{ id: number; duplicate: boolean }> => {
  const [inserted] = await preparedRows<{ id: string }>(db, insertDeliveryStatement, insertValues(input));
  if (inserted) return { id: Number(inserted.id), duplicate: false };
  return existingDelivery(db, input.dedupKey);
};

/**
 * `insertDelivery` for a worker with room in this process: the row is stored already claimed (status
 * processing, attempt 1, leased for `leaseMs`), and the delivery comes back as a claim would have
 * returned it, its payload the object given (not parsed again). A duplicate is not claimed. If the
 * process dies before applying it, the lease runs out and any worker claims it, as after a claim.
 */
export const insertClaimedDelivery = async (
  db: Database,
  input: DeliveryInput,
  leaseMs: number,
): Promise<{ id: number; duplicate: false; delivery: Delivery } | { id: number; duplicate: true; delivery?: undefined }> => {
  const values = insertValues(input);
  const [inserted] = await preparedRows<StoredAtIntake>(
    db,
    insertClaimedDeliveryStatement,
    [...values, leaseMs / 1000],
  );
  if (!inserted) return existingDelivery(db, input.dedupKey);
  return { id: Number(inserted.id), duplicate: false, delivery: claimedAtIntake(input, values[1]!, values[2]!, inserted) };
};

/** A stored row's columns that a delivery claimed at intake takes from the insert. */
export type StoredAtIntake = { id: string; received_at: string; next_attempt_at: string; lease_until: string | null };

/**
 * A delivery stored already claimed, as a claim would have returned it (processing, attempt 1), its
 * payload the object given (not parsed again).
 */
export const claimedAtIntake = (input: DeliveryInput, contentHash: string, event: string, stored: StoredAtIntake): Delivery => ({
  id: Number(stored.id),
  dedupKey: input.dedupKey,
  contentHash,
  event,
  channel: input.channel,
  payload: input.payload,
  receivedAt: new Date(stored.received_at),
  status: 'processing',
  outcome: null,
  attempts: 1,
  nextAttemptAt: new Date(stored.next_attempt_at),
  leaseUntil: dateOrNull(stored.lease_until),
  lastError: null,
  processedAt: null,
});

/** The first stored delivery with this content hash, if any. */
export const findByContentHash = async (db: Database, hash: string): Promise<Delivery | null> =>
  (
    await db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.contentHash, hash))
      .orderBy(asc(webhookDeliveries.id))
      .limit(1)
  )[0] ?? null;

/**
 * A delivery recovered from Logto's hook logs (dedup key `log:<log id>`). Logto stores the body
 * re-serialised (jsonb key order), so the raw-body hash cannot match a delivery we did receive; the
 * content hash recognises it, and then nothing is stored.
 */
export const insertRecoveredDelivery = async (
  db: Database,
  input: { logId: string; payload: Record<string, unknown> },
): Promise<{ id: number; duplicate: boolean }> => {
  const known = await findByContentHash(db, contentHash(input.payload));
  if (known) return { id: known.id, duplicate: true };
  return insertDelivery(db, { dedupKey: `log:${input.logId}`, channel: 'recent_logs', payload: input.payload });
};

/**
 * Open (the ready index's predicate), due, and pending or held under a lease that ran out (its worker
 * died): one text for the prepared claim and the count.
 */
const claimableCondition = `outcome is null and (status = 'pending' or lease_until < now()) and next_attempt_at <= now()`;

const leaseFor = (leaseMs: number) => sql`now() + make_interval(secs => ${leaseMs / 1000})`;

/** A delivery's columns as a prepared statement returns them on both drivers (text, integers and booleans only). */
const deliveryColumns = (alias: string) => `${alias}.id::text as id, ${alias}.dedup_key, ${alias}.content_hash, ${alias}.event,
  ${alias}.channel, ${alias}.payload::text as payload, ${isoSql(`${alias}.received_at`)} as received_at, ${alias}.status, ${alias}.outcome,
  ${alias}.attempts, ${isoSql(`${alias}.next_attempt_at`)} as next_attempt_at, ${isoSql(`${alias}.lease_until`)} as lease_until,
  ${alias}.last_error, ${isoSql(`${alias}.processed_at`)} as processed_at`;

type DeliveryText = {
  id: string;
  dedup_key: string;
  content_hash: string;
  event: string;
  channel: string;
  payload: string;
  received_at: string;
  status: string;
  outcome: string | null;
  attempts: number;
  next_attempt_at: string;
  lease_until: string | null;
  last_error: string | null;
  processed_at: string | null;
};

const dateOrNull = (iso: string | null) => (iso === null ? null : new Date(iso));

const toDelivery = (row: DeliveryText): Delivery => ({
  id: Number(row.id),
  dedupKey: row.dedup_key,
  contentHash: row.content_hash,
  event: row.event,
  channel: row.channel,
  payload: JSON.parse(row.payload) as Record<string, unknown>,
  receivedAt: new Date(row.received_at),
  status: row.status,
  outcome: row.outcome,
  attempts: Number(row.attempts),
  nextAttemptAt: new Date(row.next_attempt_at),
  leaseUntil: dateOrNull(row.lease_until),
  lastError: row.last_error,
  processedAt: dateOrNull(row.processed_at),
});

// Prepared: a worker claims about every 10 ms under a stream of deliveries, and planning this statement
// cost as much as running it.
const claimStatement = prepared(
  'claim_webhook_deliveries',
  `update webhook_deliveries as d set status = 'processing', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $2::float8)
   where d.id in (
     select id from webhook_deliveries
     where ${claimableCondition}
     order by id limit $1 for update skip locked)
   returning ${deliveryColumns('d')}`,
);

/**
 * Claims up to `limit` deliveries: pending ones that are due, and processing ones whose lease ran out
 * (their worker died). One statement:
 * `UPDATE … WHERE id IN (SELECT id … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING …`,
 * so concurrent workers never claim the same row. Each claim counts as an attempt.
 */
export const claimDeliveries = async (db: Database, limit: number, leaseMs: number): Promise<Delivery[]> => {
  if (limit <= 0) return [];
  const claimed = await preparedRows<DeliveryText>(db, claimStatement, [limit, leaseMs / 1000]);
  return claimed.map(toDelivery).sort((a, b) => a.id - b.id);
};

/** A PostgreSQL array literal of integers (ids and attempt counts only), bound as one parameter. */
const integerArray = (values: number[]) => `{${values.map((value) => Math.trunc(value)).join(',')}}`;

/** Pushes the lease of deliveries still being worked on, so a slow handler is not presumed dead. */
export const extendLeases = async (db: Database, claims: DeliveryClaim[], leaseMs: number): Promise<void> => {
  if (claims.length === 0) return;
  await db.execute(sql`
    update ${webhookDeliveries} as d set lease_until = ${leaseFor(leaseMs)}
    from unnest(${integerArray(claims.map((claim) => claim.id))}::bigint[], ${integerArray(claims.map((claim) => claim.attempts))}::int[])
      as held(id, attempts)
    where d.id = held.id and d.attempts = held.attempts and d.status = 'processing'`);
};

/** Only the worker holding the current claim may settle a delivery. */
const heldClaim = (claim: DeliveryClaim) =>
  and(
    eq(webhookDeliveries.id, claim.id),
    eq(webhookDeliveries.status, 'processing'),
    eq(webhookDeliveries.attempts, claim.attempts),
  );

const settle = async (db: Database, claim: DeliveryClaim, status: 'applied' | 'ignored'): Promise<boolean> => {
  const updated = await db
    .update(webhookDeliveries)
    .set({ status, processedAt: new Date(), leaseUntil: null, lastError: null })
    .where(heldClaim(claim))
    .returning({ id: webhookDeliveries.id });
  return updated.length > 0;
};

const settleStatement = prepared(
  'settle_webhook_deliveries',
  `update webhook_deliveries as d
   set status = s.status, processed_at = now(), lease_until = null, last_error = null
   from unnest($1::bigint[], $2::int[], $3::text[]) as s(id, attempts, status)
   where d.id = s.id and d.attempts = s.attempts and d.status = 'processing'
   returning d.id::text as id`,
);

/**
 * Settles many claims in one statement (the worker applies deliveries in batches); returns the ids whose
 * claim was still held. A claim another worker took over is left to it.
 */
export const settleDeliveries = async (
  db: Database,
  settled: { claim: DeliveryClaim; status: 'applied' | 'ignored' }[],
): Promise<Set<number>> => {
  if (settled.length === 0) return new Set();
  const statuses = `{${settled.map(({ status }) => (status === 'applied' ? 'applied' : 'ignored')).join(',')}}`;
  const updated = await preparedRows<{ id: string }>(db, settleStatement, [
    integerArray(settled.map(({ claim }) => claim.id)),
    integerArray(settled.map(({ claim }) => claim.attempts)),
    statuses,
  ]);
  return new Set(updated.map((row) => Number(row.id)));
};

/** The delivery changed the access state as it should. False when the claim was lost (another worker took over). */
export const markApplied = (db: Database, claim: DeliveryClaim): Promise<boolean> => settle(db, claim, 'applied');

/** The delivery needs nothing done (an event this service does not follow). */
export const markIgnored = (db: Database, claim: DeliveryClaim): Promise<boolean> => settle(db, claim, 'ignored');

export type RetryPolicy = {
  /** After this many attempts the delivery is a dead letter. */
  maxAttempts: number;
  /** Backoff of attempt n: base·2^(n−1), capped, with jitter (half fixed, half random). */
  baseMs: number;
  capMs: number;
};

/** The wait before the attempt after `attempts`: exponential, capped, with equal jitter (never zero). */
export const retryDelayMs = (attempts: number, policy: Pick<RetryPolicy, 'baseMs' | 'capMs'>, random = Math.random): number => {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
};

export type FailureOutcome = { dead: true } | { dead: false; retryInMs: number };

/**
 * Records a failed attempt: the delivery is due again after a backoff, or, once `maxAttempts` attempts
 * have failed (or the failure is `permanent`), it becomes a dead letter with its last error, visible
 * and retryable (`retryDeadLetter`).
 */
export const markFailed = async (
  db: Database,
  claim: DeliveryClaim,
  error: string,
  policy: RetryPolicy,
  options: { permanent?: boolean } = {},
): Promise<FailureOutcome> => {
  const outcome: FailureOutcome =
    options.permanent || claim.attempts >= policy.maxAttempts
      ? { dead: true }
      : { dead: false, retryInMs: retryDelayMs(claim.attempts, policy) };
  await db
    .update(webhookDeliveries)
    .set({
      status: outcome.dead ? 'dead' : 'pending',
      lastError: error.slice(0, 2000),
      leaseUntil: null,
      processedAt: outcome.dead ? new Date() : null,
      nextAttemptAt: outcome.dead ? sql`now()` : sql`now() + make_interval(secs => ${outcome.retryInMs / 1000})`,
    })
    .where(heldClaim(claim));
  return outcome;
};

/** Dead letters, newest first. */
export const listDeadLetters = async (db: Database, options: { limit?: number; beforeId?: number } = {}): Promise<Delivery[]> =>
  db
    .select()
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.outcome, 'dead'),
        options.beforeId === undefined ? undefined : lt(webhookDeliveries.id, options.beforeId),
      ),
    )
    .orderBy(desc(webhookDeliveries.id))
    .limit(options.limit ?? 50);

/** Puts a dead letter back in the queue with a fresh attempt budget; false when there is no such dead letter. */
export const retryDeadLetter = async (db: Database, id: number): Promise<boolean> => {
  const updated = await db
    .update(webhookDeliveries)
    .set({ status: 'pending', attempts: 0, nextAttemptAt: sql`now()`, leaseUntil: null, lastError: null, processedAt: null })
    .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.status, 'dead')))
    .returning({ id: webhookDeliveries.id });
  return updated.length > 0;
};

export type InboxStats = {
  /** Deliveries not yet settled (pending or being processed). */
  depth: number;
  /** When the oldest of them was received. */
  oldestPendingReceivedAt: Date | null;
  /** Dead letters waiting for an operator. */
  dead: number;
};

export const inboxStats = async (db: Database): Promise<InboxStats> => {
  const [row] = await rows<{ depth: number; oldest: string | Date | null; dead: number }>(
    db,
    sql`select
          (select count(*)::int from ${webhookDeliveries} where outcome is null) as depth,
          (select min(received_at) from ${webhookDeliveries} where outcome is null) as oldest,
          (select count(*)::int from ${webhookDeliveries} where outcome = 'dead') as dead`,
  );
  return {
    depth: Number(row?.depth ?? 0),
    oldestPendingReceivedAt: row?.oldest ? new Date(row.oldest) : null,
    dead: Number(row?.dead ?? 0),
  };
};

/** Deliveries a worker could claim right now. */
export const claimableCount = async (db: Database): Promise<number> =>
  db.$count(webhookDeliveries, sql.raw(claimableCondition));

/** Deliveries not yet settled, whether due now or waiting for a retry. */
export const unsettledCount = async (db: Database): Promise<number> =>
  db.$count(webhookDeliveries, isNull(webhookDeliveries.outcome));

export const findDelivery = async (db: Database, id: number): Promise<Delivery | null> =>
  (await db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)))[0] ?? null;
