import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

const tz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/**
 * A Logto id: text compared byte by byte (`COLLATE "C"`), whatever the database's collation. Every index
 * a baseline writes is keyed on these, and a comparison under a libc collation copies both strings and
 * calls strcoll (C.UTF-8 included), where "C" is one memcmp: PostgreSQL's CPU for a baseline at scale 0.3
 * fell by ~5 %. Logto's ids are lowercase letters and digits, which sort the same either way, and byte
 * order is JavaScript's (`<`), the order the crawl writes and compares pages in. A value of another
 * collation (a parameter, another table's text column) takes this one when compared with it.
 */
const id = customType<{ data: string; driverData: string }>({ dataType: () => 'text COLLATE "C"' });

/**
 * `observed_at` on every access-state row is the time of the Logto read (or event) that produced it.
 * Writers never replace a row with a snapshot observed before the stored one, which is what keeps a
 * slow reconcile page from undoing a webhook applied while it ran.
 */

export const users = pgTable(
  'users',
  {
    id: id('id').primaryKey(),
    username: text('username'),
    primaryEmail: text('primary_email'),
    primaryPhone: text('primary_phone'),
    name: text('name'),
    avatar: text('avatar'),
    isSuspended: boolean('is_suspended').notNull().default(false),
    customData: jsonb('custom_data').$type<Record<string, unknown>>().notNull().default({}),
    profile: jsonb('profile').$type<Record<string, unknown>>().notNull().default({}),
    applicationId: text('application_id'),
    lastSignInAt: tz('last_sign_in_at'),
    createdAt: tz('created_at').notNull(),
    updatedAt: tz('updated_at').notNull(),
    raw: jsonb('raw').$type<Record<string, unknown>>().notNull(),
    observedAt: tz('observed_at').notNull(),
    /**
     * A digest of the compared columns as the apply functions wrote them (`comparedDigest` in
     * src/sync/apply/users.ts): a reconcile compares it with the incoming user's, so an unchanged page
     * ships ids and digests, not whole users. A trigger (migration 0016) clears it when an update
     * changes a compared column without giving a new digest, so it never vouches for other content.
     */
    comparedDigest: text('compared_digest'),
  },
  (table) => [
    index('users_username_idx').on(table.username),
    index('users_primary_email_idx').on(table.primaryEmail),
    index('users_suspended_idx').on(table.isSuspended).where(sql`${table.isSuspended}`),
  ],
);

export const organizations = pgTable(
  'organizations',
  {
    id: id('id').primaryKey(),
    name: text('name').notNull(),
    description: text('description'),
    customData: jsonb('custom_data').$type<Record<string, unknown>>().notNull().default({}),
    isMfaRequired: boolean('is_mfa_required').notNull().default(false),
    createdAt: tz('created_at').notNull(),
    raw: jsonb('raw').$type<Record<string, unknown>>().notNull(),
    observedAt: tz('observed_at').notNull(),
  },
  (table) => [index('organizations_name_idx').on(table.name)],
);

export const organizationRoles = pgTable(
  'organization_roles',
  {
    id: id('id').primaryKey(),
    name: text('name').notNull(),
    description: text('description'),
    type: text('type').notNull().default('User'),
    raw: jsonb('raw').$type<Record<string, unknown>>().notNull(),
    observedAt: tz('observed_at').notNull(),
  },
  (table) => [index('organization_roles_name_idx').on(table.name)],
);

/**
 * A membership refers to its user and organization, and a member role to its membership and role, without
 * foreign keys: their checks cost a trigger and a lookup per written row, most of a baseline's writes. The
 * one writer of these rows checks and locks the referents once per page, and every deletion of a user,
 * organization, role or membership removes the rows that refer to it itself, recording each (as in Logto,
 * removing one takes its grants with it): see src/sync/apply/members.ts and cascade.ts.
 */
export const organizationMembers = pgTable(
  'organization_members',
  {
    organizationId: id('organization_id').notNull(),
    userId: id('user_id').notNull(),
    since: tz('since').notNull(),
    observedAt: tz('observed_at').notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.organizationId, table.userId] }),
    // Entries unique by the primary key in them: deduplication cannot merge any (migration 0019).
    index('organization_members_user_idx').on(table.userId, table.organizationId).with({ deduplicate_items: false }),
  ],
);

