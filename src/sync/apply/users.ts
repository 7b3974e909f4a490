import { hash } from 'node:crypto';
import { inArray, sql, type SQL } from 'drizzle-orm';
import { accessChanges, users } from '../../../db/schema.js';
import { endedGrants, grantsHeldBy } from './cascade.js';
import { isUniqueViolation, type Database } from '../../db/client.js';
import { canonicalJson } from '../../db/canonical-json.js';
import { namedRows, textArray } from '../../db/prepared.js';
import type { LogtoUser } from '../../logto/index.js';
import type { LastStatement } from '../../db/transaction.js';
import {
  applyTransaction,
  newTombstones,
  recordChanges,
  writeUsersRecordingChanges,
  type ApplyResult,
  type ChangeContext,
  type ChangeRecord,
} from './changes.js';

export type UserRow = typeof users.$inferInsert;

/** The fields the mirror keeps and compares; `raw` rides along but is not compared (its shape differs by endpoint). */
const comparedFields = [
  'username',
  'primaryEmail',
  'primaryPhone',
  'name',
  'avatar',
  'isSuspended',
  'customData',
  'profile',
  'applicationId',
  'lastSignInAt',
  'createdAt',
  'updatedAt',
] as const;
export type UserField = (typeof comparedFields)[number];
/** Every column a user snapshot writes. */
export const writtenUserFields = [...comparedFields, 'raw', 'observedAt', 'comparedDigest'] as const;

const toDate = (epochMs: number | null | undefined) => (epochMs === null || epochMs === undefined ? null : new Date(epochMs));

/** The instant `new Date(epochMs)` holds, as its `getTime()` (ECMAScript's TimeClip), without making the Date. */
const timeClip = (epochMs: number): number | null =>
  Number.isFinite(epochMs) && Math.abs(epochMs) <= 8.64e15 ? Math.trunc(epochMs) + 0 : null;

const digestOf = (
  texts: (string | null)[],
  isSuspended: boolean,
  instants: (number | null)[],
  customData: unknown,
  profile: unknown,
): string =>
  // The digest of the three texts one after the other, in one call: a Hash object per user (a stream,
  // three updates) cost ~2.7 µs against ~1.1, and a baseline digests every user it writes. Each text is
  // JSON that starts and ends with ASCII, so the joined string encodes as the three did.
  hash('sha256', `${JSON.stringify([...texts, isSuspended, ...instants])}${canonicalJson(customData)}${canonicalJson(profile)}`, 'base64');

/**
 * A digest of the compared columns of a row, stored with it by every write (`compared_digest`): equal
 * digests mean the compared columns are equal, so a reconcile sends a page's ids and digests and only
 * the users whose digest differs (changed, or stored without one) are compared column by column. sha256,
 * as the profile and custom data are the users' own to choose.
 */
export const comparedDigest = (row: Omit<UserRow, 'comparedDigest'>): string =>
  digestOf(
    [row.username ?? null, row.primaryEmail ?? null, row.primaryPhone ?? null, row.name ?? null, row.avatar ?? null, row.applicationId ?? null],
    row.isSuspended ?? false,
    [row.lastSignInAt ? timeClip(row.lastSignInAt.getTime()) : null, timeClip(row.createdAt.getTime()), timeClip(row.updatedAt.getTime())],
    row.customData ?? {},
    row.profile ?? {},
  );

/**
 * `comparedDigest(toUserRow(user))` straight from Logto's user: a reconcile digests every user of a page
 * and builds the row (a copy of the whole user, and its instants) only for the few whose digest differs.
 */
export const userDigest = (user: LogtoUser): string =>
  digestOf(
    [user.username ?? null, user.primaryEmail ?? null, user.primaryPhone ?? null, user.name ?? null, user.avatar ?? null, user.applicationId ?? null],
    user.isSuspended,
    [user.lastSignInAt === null || user.lastSignInAt === undefined ? null : timeClip(user.lastSignInAt), timeClip(user.createdAt), timeClip(user.updatedAt)],
    user.customData ?? {},
    user.profile ?? {},
  );