export const organizationMemberRoles = pgTable(
  'organization_member_roles',
  {
    organizationId: id('organization_id').notNull(),
    userId: id('user_id').notNull(),
    organizationRoleId: id('organization_role_id').notNull(),
    since: tz('since').notNull(),
    observedAt: tz('observed_at').notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.organizationId, table.userId, table.organizationRoleId] }),
    index('organization_member_roles_role_idx').on(table.organizationRoleId, table.organizationId, table.userId).with({ deduplicate_items: false }),
    // No index by user alone: every member role has its membership, so a user's roles are found through
    // organization_members_user_idx and this primary key's (organization_id, user_id) prefix. One index
    // fewer to write per grant, the most numerous row of a baseline.
  ],
);

/**
 * Append-only history: one row per grant, revoke, and user or definition change. No foreign keys,
 * because history must outlive the entities it describes.
 */
export const accessChanges = pgTable(
  'access_changes',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    at: tz('at').notNull().defaultNow(),
    // When the information behind the change was true in Logto; later snapshots are compared against it.
    observedAt: tz('observed_at').notNull(),
    kind: text('kind').notNull(),
    source: text('source').notNull(),
    actor: text('actor'),
    userId: id('user_id'),
    organizationId: id('organization_id'),
    organizationRoleId: id('organization_role_id'),
    details: jsonb('details').$type<Record<string, unknown>>(),
    syncRunId: bigint('sync_run_id', { mode: 'number' }),
    deliveryId: bigint('delivery_id', { mode: 'number' }),
  },
  (table) => [
    // Entries unique by `id`: deduplication cannot merge any, and tried before every leaf split (migration 0019).
    index('access_changes_user_idx').on(table.userId, table.id).with({ deduplicate_items: false }),
    index('access_changes_organization_idx').on(table.organizationId, table.id).with({ deduplicate_items: false }),
    // BRIN, not btree: `at` is the writing transaction's start, so rows arrive nearly in its order and
    // every reader asks for a range (since / until, the role sweep's recent window). A btree took an
    // entry per change row, a quarter of the change log's index entries in a baseline; this keeps a
    // summary per range of pages. New ranges are summarized as they fill (`autosummarize`).
    index('access_changes_at_idx').using('brin', table.at).with({ autosummarize: true }),
    // What a page of memberships and grants must not undo (a later removal or revoke), read once per page
    // as the organization's removals recorded after the page was observed: only these kinds, keyed by
    // organization and observation time, so the range read holds only what came after the page (empty in
    // a baseline, which adds nothing to this index), however long the organization's history.
    index('access_changes_member_removals_idx')
      .on(table.organizationId, table.observedAt)
      .where(sql`${table.kind} in ('member.removed', 'member_role.revoked')`),
    // What a user snapshot must not undo (a later deletion), probed per user a page creates: a baseline
    // writes no such row, so the probe descends an empty index, where through access_changes_user_idx
    // (estimated without statistics at hundreds of rows per user) it was a bitmap scan per new user.
    index('access_changes_user_deletions_idx').on(table.userId).where(sql`${table.kind} = 'user.deleted'`),
  ],
);

/** The webhook inbox: a verified delivery is stored here before it is acknowledged. */
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    dedupKey: text('dedup_key').notNull(),
    // SHA-256 of the payload's canonical JSON: recognises one event whichever way it reached us
    // (delivered, or recovered from Logto's hook logs, which re-serialise the body).
    contentHash: text('content_hash').notNull(),
    event: text('event').notNull(),
    // 'logto' (signed by Logto), 'svix' (relayed, Standard Webhooks), 'recent_logs' (recovered from Logto's hook logs)
    channel: text('channel').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    receivedAt: tz('received_at').notNull().defaultNow(),
    // pending → processing → applied | ignored | dead; processing rows whose lease expired are pending again
    status: text('status').notNull().default('pending'),
    // Null while the delivery is open (pending or processing), then its final status. Every index predicate
    // reads this column, not status: a claim (pending → processing) leaves it null and changes no indexed
    // column, so PostgreSQL writes it as a HOT update (no new entry in any index); only the settlement does.
    outcome: text('outcome').generatedAlwaysAs(sql`case when status in ('pending', 'processing') then null else status end`),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: tz('next_attempt_at').notNull().defaultNow(),
    leaseUntil: tz('lease_until'),
    lastError: text('last_error'),
    processedAt: tz('processed_at'),
  },
  (table) => [
    uniqueIndex('webhook_deliveries_dedup_idx').on(table.dedupKey),
    index('webhook_deliveries_content_hash_idx').on(table.contentHash),
    index('webhook_deliveries_ready_idx').on(table.nextAttemptAt, table.id).where(sql`${table.outcome} is null`),
    // Dead letters only: an index over every status took a new entry for each version of every row (stored,
    // claimed, settled), while what reads by status outside the open rows (the ready index) is the dead letters.
    index('webhook_deliveries_dead_idx').on(table.id).where(sql`${table.outcome} = 'dead'`),
    index('webhook_deliveries_applied_idx').on(table.processedAt).where(sql`${table.outcome} = 'applied'`),
  ],
);