/** `digest`: the user's `userDigest`, when the caller has it already (sha256 of a page's users, once each). */
export const toUserRow = (user: LogtoUser, observedAt: Date, digest?: string): UserRow => {
  // hasPassword is present on /users but absent on member lists: dropping it keeps raw comparable across both.
  const { hasPassword: _hasPassword, organizationRoles: _roles, ...raw } = user as LogtoUser & {
    organizationRoles?: unknown;
  };
  // One object, its digest taken from the user (`userDigest` is the row's `comparedDigest`): a webhook
  // delivery's row was built twice, the second time only to add the digest.
  return {
    id: user.id,
    username: user.username ?? null,
    primaryEmail: user.primaryEmail ?? null,
    primaryPhone: user.primaryPhone ?? null,
    name: user.name ?? null,
    avatar: user.avatar ?? null,
    isSuspended: user.isSuspended,
    customData: user.customData ?? {},
    profile: user.profile ?? {},
    applicationId: user.applicationId ?? null,
    lastSignInAt: toDate(user.lastSignInAt),
    createdAt: new Date(user.createdAt),
    updatedAt: new Date(user.updatedAt),
    raw,
    observedAt,
    comparedDigest: digest ?? userDigest(user),
  };
};

/** The compared columns, and the id, with their types for the JSON a page is compared with in PostgreSQL. */
const comparedColumnTypes: [string, string][] = [
  ['id', 'text'],
  ['username', 'text'],
  ['primary_email', 'text'],
  ['primary_phone', 'text'],
  ['name', 'text'],
  ['avatar', 'text'],
  ['is_suspended', 'boolean'],
  ['custom_data', 'jsonb'],
  ['profile', 'jsonb'],
  ['application_id', 'text'],
  ['last_sign_in_at', 'timestamptz'],
  ['created_at', 'timestamptz'],
  ['updated_at', 'timestamptz'],
];
const comparedColumns = comparedColumnTypes.map(([column]) => column).filter((column) => column !== 'id');

/** The compared columns of a row, and its id, as the JSON a page is compared with in PostgreSQL. */
const toComparedJson = (row: UserRow) => ({
  id: row.id,
  username: row.username,
  primary_email: row.primaryEmail,
  primary_phone: row.primaryPhone,
  name: row.name,
  avatar: row.avatar,
  is_suspended: row.isSuspended,
  custom_data: row.customData,
  profile: row.profile,
  application_id: row.applicationId,
  last_sign_in_at: row.lastSignInAt?.toISOString() ?? null,
  created_at: row.createdAt.toISOString(),
  updated_at: row.updatedAt.toISOString(),
});

/** An instant of Logto's user (epoch milliseconds in `raw`) as a timestamptz: the instant `new Date(ms)` holds. */
const rawInstant = (field: string) => `timestamptz 'epoch' + trunc((t.raw->>'${field}')::float8) * interval '1 millisecond'`;

/** A JSON object of `raw` as `toUserRow` takes it (`?? {}`): missing or null is empty. */
const rawObject = (field: string) => `coalesce(nullif(t.raw->'${field}', 'null'), '{}')`;

/**
 * Each column of `users` as the upserts select it from their JSON row `t`: the user's fields from its
 * `raw`, as `toUserRow` takes them from the user, so each user's data is sent once and not also as columns.
 */
const userColumnsFromRaw: Record<string, string> = {
  id: 't.id',
  username: "t.raw->>'username'",
  primary_email: "t.raw->>'primaryEmail'",
  primary_phone: "t.raw->>'primaryPhone'",
  name: "t.raw->>'name'",
  avatar: "t.raw->>'avatar'",
  is_suspended: "(t.raw->>'isSuspended')::boolean",
  custom_data: rawObject('customData'),
  profile: rawObject('profile'),
  application_id: "t.raw->>'applicationId'",
  last_sign_in_at: rawInstant('lastSignInAt'),
  created_at: rawInstant('createdAt'),
  updated_at: rawInstant('updatedAt'),
  raw: 't.raw',
  observed_at: 't.observed_at',
  compared_digest: 't.compared_digest',
};

const userColumns = Object.keys(userColumnsFromRaw);

/**
 * The head of both user upserts: `rows` as one JSON parameter (`t`), selected into every column of `users`.
 * Parsed as jsonb, once: `json_to_recordset` lexed the page to find each row's fields, then parsed each
 * `raw` (most of the page) a second time from its text into the jsonb column, where `jsonb_to_recordset`
 * takes `raw` as the value already parsed. A page of 400 users' insert ran ~30 % faster (pgbench, 3 pairs).
 */