/**
 * Re-reads of one organization's members asked for by deliveries, shared by every replica: a request
 * marks `requested_at`; one replica at a time claims the re-read under a lease (`claim`, `lease_until`);
 * a request is served once a re-read that started at or after it (`done_started_at`) has finished.
 */
export const organizationResyncs = pgTable('organization_resyncs', {
  organizationId: text('organization_id').primaryKey(),
  requestedAt: tz('requested_at').notNull(),
  claim: text('claim'),
  startedAt: tz('started_at'),
  leaseUntil: tz('lease_until'),
  doneStartedAt: tz('done_started_at'),
});

/** Each full sync, reconcile and role sweep, with its counts and the drift it found. */
export const syncRuns = pgTable(
  'sync_runs',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    kind: text('kind').notNull(), // 'baseline' | 'reconcile' | 'sweep'
    trigger: text('trigger').notNull(), // 'start' | 'cli' | 'api' | 'cron' | 'schedule'
    status: text('status').notNull().default('running'), // 'running' | 'succeeded' | 'failed'
    startedAt: tz('started_at').notNull().defaultNow(),
    finishedAt: tz('finished_at'),
    counts: jsonb('counts').$type<Record<string, number>>().notNull().default({}),
    report: jsonb('report').$type<Record<string, unknown>>(),
    error: text('error'),
    organizationsAvailable: boolean('organizations_available'),
    notes: text('notes'),
  },
  (table) => [index('sync_runs_kind_idx').on(table.kind, table.id)],
);

/**
 * Scratch space for a running sync: the ids a crawl has seen, so that memory stays bounded whatever
 * the tenant's size. Rows live only while their run does.
 */
export const syncSeen = pgTable(
  'sync_seen',
  {
    runId: bigint('run_id', { mode: 'number' }).notNull(),
    entity: text('entity').notNull(), // 'user' | 'organization' | 'organization_role' | 'member:<orgId>'
    id: text('id').notNull(),
  },
  (table) => [primaryKey({ columns: [table.runId, table.entity, table.id] })],
);

/** Small pieces of state that jobs keep between runs (role sweep position, last webhook applied). */
export const syncState = pgTable('sync_state', {
  key: text('key').primaryKey(),
  value: jsonb('value').$type<Record<string, unknown>>().notNull(),
  updatedAt: tz('updated_at').notNull().defaultNow(),
});

export const apiKeys = pgTable(
  'api_keys',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    name: text('name').notNull(),
    scope: text('scope').notNull(), // 'read' | 'write'
    // SHA-256 of the secret: keys are long random strings, so a slow hash buys nothing.
    hash: text('hash').notNull(),
    prefix: text('prefix').notNull(),
    createdAt: tz('created_at').notNull().defaultNow(),
    revokedAt: tz('revoked_at'),
    lastUsedAt: tz('last_used_at'),
  },
  (table) => [uniqueIndex('api_keys_hash_idx').on(table.hash), uniqueIndex('api_keys_name_idx').on(table.name)],
);

/**
 * Answers to write requests sent with an `Idempotency-Key`, per API key (`owner`), kept for a day. A row
 * is 'running' while its first request runs (held by `token` until `lease_until`, which the request keeps
 * extending, so a crashed one frees the key), then 'done' with the answer that retries get back.
 */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    owner: text('owner').notNull(),
    key: text('key').notNull(),
    // SHA-256 of the owner, method, path with query and canonical JSON body
    requestHash: text('request_hash').notNull(),
    state: text('state').notNull(), // 'running' | 'done'
    token: text('token').notNull(),
    leaseUntil: tz('lease_until'),
    responseStatus: integer('response_status'),
    responseHeaders: jsonb('response_headers').$type<Record<string, string>>(),
    responseBody: text('response_body'),
    createdAt: tz('created_at').notNull().defaultNow(),
    expiresAt: tz('expires_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.owner, table.key] }), index('idempotency_keys_expires_idx').on(table.expiresAt)],
);