const insertUsersFromJson = (rows: UserRow[], created?: ReadonlySet<string>) =>
  sql`insert into ${users} (${sql.raw(userColumns.map((column) => `"${column}"`).join(', '))})
      select ${sql.raw(userColumns.map((column) => userColumnsFromRaw[column]).join(', '))}
      from jsonb_to_recordset(${JSON.stringify(
        rows.map((row) => ({
          id: row.id,
          raw: row.raw,
          observed_at: row.observedAt?.toISOString(),
          compared_digest: row.comparedDigest ?? null,
          ...(created?.has(row.id) ? { created: true } : {}),
        })),
      )}::jsonb)
        as t(id text, raw jsonb, observed_at timestamptz, compared_digest text, created boolean)`;

/** A stored user overwritten by the row given unless the stored copy is newer (`updated_at`). */
const overwriteUnlessStoredNewer = sql`on conflict (id) do update set ${sql.raw(userColumns.filter((column) => column !== 'id').map((column) => `"${column}" = excluded."${column}"`).join(', '))}
      where ${users.updatedAt} <= excluded.updated_at`;

/**
 * Whether a user row (`incoming`, an alias) differs from the stored one (`stored`) in a compared column:
 * the test that the write guards itself with and that a page is first compared with, written once so
 * that both stay the same test.
 */
const differsInComparedColumns = (stored: string, incoming: string) =>
  sql.raw(`(${comparedColumns.map((column) => `${stored}."${column}"`).join(', ')}) is distinct from (${comparedColumns.map((column) => `${incoming}."${column}"`).join(', ')})`);

const comparable = (value: unknown): string =>
  value instanceof Date ? value.toISOString() : JSON.stringify(value ?? null, (_key, inner) => sortKeys(inner));