/**
 * Subscribers to access events (Standard Webhooks). `kinds` holds the change-log kinds the chosen event
 * types map to (null: every type), so the outbox insert can match change rows without a lookup table.
 */
export const eventSubscriptions = pgTable('event_subscriptions', {
  id: text('id').primaryKey(),
  url: text('url').notNull(),
  description: text('description'),
  eventTypes: text('event_types').array(),
  kinds: text('kinds').array(),
  enabled: boolean('enabled').notNull().default(true),
  disabledReason: text('disabled_reason'),
  secret: text('secret').notNull(),
  // During a rotation the previous secret keeps signing beside the new one until this time.
  previousSecret: text('previous_secret'),
  previousSecretExpiresAt: tz('previous_secret_expires_at'),
  // Only changes after this one are events for the subscription: a baseline does not flood it.
  startChangeId: bigint('start_change_id', { mode: 'number' }).notNull().default(0),
  // Since when every attempt has failed (null after any success); five days of it disables the subscription.
  failingSince: tz('failing_since'),
  createdAt: tz('created_at').notNull().defaultNow(),
  updatedAt: tz('updated_at').notNull().defaultNow(),
});

/**
 * The transactional outbox: one row per (subscription, change), written in the transaction that records
 * the change. `user_id`/`organization_id` are copied from the change so the sender can keep the events
 * about one user or organization in order without joining the change log.
 */
export const eventOutbox = pgTable(
  'event_outbox',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    // No foreign key: checking one per inserted row cost PostgreSQL more than the rest of the insert. The
    // statement that queues rows locks the subscriptions it reads (FOR KEY SHARE), and a subscription's
    // delete removes its rows in the same transaction (see `deleteEventSubscription`).
    subscriptionId: text('subscription_id').notNull(),
    changeId: bigint('change_id', { mode: 'number' }).notNull(),
    // The transactions of this database running when the row was written: once they are over, no change
    // with a smaller id can still appear, so the row may be sent without overtaking one.
    waitsFor: bigint('waits_for', { mode: 'number' }).array(),
    userId: text('user_id'),
    organizationId: text('organization_id'),
    // pending → processing → delivered | failed; processing rows whose lease ran out are pending again
    status: text('status').notNull().default('pending'),
    // Whether the row is still to be sent (pending or processing), for the predicates of the open-row
    // indexes: a claim (pending → processing) leaves it as it was and changes no indexed column, so its
    // new row version stays on the page without index entries (a HOT update); only the settlement that
    // closes the row, or a retry scheduled for later, writes index entries. Derived from `status`, so no
    // writer can let the two disagree.
    open: boolean('open')
      .notNull()
      .generatedAlwaysAs(sql`status in ('pending', 'processing')`),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: tz('next_attempt_at').notNull().defaultNow(),
    leaseUntil: tz('lease_until'),
    // The body as first sent, byte for byte (text, not jsonb, which would reorder keys): retries carry the same bytes.
    payload: text('payload'),
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    lastAttemptAt: tz('last_attempt_at'),
    deliveredAt: tz('delivered_at'),
    replay: boolean('replay').notNull().default(false),
    createdAt: tz('created_at').notNull().defaultNow(),
  },
  (table) => [
    index('event_outbox_ready_idx').on(table.nextAttemptAt, table.id).where(sql`${table.open}`),
    index('event_outbox_subscription_idx').on(table.subscriptionId, table.id),
    // Only the rows about a user (or an organization) are probed by user (or organization): the others,
    // most of the events of either kind, get no entry to write.
    index('event_outbox_open_user_idx')
      .on(table.subscriptionId, table.userId, table.changeId)
      .where(sql`${table.open} and ${table.userId} is not null`),
    index('event_outbox_open_organization_idx')
      .on(table.subscriptionId, table.organizationId, table.changeId)
      .where(sql`${table.open} and ${table.organizationId} is not null`),
  ],
);