const sortKeys = (value: unknown): unknown =>
  value && typeof value === 'object' && !Array.isArray(value)
    ? Object.fromEntries(Object.entries(value as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
    : value;

const isEmptyObject = (value: unknown): boolean =>
  value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date) && Object.keys(value).length === 0;

/**
 * `comparable(a) === comparable(b)`, without serialising the common cases: the same primitive, two
 * instants, two empty objects (most users' customData and profile). Webhook deliveries compare every
 * field of every user they carry, mostly equal.
 */
const sameValue = (a: unknown, b: unknown): boolean => {
  if ((a ?? null) === (b ?? null)) return true;
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (isEmptyObject(a) && isEmptyObject(b)) return true;
  return comparable(a) === comparable(b);
};

export const differingUserFields = (stored: Partial<UserRow>, incoming: UserRow): UserField[] =>
  comparedFields.filter((field) => !sameValue(stored[field], incoming[field]));

/**
 * What writing `row` over the stored copy records: `null` when nothing needs writing (the stored copy is
 * as new or newer, or nothing compared differs). A new user is created (and suspended, if it is).
 */
export const userChanges = (
  current: Pick<UserRow, UserField> | undefined,
  row: UserRow,
  context?: ChangeContext,
): ChangeRecord[] | null => {
  const userId = row.id;
  const at = context ? { context } : {};
  if (!current) {
    return [
      { kind: 'user.created', userId, details: { username: row.username, primaryEmail: row.primaryEmail }, ...at },
      ...(row.isSuspended ? [{ kind: 'user.suspended', userId, ...at } as ChangeRecord] : []),
    ];
  }
  if (current.updatedAt!.getTime() > row.updatedAt!.getTime()) return null;
  const fields = differingUserFields(current, row);
  if (fields.length === 0) return null;
  const changes: ChangeRecord[] = [];
  // updatedAt alone (a password change, say) is written but is no change anyone asked about.
  const other = fields.filter((field) => field !== 'isSuspended' && field !== 'updatedAt');
  if (other.length > 0) changes.push({ kind: 'user.updated', userId, details: { fields: other }, ...at });
  if (fields.includes('isSuspended')) changes.push({ kind: row.isSuspended ? 'user.suspended' : 'user.unsuspended', userId, ...at });
  return changes;
};

/** The users among `ids` that are new or differ from the stored copy, with the changes writing them records. */
export type ComparedRow = Pick<UserRow, UserField> & { id: string };

/** The stored copies of `ids`, only the compared columns: `raw`, the largest, is never compared. */
export const readCompared = async (db: Database, ids: string[]): Promise<Map<string, ComparedRow>> => {
  const found = await db
    .select({ id: users.id, ...Object.fromEntries(comparedFields.map((field) => [field, users[field]])) } as { id: typeof users.id } & {
      [F in UserField]: (typeof users)[F];
    })
    .from(users)
    .where(sql`${users.id} = any(${sql.param(textArray(ids))}::text[])`);
  return new Map(found.map((row) => [row.id, row]));
};

const comparedRecordType = comparedColumnTypes.map(([column, type]) => `"${column}" ${type}`).join(', ');

/**
 * The ids among `rows` that are not stored, or stored older or as new and different in a compared column:
 * the test the write itself applies (`overwriteUnlessStoredNewer` and the distinct guard of `writeUsers`),
 * run on the page as one JSON parameter. Only these are read back and compared field by field, so a page
 * of unchanged users, most of a reconcile, costs one statement that returns nothing.
 */
const differingUserIds = async (db: Database, rows: UserRow[]): Promise<string[]> => {
  const page = rows.map(toComparedJson);
  const found = await namedRows<{ id: string }>(
    db,
    sql`select t.id from json_to_recordset(${JSON.stringify(page)}::json) as t(${sql.raw(comparedRecordType)})
      left join ${users} u on u.id = t.id
      where u.id is null or (u.updated_at <= t.updated_at
        and ${differsInComparedColumns('u', 't')})`,
  );
  return found.map((row) => row.id);
};

/**
 * The ids among `rows` whose stored digest is not theirs (not stored, changed, or stored without one):
 * the only ones that can differ, each with whether a row is stored for it. Ids and digests are a fraction
 * of the compared columns' JSON, which cost this process its serialising and sending and PostgreSQL its
 * parsing (jsonb, timestamps) for every user of an unchanged page.
 */
const undigestedIds = async (db: Database, ids: string[], digests: string[]): Promise<Map<string, boolean>> => {
  const found = await namedRows<{ id: string; stored: boolean }>(
    db,
    sql`select t.id, u.id is not null as stored from unnest(${sql.param(textArray(ids))}::text[], ${sql.param(textArray(digests))}::text[]) as t(id, digest)
      left join ${users} u on u.id = t.id
      where u.compared_digest is distinct from t.digest`,
  );
  return new Map(found.map((row) => [row.id, row.stored]));
};

const userWrites = (ids: string[], byId: Map<string, UserRow>, storedById: Map<string, ComparedRow>) => {
  const writes = new Map<string, ChangeRecord[]>();
  for (const id of ids) {
    const changes = userChanges(storedById.get(id), byId.get(id)!);
    if (changes) writes.set(id, changes);
  }
  return writes;
};

/**
 * Writes users that are new or differ, never replacing a copy Logto updated later (`updatedAt`), and never
 * resurrecting a user whose deletion was recorded after the snapshot was observed.
 */
export type ApplyUsersOptions = {
  /**
   * The caller found no user stored when its crawl began (a baseline into an empty database): every user
   * of the page goes straight to the write, which compares each with what is stored under its lock (users
   * other writers stored meanwhile, such as the crawl's own member pages, are written only where they
   * differ). The read of ids and digests first would find nearly all unstored: at scale 0.3 it was 75 of a
   * baseline's statements and round trips, 0.17 s of PostgreSQL's CPU. A wrong hint costs speed only.
   */
  nothingStored?: boolean;
};

export const applyUsers = async (db: Database, incoming: LogtoUser[], context: ChangeContext, options: ApplyUsersOptions = {}): Promise<ApplyResult> => {
  if (incoming.length === 0) return { changes: [], rowsWritten: 0 };
  const latest = new Map(incoming.map((user) => [user.id, user]));
  const pageIds = [...latest.keys()];
  const digests = pageIds.map((id) => userDigest(latest.get(id)!));
  if (options.nothingStored) {
    const byId = new Map(pageIds.map((id, index) => [id, toUserRow(latest.get(id)!, context.observedAt, digests[index])]));
    return guardedUserTransaction(db, byId, [...pageIds].sort(), context);
  }
  // Compared outside a transaction: an unchanged page costs one read of ids and digests, answered with no
  // row, and writes nothing. Rows are built, and compared column by column, only for the users it returns.
  const suspects = await undigestedIds(db, pageIds, digests);
  if (suspects.size === 0) return { changes: [], rowsWritten: 0 };
  const digestById = new Map(pageIds.map((id, index) => [id, digests[index]!]));
  const byId = new Map([...suspects.keys()].map((id) => [id, toUserRow(latest.get(id)!, context.observedAt, digestById.get(id))]));
  // Users not stored (all of a baseline's) have nothing to compare with: they go straight to the write,
  // which compares them again under the locks with whatever another writer stored meanwhile.
  const unstored = [...suspects].filter(([, stored]) => !stored).map(([id]) => id);
  const changed = await changedStoredUsers(db, byId, [...suspects].filter(([, stored]) => stored).map(([id]) => id));
  const writing = [...unstored, ...changed].sort();
  if (writing.length === 0) return { changes: [], rowsWritten: 0 };
  return guardedUserTransaction(db, byId, writing, context);
};

/** Writes those of `ids` (sorted; rows in `byId`) that are new or differ, in a transaction holding their entity locks. */
const guardedUserTransaction = async (db: Database, byId: Map<string, UserRow>, ids: string[], context: ChangeContext): Promise<ApplyResult> => {
  // Planned once per connection where the caller is a crawl (`PlanChoice`; webhooks and provisioning keep
  // plans for their values): its reads are by key, and a crawl's users page, the largest statement of a
  // baseline after the member write, was planned for its values every time (~1.8 ms of its bind).
  const attempt = (inserts: 'plain' | 'upsert') =>
    applyTransaction(db, context, (tx, last) => guardedUserWrite(tx, last, byId, ids, context, inserts), { entity: 'user', ids }, 'generic');
  try {
    return await attempt('plain');
  } catch (error) {
    // A writer that stored one of the users without their entity lock, after the read under it: the
    // page, rolled back whole, is compared and written again as an upsert.
    if (!isUniqueViolation(error)) throw error;
    return attempt('upsert');
  }
};

/** Of the stored users `ids` (rows in `byId`), those whose write would record a change, compared outside a transaction. */
const changedStoredUsers = async (db: Database, byId: Map<string, UserRow>, ids: string[]): Promise<string[]> => {
  if (ids.length === 0) return [];
  const sorted = [...ids].sort();
  const differingIds = new Set(await differingUserIds(db, sorted.map((id) => byId.get(id)!)));
  const differing = sorted.filter((id) => differingIds.has(id));
  if (differing.length === 0) return [];
  return [...userWrites(differing, byId, await readCompared(db, differing)).keys()];
};

/**
 * The transaction of `applyUsers`, holding the users' entity locks: compares `ids` again with what is
 * stored (another writer, a webhook, may have stored them since the read outside it), then writes them
 * and records their changes in one statement, which COMMIT follows in the same round trip (`last`).
 */
const guardedUserWrite = async (
  tx: Database,
  last: LastStatement,
  byId: Map<string, UserRow>,
  ids: string[],
  context: ChangeContext,
  inserts: 'plain' | 'upsert',
): Promise<ApplyResult> => {
  const { writes, created } = await lockedUserWrites(tx, byId, ids);
  if (writes.size === 0) return { changes: [], rowsWritten: 0 };
  // Every user to write unstored under the entity locks (all of a baseline's users pages but those a member
  // page overtook): a plain insert, without the speculative insertion of `on conflict` (a unique-index
  // pre-check, a speculative lock and a second WAL record per row) for a conflict the locks rule out.
  const plain = inserts === 'plain' && created.length === writes.size;
  const { written, recorded } = await writeUsersRecordingChanges(
    tx,
    guardedUserUpsert([...writes.keys()].map((id) => byId.get(id)!), created, context, plain),
    [...writes.values()].flat(),
    context,
    last,
  );
  return { changes: recorded, rowsWritten: written.size + recorded.length };
};

/**
 * What writing `ids` (rows from `byId`) records, compared under their entity locks with the stored copies:
 * another writer of these users may have committed since the caller's read. `created`: those not stored.
 */
const lockedUserWrites = async (tx: Database, byId: Map<string, UserRow>, ids: string[]) => {
  const lockedIds = [...new Set(ids)].sort();
  const storedById = await readCompared(tx, lockedIds);
  const writes = userWrites(lockedIds, byId, storedById);
  const created = [...writes.keys()].filter((id) => !storedById.has(id));
  return { storedById, writes, created };
};

/**
 * The upsert of `rows` that returns the ids it wrote. The guard makes a concurrent writer holding a newer
 * copy win, whatever the order of commits; and a row a concurrent writer has just inserted with the same
 * content is left alone, so its creation is recorded once, by that writer. A user of `created` (not
 * stored) whose deletion was recorded after the snapshot was observed is not brought back (the check
 * rides in the same statement, probed per row through access_changes_user_deletions_idx, which holds only deletions).
 * `created` is a flag of each row (`t.created`), not an array the rows are looked up in: under a generic
 * plan `= any($n)` of a parameter is a linear search per row (a constant array, in a plan made for its
 * values, is hashed), 400 × 400 comparisons for a baseline's users page (its median 7.2 → 10.0 ms, PROBE_STATS at scale 0.3).
 * With `plain` (every row unstored under the entity locks) it is a plain insert without the conflict clause:
 * a row stored meanwhile fails the statement, and `guardedUserTransaction` writes the page again as the upsert.
 */
const guardedUserUpsert = (rows: UserRow[], created: string[], context: ChangeContext, plain = false): SQL =>
  sql`${insertUsersFromJson(rows, new Set(created))}
      where not (t.created is true and coalesce((select true from ${accessChanges} a
        where a.user_id = t.id and a.kind = 'user.deleted' and a.observed_at > ${context.observedAt.toISOString()}::timestamptz limit 1), false))
      ${plain ? sql`` : sql`${overwriteUnlessStoredNewer}
        and ${differsInComparedColumns('users', 'excluded')}`}
      returning id`;

/**
 * The write half of `applyUsers`, inside the caller's transaction, so that a page of members can bring
 * in its users and its memberships in one: writes those of `ids` (rows from `byId`) that are new or
 * differ. The caller's transaction must already hold the users' entity locks (`applyTransaction`'s
 * `lock`, which takes them in the statement that makes the transaction's settings: one round trip per
 * page fewer than a statement of their own). The changes are returned for the caller to record; `held`
 * is which of `ids` the database holds afterwards.
 */
export const writeUsers = async (
  tx: Database,
  byId: Map<string, UserRow>,
  ids: string[],
  context: ChangeContext,
): Promise<{ changes: ChangeRecord[]; rowsWritten: number; held: Set<string> }> => {
  const { storedById, writes, created } = await lockedUserWrites(tx, byId, ids);
  const held = new Set(storedById.keys());
  if (writes.size === 0) return { changes: [], rowsWritten: 0, held };
  const written = await namedRows<{ id: string }>(tx, guardedUserUpsert([...writes.keys()].map((id) => byId.get(id)!), created, context));
  for (const { id } of written) held.add(id);
  return { changes: written.flatMap(({ id }) => writes.get(id) ?? []), rowsWritten: written.length, held };
};

/**
 * The statement that writes `rows` over the stored copies where the stored copy is not newer
 * (`updated_at`), inserting those not stored, and returns the ids written: a data-modifying CTE for a
 * caller that records its changes in the same statement. The rows go as one JSON parameter of a named
 * statement: a batch of webhook snapshots otherwise cost fifteen parameters a row for drizzle to build
 * and bind, and a statement text of its own for PostgreSQL to parse, per batch size.
 */
export const userRowsUpsert = (rows: UserRow[]): SQL =>
  sql`${insertUsersFromJson(rows)}
      ${overwriteUnlessStoredNewer}
      returning id`;

/**
 * Removes users with their memberships and member roles, recording each grant that ends with them
 * (Logto sends no membership event for these cascades).
 */
export const removeUsers = async (db: Database, userIds: string[], context: ChangeContext): Promise<ApplyResult> => {
  if (userIds.length === 0) return { changes: [], rowsWritten: 0 };
  const ids = [...new Set(userIds)].sort();
  return applyTransaction(db, context, async (tx) => {
    const held = await grantsHeldBy(tx, 'user', ids);
    const deleted = await tx.delete(users).where(inArray(users.id, ids)).returning({ id: users.id });
    const deletedIds = new Set(deleted.map((row) => row.id));
    const tombstones = await newTombstones(tx, 'user.deleted', 'userIds', ids.filter((id) => !deletedIds.has(id)));
    const changes: ChangeRecord[] = [
      ...endedGrants(held, (grant) => deletedIds.has(grant.userId), 'user.deleted'),
      ...deleted.map((row): ChangeRecord => ({ kind: 'user.deleted', userId: row.id })),
      // A deletion that arrives before the user's creation still leaves a tombstone, so the late
      // creation (observed earlier) cannot bring the user back.
      ...tombstones.map((id): ChangeRecord => ({ kind: 'user.deleted', userId: id, details: { stored: false } })),
    ];
    const logged = (await recordChanges(tx, changes, context)).length;
    const cascaded = changes.length - deleted.length - tombstones.length;
    return { changes, rowsWritten: deleted.length + cascaded + logged };
  }, { entity: 'user', ids });
};

