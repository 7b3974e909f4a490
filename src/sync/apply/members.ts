import { and, eq, inArray, lte, sql, type SQL } from 'drizzle-orm';
import { accessChanges, organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../../db/schema.js';
import { isUniqueViolation, type Database } from '../../db/client.js';
import { settledChangeId } from '../../db/change-frontier.js';
import { namedRows, namedShapeRows, textArray } from '../../db/prepared.js';
import type { LogtoUser } from '../../logto/index.js';
import { applyTransaction, changeCount, changesOfUser, recordChanges, recordWrittenChanges, type ApplyResult, type ChangeContext, type ChangeRecord } from './changes.js';
import { toUserRow, writeUsers } from './users.js';

/** One member of one organization as Logto reported it: a member, holding exactly these roles. */
export type MemberSnapshot = { userId: string; organizationRoleIds: string[] };

export type MembersResult = ApplyResult & {
  /** Users the database does not know: the caller fetches them and applies again. */
  unknownUserIds: string[];
  /** Roles the database does not know: the caller fetches them and applies again. */
  unknownRoleIds: string[];
  organizationKnown: boolean;
  /** With `readStoredMembers`: every stored member of the organization, read before anything was written. */
  storedMemberIds?: string[];
};

const pairKey = (...parts: string[]) => parts.join('\u0000');
/** A member's listed roles, each once: most members hold one role, which needs no set to be distinct. */
const distinctRoleIds = (member: MemberSnapshot): Iterable<string> =>
  member.organizationRoleIds.length < 2 ? member.organizationRoleIds : new Set(member.organizationRoleIds);
const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byMemberRole = (a: { userId: string; organizationRoleId: string }, b: { userId: string; organizationRoleId: string }) =>
  compare(a.userId, b.userId) || compare(a.organizationRoleId, b.organizationRoleId);

type StoredMembership = {
  organizationKnown: boolean;
  knownUsers: Set<string>;
  knownRoles: Set<string>;
  members: Set<string>;
  roles: { userId: string; organizationRoleId: string; observedAt: Date }[];
  allMembers: string[] | null;
  /** When set, the only members that may differ from the stored state: the rest were compared already. */
  differing?: Set<string>;
};

/** One array parameter, however many ids: a page's read is then cheap to build, send and plan. */
const idArray = (ids: string[]) => sql`any(${sql.param(textArray(ids))}::text[])`;

/** The row both reads of a page's stored membership return (roles as user, role, observed at). */
type StoredMembershipRow = {
  organization_known: boolean;
  known_users: string[];
  known_roles: string[];
  members: string[];
  roles: { u: string; r: string; o: string }[];
  all_members: string[] | null;
};

/** Everything a page of members is compared with, in one round trip: most pages then need nothing else. */
const readStoredMembership = async (
  db: Database,
  organizationId: string,
  userIds: string[],
  roleIds: string[],
  withMembers: boolean,
): Promise<StoredMembership> => {
  const [row] = await namedRows<StoredMembershipRow>(
    db,
    sql`select
      exists (select 1 from ${organizations} where id = ${organizationId}) as organization_known,
      coalesce((select json_agg(id) from ${users} where id = ${idArray(userIds)}), '[]'::json) as known_users,
      coalesce((select json_agg(id) from ${organizationRoles} where id = ${idArray(roleIds)}), '[]'::json) as known_roles,
      coalesce((select json_agg(user_id) from ${organizationMembers}
        where organization_id = ${organizationId} and user_id = ${idArray(userIds)}), '[]'::json) as members,
      coalesce((select json_agg(json_build_object('u', user_id, 'r', organization_role_id, 'o', observed_at)) from ${organizationMemberRoles}
        where organization_id = ${organizationId} and user_id = ${idArray(userIds)}), '[]'::json) as roles,
      ${withMembers ? sql`coalesce((select json_agg(user_id) from ${organizationMembers} where organization_id = ${organizationId}), '[]'::json)` : sql`null::json`} as all_members`,
  );
  return {
    organizationKnown: row!.organization_known,
    knownUsers: new Set(row!.known_users),
    knownRoles: new Set(row!.known_roles),
    members: new Set(row!.members),
    roles: row!.roles.map((role) => ({ userId: role.u, organizationRoleId: role.r, observedAt: new Date(role.o) })),
    allMembers: row!.all_members,
  };
};

/** `readDifferingMembership`'s statement, its values as placeholders (see `namedShapeRows`). */
const differingMembershipStatement = (withMembers: boolean): SQL =>
  sql`with page as (
        select u from unnest(${sql.placeholder('userIds')}::text[]) as t(u)
      ), wanted as (
        select u, r from unnest(${sql.placeholder('pairUsers')}::text[], ${sql.placeholder('pairRoles')}::text[]) as t(u, r)
      ), span as (
        select min(u) as lo, max(u) as hi from page
      ), stored_members as (
        select m.user_id as u from ${organizationMembers} m, span where m.organization_id = ${sql.placeholder('organizationId')} and m.user_id between span.lo and span.hi
      ), stored_roles as (
        select m.user_id as u, m.organization_role_id as r from ${organizationMemberRoles} m, span
        where m.organization_id = ${sql.placeholder('organizationId')} and m.user_id between span.lo and span.hi
      ), stored_any as (
        select exists (select 1 from stored_members) or exists (select 1 from stored_roles) as s
      ), differing as (
        select u from page except select u from stored_members
        union select u from (select u, r from wanted except select u, r from stored_roles) as granted
        union select u from (select u, r from stored_roles where u in (select u from page) except select u, r from wanted) as revoked
      ), differing_ids as (
        select case when (select s from stored_any) then array(select u from differing order by u) else array(select u from page) end as ids
      )
      select
        exists (select 1 from ${organizations} where id = ${sql.placeholder('organizationId')}) as organization_known,
        coalesce((select json_agg(id) from ${organizationRoles} where id = any(${sql.placeholder('roleIds')}::text[])), '[]'::json) as known_roles,
        to_json((select ids from differing_ids)) as differing,
        coalesce((select json_agg(id) from ${users} where id = any((select ids from differing_ids)::text[])), '[]'::json) as known_users,
        case when (select s from stored_any) then coalesce((select json_agg(user_id) from ${organizationMembers}
          where organization_id = ${sql.placeholder('organizationId')} and user_id = any((select ids from differing_ids)::text[])), '[]'::json) else '[]'::json end as members,
        case when (select s from stored_any) then coalesce((select json_agg(json_build_object('u', user_id, 'r', organization_role_id, 'o', observed_at)) from ${organizationMemberRoles}
          where organization_id = ${sql.placeholder('organizationId')} and user_id = any((select ids from differing_ids)::text[])), '[]'::json) else '[]'::json end as roles,
        ${withMembers ? sql`coalesce((select json_agg(user_id) from ${organizationMembers} where organization_id = ${sql.placeholder('organizationId')}), '[]'::json)` : sql`null::json`} as all_members`;

/**
 * What a page of member snapshots is compared with, as `readStoredMembership` returns it, but judged in
 * PostgreSQL: only the members that differ (not stored as members, or holding other roles than the page
 * says) come back with their stored rows; every other member of the page is a stored member, whose user
 * is therefore stored too, holding exactly its listed roles. The stored side is read by id range (a
 * page is a range of Logto's id order), one index range scan per table instead of a descent per member,
 * and an unchanged page, most of a reconcile, ships nothing back to be parsed and compared. Where the
 * page's range holds no stored member and no member role (every page of a baseline, unless another
 * writer stored some meanwhile, which this statement then sees), every member of the page differs: the
 * set operations, and a lookup per member of stored rows that cannot exist, are then skipped.
 */
const readDifferingMembership = async (
  db: Database,
  organizationId: string,
  members: MemberSnapshot[],
  userIds: string[],
  roleIds: string[],
  withMembers: boolean,
): Promise<StoredMembership> => {
  // The page's (user, role) pairs as the two columns they are sent as, without a tuple per pair.
  const pairUsers: string[] = [];
  const pairRoles: string[] = [];
  for (const member of members) {
    for (const roleId of distinctRoleIds(member)) {
      pairUsers.push(member.userId);
      pairRoles.push(roleId);
    }
  }
  const [row] = await namedShapeRows<StoredMembershipRow & { differing: string[] }>(db, `members.differing:${withMembers}`, () => differingMembershipStatement(withMembers), {
    organizationId,
    userIds: textArray(userIds),
    pairUsers: textArray(pairUsers),
    pairRoles: textArray(pairRoles),
    roleIds: textArray(roleIds),
  });
  const differing = new Set(row!.differing);
  const same = userIds.filter((id) => !differing.has(id));
  return {
    organizationKnown: row!.organization_known,
    // A stored membership holds its user (the apply functions remove a user's memberships with it).
    knownUsers: new Set([...same, ...row!.known_users]),
    knownRoles: new Set(row!.known_roles),
    members: new Set([...same, ...row!.members]),
    roles: row!.roles.map((role) => ({ userId: role.u, organizationRoleId: role.r, observedAt: new Date(role.o) })),
    allMembers: row!.all_members,
    differing,
  };
};

/**
 * One organization's stored members, each with its stored role ids: what a crawl compares its pages with
 * in this process. `changesAfter`: a settled change id taken before they were read (`settledChangeId`),
 * so a change with a later id may be missing from them.
 */
export type StoredMembers = Map<string, string[]> & { changesAfter: number };

/**
 * The stored members and member roles of `organizationIds`, one JSON object per organization that has
 * any: read once when their crawl starts, so that a reconcile compares each page in this process
 * (`memberDiffers`) and sends PostgreSQL only the members that differ. An organization without a stored
 * member is absent from the map.
 */
export const readStoredMembers = async (db: Database, organizationIds: string[]): Promise<Map<string, StoredMembers>> => {
  if (organizationIds.length === 0) return new Map();
  // An organization with no stored member is compared with nothing (every page is applied, and compared as
  // it is written), so nothing can be missing from its read: a baseline's organizations, read while its
  // own user and member pages hold transactions open, skip the wait for them.
  if ((await organizationsWithMembers(db, organizationIds, 1)).length === 0) return new Map();
  const changesAfter = await settledChangeId(db);
  const found = await namedRows<{ o: string; m: Record<string, string[]> }>(
    db,
    sql`select o, json_object_agg(u, r) as m from (
        select m.organization_id as o, m.user_id as u,
          coalesce(json_agg(r.organization_role_id) filter (where r.organization_role_id is not null), '[]'::json) as r
        from ${organizationMembers} m
        left join ${organizationMemberRoles} r on r.organization_id = m.organization_id and r.user_id = m.user_id
          -- Repeated for the roles' side: without it the generic plan read every member role (a sequential scan per call).
          and r.organization_id = ${idArray(organizationIds)}
        where m.organization_id = ${idArray(organizationIds)}
        group by m.organization_id, m.user_id
      ) s group by o`,
  );
  return new Map(found.map((row) => [row.o, Object.assign(new Map(Object.entries(row.m)), { changesAfter })]));
};

/**
 * The users whose membership or member roles in the organization changed after the change id
 * `changesAfter`, leaving out the changes of the sync run `excludeSyncRunId` (a crawl's own writes, made
 * knowing the stored state). Through `access_changes_organization_idx`: the range after a recent id.
 */
export const membersChangedAfter = async (
  db: Database,
  organizationId: string,
  changesAfter: number,
  excludeSyncRunId: number | null,
): Promise<string[]> =>
  (
    await namedRows<{ user_id: string }>(
      db,
      sql`select distinct user_id from ${accessChanges}
        where organization_id = ${organizationId} and id > ${changesAfter}
          and kind in ('member.added', 'member.removed', 'member_role.granted', 'member_role.revoked')
          ${excludeSyncRunId === null ? sql`` : sql`and sync_run_id is distinct from ${excludeSyncRunId}`}`,
    )
  ).map((row) => row.user_id);

/**
 * Whether a member as Logto lists it differs from the stored state: not a stored member, or holding
 * other roles than stored. The same test as `readDifferingMembership`'s `differing` (a page member not
 * stored, a listed role not stored, a stored role not listed), so a page compared here writes what the
 * compare statement would have had written: the members found differing go through `applyMembers`.
 */
export const memberDiffers = (stored: StoredMembers, member: MemberSnapshot): boolean => {
  const storedRoles = stored.get(member.userId);
  if (!storedRoles) return true;
  const wanted = new Set(member.organizationRoleIds);
  return wanted.size !== storedRoles.length || storedRoles.some((roleId) => !wanted.has(roleId));
};

type MembershipDiff = {
  toAdd: string[];
  grants: { userId: string; organizationRoleId: string }[];
  revokes: { userId: string; organizationRoleId: string; observedAt: Date }[];
};

/** What differs between `members` and the stored state, for the members whose user is in `knownUsers`. */
const membershipDiff = (
  members: MemberSnapshot[],
  stored: StoredMembership,
  knownUsers: Set<string>,
  withRoles: boolean,
  context: ChangeContext,
): MembershipDiff | null => {
  const known = members.filter((member) => knownUsers.has(member.userId) && (!stored.differing || stored.differing.has(member.userId)));
  const toAdd = known.filter((member) => !stored.members.has(member.userId)).map((member) => member.userId);
  const grants: MembershipDiff['grants'] = [];
  const revokes: MembershipDiff['revokes'] = [];
  if (withRoles) {
    // Nothing stored to compare with (every page of a baseline): each listed role of a known role is a
    // grant, and there is nothing to revoke; the sets below are built only when roles are stored.
    const storedKeys = stored.roles.length === 0 ? null : new Set(stored.roles.map((role) => pairKey(role.userId, role.organizationRoleId)));
    for (const member of known) {
      for (const roleId of distinctRoleIds(member)) {
        if (stored.knownRoles.has(roleId) && !storedKeys?.has(pairKey(member.userId, roleId))) {
          grants.push({ userId: member.userId, organizationRoleId: roleId });
        }
      }
    }
    if (stored.roles.length > 0) {
      const desiredByUser = new Map(known.map((member) => [member.userId, new Set(member.organizationRoleIds)]));
      for (const role of stored.roles) {
        if (!desiredByUser.get(role.userId)?.has(role.organizationRoleId) && role.observedAt.getTime() <= context.observedAt.getTime()) {
          revokes.push(role);
        }
      }
    }
  }
  return toAdd.length === 0 && grants.length === 0 && revokes.length === 0 ? null : { toAdd, grants, revokes };
};

/**
 * A page's rows are inserted as plain inserts (see `memberWrites`); when a concurrent writer stored one
 * of them after the page was compared, the page fails as a whole, rolled back, and is compared and written
 * again, this time skipping rows that are already there.
 */
const applyMemberships = async (
  db: Database,
  organizationId: string,
  members: MemberSnapshot[],
  context: ChangeContext,
  withRoles: boolean,
  options: ApplyMembersOptions = {},
): Promise<MembersResult> => {
  try {
    return await applyMembershipsOnce(db, organizationId, members, context, withRoles, options, false);
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
    return applyMembershipsOnce(db, organizationId, members, context, withRoles, options, true);
  }
};

const applyMembershipsOnce = async (
  db: Database,
  organizationId: string,
  members: MemberSnapshot[],
  context: ChangeContext,
  withRoles: boolean,
  options: ApplyMembersOptions,
  skipConflicts: boolean,
): Promise<MembersResult> => {
  const result: MembersResult = { changes: [], rowsWritten: 0, unknownUserIds: [], unknownRoleIds: [], organizationKnown: true };
  if (members.length === 0) return result;
  const userIds = [...new Set(members.map((member) => member.userId))].sort();
  const roleIds = withRoles ? [...new Set(members.flatMap((member) => member.organizationRoleIds))].sort() : [];
  const stored = withRoles
    ? await readDifferingMembership(db, organizationId, members, userIds, roleIds, options.readStoredMembers ?? false)
    : await readStoredMembership(db, organizationId, userIds, roleIds, options.readStoredMembers ?? false);
  if (stored.allMembers !== null) result.storedMemberIds = stored.allMembers;
  if (!stored.organizationKnown) return { ...result, organizationKnown: false };
  const bringing = (options.users ?? []).filter((user) => !stored.knownUsers.has(user.id));
  const offered = new Set(bringing.map((user) => user.id));
  result.unknownUserIds = userIds.filter((id) => !stored.knownUsers.has(id) && !offered.has(id));
  result.unknownRoleIds = roleIds.filter((id) => !stored.knownRoles.has(id));
  if (options.allOrNothing && (result.unknownUserIds.length > 0 || result.unknownRoleIds.length > 0)) return result;
  // What differs, judged against the stored state; most pages of a reconcile stop here without writing.
  const diff = membershipDiff(members, stored, stored.knownUsers, withRoles, context);
  if (!diff && bringing.length === 0) return result;

  // The users it brings are locked (for `writeUsers`) by the statement that makes the transaction's settings.
  const lock = bringing.length > 0 ? { entity: 'user' as const, ids: [...offered] } : undefined;
  // A page that only adds and grants (every page of a baseline) plans well without its values: the member
  // write's reads are key lookups and one range of later removals, and the upsert of users it brings reads
  // by key too (see `guardedUserUpsert`), so it is planned once per connection. A baseline's member pages
  // bring users whenever they overtake the users crawl (116-124 of 713 at scale 0.3), and planning their
  // statements for their values cost a millisecond or more each. Pages revoking roles (a reconcile's few
  // changed members) keep plans made for their values.
  const plans = (diff?.revokes.length ?? 0) === 0 ? 'generic' : 'custom';
  return applyTransaction(db, context, async (tx) => {
    const changes: ChangeRecord[] = [];
    let rowsWritten = 0;
    let written = diff;
    if (bringing.length > 0) {
      // The users go first in the change log: a member is added after its user is created.
      const rows = new Map(bringing.map((user) => [user.id, toUserRow(user, context.observedAt)]));
      const brought = await writeUsers(tx, rows, [...offered], context);
      changes.push(...brought.changes);
      rowsWritten += brought.rowsWritten;
      // A user whose deletion was recorded after this page was read stays out, and so do its memberships.
      result.unknownUserIds.push(...[...offered].filter((id) => !brought.held.has(id)));
      written = membershipDiff(members, stored, new Set([...stored.knownUsers, ...brought.held]), withRoles, context);
    }
    if (!written) {
      rowsWritten += (await recordChanges(tx, changes, context)).length;
      return { ...result, changes, rowsWritten };
    }
    const memberships = await writeMemberships(tx, organizationId, written, changes, context, options.countChanges ?? false, skipConflicts);
    return {
      ...result,
      changes: memberships.changes,
      ...(memberships.counted ? { counted: memberships.counted } : {}),
      rowsWritten: rowsWritten + memberships.rowsWritten,
    };
  }, lock, plans);
};

/**
 * No change of the member `t.u` of this organization matching `kind` was recorded after `observedAt`.
 * A scalar subquery, probed per row, through `access_changes_user_idx` alone (see `changesOfUser`): an
 * EXISTS would become a join, planned on statistics a baseline outruns.
 */
const noLaterChange = (organizationId: unknown, observedAt: unknown, kind: SQL) =>
  sql`(select true from ${changesOfUser(sql`t.u`)}
    where a.organization_id = ${organizationId} and a.observed_at > ${observedAt}::timestamptz and ${kind}
    limit 1) is null`;

/**
 * The removals and revokes of this organization recorded after `observedAt` (as `later_removals`): what a
 * page's memberships and grants observed then must not undo (`noLaterRemoval`). Read once per page through
 * `access_changes_member_removals_idx` (organization, observed_at; these kinds only), a range that holds
 * only what was recorded since the page was read: empty in a baseline, a few rows at most in a reconcile.
 * It was a lookup per written row (by user and organization), ~4 % of a baseline's PostgreSQL CPU for an
 * index a baseline leaves empty. Materialized: read once, whichever rows of the page probe it.
 */
const laterRemovals = (organizationId: unknown, observedAt: unknown) =>
  sql`later_removals as materialized (
      select user_id, organization_role_id, kind from ${accessChanges}
      where organization_id = ${organizationId} and kind in ('member.removed', 'member_role.revoked') and observed_at > ${observedAt}::timestamptz
    )`;

/** No removal or revoke of the member `t.u` matching `kind` (on `l`, a row of `later_removals`) was recorded after the page was observed. */
const noLaterRemoval = (kind: SQL) => sql`not exists (select from later_removals l where l.user_id = t.u and ${kind})`;

/**
 * `writeMemberships`' data-modifying CTEs, their values as placeholders (see `namedShapeRows`). Plain
 * inserts unless `skipConflicts`: `on conflict do nothing` inserts each row speculatively (a pre-check of
 * the unique index, a speculative lock taken and released, and a second WAL record to confirm the row), a
 * tenth of a baseline's WAL records, for a conflict that only a concurrent writer of the same membership
 * or grant, since the page was compared, can cause (see `applyMemberships`).
 */
const memberWrites = (skipConflicts: boolean): SQL =>
  sql`${laterRemovals(sql.placeholder('organizationId'), sql.placeholder('observedAt'))}, live_organization as (
      select id from ${organizations} where id = ${sql.placeholder('organizationId')} for key share
    ), live_users as (
      select id from ${users} where id = any(${sql.placeholder('adding')}::text[]) order by id for key share
    ), live_roles as (
      select id from ${organizationRoles} where id = any(${sql.placeholder('grantedRoles')}::text[]) order by id for key share
    ), live_members as (
      select user_id from ${organizationMembers} where organization_id = ${sql.placeholder('organizationId')} and user_id = any(${sql.placeholder('grantedUsers')}::text[])
        -- Nothing read when no grant needs a stored membership (every page of a baseline): planned by the
        -- organization alone, this read the organization's whole membership on every page of it.
        and cardinality(${sql.placeholder('grantedUsers')}::text[]) > 0
      order by user_id for key share
    ), added as (
      insert into ${organizationMembers} (organization_id, user_id, since, observed_at)
      select ${sql.placeholder('organizationId')}, t.u, ${sql.placeholder('observedAt')}::timestamptz, ${sql.placeholder('observedAt')}::timestamptz
      from live_users as t(u)
      where exists (select from live_organization)
        and ${noLaterRemoval(sql`l.kind = 'member.removed'`)}
      ${skipConflicts ? sql`on conflict do nothing` : sql``}
      returning user_id
    ), granted as (
      insert into ${organizationMemberRoles} (organization_id, user_id, organization_role_id, since, observed_at)
      select ${sql.placeholder('organizationId')}, t.u, t.r, ${sql.placeholder('observedAt')}::timestamptz, ${sql.placeholder('observedAt')}::timestamptz
      from unnest(${sql.placeholder('grantingUsers')}::text[], ${sql.placeholder('grantingRoles')}::text[]) as t(u, r)
      where t.r in (select id from live_roles) and (t.u in (select user_id from live_members) or t.u in (select user_id from added))
        and ${noLaterRemoval(sql`(l.kind = 'member.removed' or (l.kind = 'member_role.revoked' and l.organization_role_id = t.r))`)}
      ${skipConflicts ? sql`on conflict do nothing` : sql``}
      returning user_id, organization_role_id
    ), revoked as (
      delete from ${organizationMemberRoles} m
      using unnest(${sql.placeholder('revokingUsers')}::text[], ${sql.placeholder('revokingRoles')}::text[]) as t(u, r)
      where m.organization_id = ${sql.placeholder('organizationId')} and m.user_id = t.u and m.organization_role_id = t.r
        and m.observed_at <= ${sql.placeholder('observedAt')}::timestamptz
        and ${noLaterChange(sql.placeholder('organizationId'), sql.placeholder('observedAt'), sql`a.kind = 'member_role.granted' and a.organization_role_id = t.r`)}
      returning m.user_id, m.organization_role_id
    )`;

/** The change rows `writeMemberships`' writes make (see `recordWrittenChanges`). */
const memberChangesSelected = (): SQL =>
  sql`select 1, row_number() over (order by user_id), 'member.added', user_id, ${sql.placeholder('organizationId')}::text, null::text, null::jsonb from added
    union all select 2, row_number() over (order by user_id, organization_role_id), 'member_role.granted', user_id, ${sql.placeholder('organizationId')}::text, organization_role_id, null::jsonb from granted
    union all select 3, row_number() over (order by user_id, organization_role_id), 'member_role.revoked', user_id, ${sql.placeholder('organizationId')}::text, organization_role_id, null::jsonb from revoked`;

/**
 * Writes a membership diff and records its changes after `prior` (the users the page brings), in the
 * caller's transaction and in one statement: the memberships, grants and revokes are data-modifying CTEs
 * whose returned rows become the change rows. A page is then one round trip, not four. With
 * `countChanges`, the membership changes come back counted by kind (`counted`), not one record each.
 */
const writeMemberships = async (
  tx: Database,
  organizationId: string,
  diff: MembershipDiff,
  prior: ChangeRecord[],
  context: ChangeContext,
  countChanges: boolean,
  skipConflicts: boolean,
): Promise<ApplyResult> => {
  const observedAt = context.observedAt.toISOString();
  // A change recorded after this snapshot was observed is newer information: the snapshot must not undo
  // it. Each write leaves out what such a change covers (`noLaterRemoval`, `noLaterChange`), in the same statement.
  // Written in key order: two writers inserting overlapping rows in different orders wait on each other in a circle (deadlock).
  const adding = [...diff.toAdd].sort();
  // Once each: a member listed twice must not make the plain insert conflict with itself.
  const granting = [...diff.grants]
    .sort(byMemberRole)
    .filter((grant, index, sorted) => index === 0 || byMemberRole(sorted[index - 1]!, grant) !== 0)
    .map((grant) => ({ u: grant.userId, r: grant.organizationRoleId }));
  const revoking = [...diff.revokes].sort(byMemberRole).map((revoke) => ({ u: revoke.userId, r: revoke.organizationRoleId }));
  // Grants and revokes as two text arrays each (user, role), as the group write sends them: array input
  // is cheaper for PostgreSQL than parsing a JSON list into records.
  const pairsColumn = (pairs: { u: string; r: string }[], column: 'u' | 'r') => textArray(pairs.map((pair) => pair[column]));
  // The members whose grants need a stored membership (`live_members`). Without `skipConflicts` a member
  // being added needs none: its grants go with its insert, and were it stored meanwhile, that insert
  // fails the page, which is retried with `skipConflicts`, where a membership already stored is wanted.
  const addingIds = new Set(skipConflicts ? [] : adding);
  const grantedUsers = [...new Set(granting.map((grant) => grant.u))].filter((userId) => !addingIds.has(userId));
  const grantedRoles = [...new Set(granting.map((grant) => grant.r))].sort();
  // What the foreign keys checked row by row (a trigger and a lookup per written row, an eighth of
  // PostgreSQL's CPU in a baseline), checked once per page: the user, organization, role and membership
  // a row refers to exist, and stay until this transaction ends (FOR KEY SHARE, what the foreign key
  // checks took, so a deletion that removes grants waits for this page and then removes its rows too).
  // A row whose referent a concurrent deletion removed first is not written (the foreign key failed the page).
  // The members added are the locked users themselves (those of `adding` still stored, in id order):
  // joined back to the page's list instead, the planner (estimating one row) compared every pair in a
  // nested loop, 13 million comparisons in a baseline at scale 0.3.
  const recorded = await recordWrittenChanges(
    tx,
    {
      shape: skipConflicts ? 'members.write.skip-conflicts' : 'members.write',
      writes: () => memberWrites(skipConflicts),
      selected: memberChangesSelected,
      values: {
        organizationId,
        observedAt,
        adding: textArray(adding),
        grantedRoles: textArray(grantedRoles),
        grantedUsers: textArray(grantedUsers),
        grantingUsers: pairsColumn(granting, 'u'),
        grantingRoles: pairsColumn(granting, 'r'),
        revokingUsers: pairsColumn(revoking, 'u'),
        revokingRoles: pairsColumn(revoking, 'r'),
      },
    },
    prior,
    context,
    countChanges,
  );
  const { changes, counted } = recorded;
  const total = changeCount(recorded);
  // Each membership change is one row written besides its change row; a brought user's rows are counted by the caller.
  return { changes, ...(counted ? { counted } : {}), rowsWritten: total + (total - prior.length) };
};

export type ApplyMembersOptions = {
  /**
   * Write nothing when a user or role is unknown, only report them: a caller that brings them in
   * first and applies again then writes the page once instead of in two parts.
   */
  allOrNothing?: boolean;
  /**
   * Also read every stored member of the organization, in the same round trip as the comparison: a
   * crawl's candidates for removal are those its pages lack.
   */
  readStoredMembers?: boolean;
  /**
   * Snapshots of the members' users (a member list's items are whole users): those the database lacks
   * are written with the page, in its transaction, instead of being reported unknown.
   */
  users?: LogtoUser[];
  /**
   * Return the membership changes counted by kind (`ApplyResult.counted`) instead of one record each (the
   * users a page brings are still listed): for a caller that needs only totals, such as a crawl whose
   * report holds as many items as it keeps. The change rows and their events are the same.
   */
  countChanges?: boolean;
};

/**
 * Applies what Logto says about some members of one organization: each is a member holding exactly the
 * listed roles. Members not listed are left alone (see `removeMembers`).
 */
export const applyMembers = (
  db: Database,
  organizationId: string,
  members: MemberSnapshot[],
  context: ChangeContext,
  options: ApplyMembersOptions = {},
) => applyMemberships(db, organizationId, members, context, true, options);

/** A membership delta (`addedUserIds`): adds the memberships and leaves roles as they are. */
export const addMembers = (db: Database, organizationId: string, userIds: string[], context: ChangeContext) =>
  applyMemberships(db, organizationId, userIds.map((userId) => ({ userId, organizationRoleIds: [] })), context, false);

/**
 * Ends memberships (and with them the member's roles). A membership added after `context.observedAt`
 * is newer than the information behind this removal, so it stays.
 */
export const removeMembers = async (
  db: Database,
  organizationId: string,
  userIds: string[],
  context: ChangeContext,
): Promise<ApplyResult> => {
  if (userIds.length === 0) return { changes: [], rowsWritten: 0 };
  const ids = [...new Set(userIds)].sort();
  return applyTransaction(db, context, async (tx) => {
    const target = and(
      eq(organizationMembers.organizationId, organizationId),
      inArray(organizationMembers.userId, ids),
      lte(organizationMembers.observedAt, context.observedAt),
    );
    // The memberships to end, locked: their roles are removed and recorded by this transaction alone,
    // and no role can be granted to them in between.
    const ending = (await tx.select({ userId: organizationMembers.userId }).from(organizationMembers).where(target).orderBy(organizationMembers.userId).for('update')).map(
      (row) => row.userId,
    );
    if (ending.length === 0) return { changes: [], rowsWritten: 0 };
    const roles = await tx
      .delete(organizationMemberRoles)
      .where(and(eq(organizationMemberRoles.organizationId, organizationId), inArray(organizationMemberRoles.userId, ending)))
      .returning({ userId: organizationMemberRoles.userId, organizationRoleId: organizationMemberRoles.organizationRoleId });
    const removed = await tx
      .delete(organizationMembers)
      .where(and(eq(organizationMembers.organizationId, organizationId), inArray(organizationMembers.userId, ending)))
      .returning({ userId: organizationMembers.userId });
    const gone = new Set(removed.map((row) => row.userId));
    const changes: ChangeRecord[] = [
      ...roles
        .filter((role) => gone.has(role.userId))
        .map((role): ChangeRecord => ({ kind: 'member_role.revoked', organizationId, ...role, details: { reason: 'member.removed' } })),
      ...removed.map((row): ChangeRecord => ({ kind: 'member.removed', organizationId, userId: row.userId })),
    ];
    const logged = (await recordChanges(tx, changes, context)).length;
    return { changes, rowsWritten: changes.length + logged };
  });
};

/** Of `organizationIds`, those with a stored member (at most `limit` of them when given). */
export const organizationsWithMembers = async (db: Database, organizationIds: string[], limit?: number): Promise<string[]> =>
  (
    await namedRows<{ o: string }>(
      db,
      sql`select o from unnest(${sql.param(textArray(organizationIds))}::text[]) as o
        where exists (select 1 from ${organizationMembers} m where m.organization_id = o)
        ${limit === undefined ? sql`` : sql`limit ${limit}`}`,
    )
  ).map((row) => row.o);

/**
 * Every stored member of an organization. Named (`namedRows`): a crawl asks this once per organization
 * after its last page, and parsing and planning the text each time cost more than reading the few
 * members of most organizations.
 */
export const storedMemberIds = async (db: Database, organizationId: string): Promise<string[]> =>
  (await namedRows<{ user_id: string }>(db, sql`select user_id from ${organizationMembers} where organization_id = ${organizationId}`)).map((row) => row.user_id);

/** Some members of one organization as Logto listed them, one entry of `applyMembersOfOrganizations`. */
export type OrganizationMemberSnapshots = { organizationId: string; members: MemberSnapshot[] };

export type OrganizationsMembersResult = ApplyResult & {
  /** Roles the database does not know: the caller fetches them and applies again. */
  unknownRoleIds: string[];
  /** Organizations the database does not know (deleted meanwhile): nothing was written for them. */
  unknownOrganizationIds: string[];
};

/** The row of `readStoredMembershipsStatement`: what is stored for a batch of organizations and their pages. */
type StoredMembershipsRow = {
  known_organizations: string[];
  known_users: string[];
  known_roles: string[];
  members: { o: string; u: string }[];
  roles: { o: string; u: string; r: string; t: string }[];
};

/**
 * Everything the members of a batch of organizations are compared with, in one statement: each one's
 * stored members and member roles whole (the organizations batched are those listed with few members, so
 * reading them whole stays small; in a baseline they are empty), and which of the listed users and roles
 * exist.
 */
const readStoredMembershipsStatement = (): SQL =>
  sql`select
      coalesce((select json_agg(id) from ${organizations} where id = any(${sql.placeholder('organizationIds')}::text[])), '[]'::json) as known_organizations,
      coalesce((select json_agg(id) from ${users} where id = any(${sql.placeholder('userIds')}::text[])), '[]'::json) as known_users,
      coalesce((select json_agg(id) from ${organizationRoles} where id = any(${sql.placeholder('roleIds')}::text[])), '[]'::json) as known_roles,
      coalesce((select json_agg(json_build_object('o', organization_id, 'u', user_id)) from ${organizationMembers}
        where organization_id = any(${sql.placeholder('organizationIds')}::text[])), '[]'::json) as members,
      coalesce((select json_agg(json_build_object('o', organization_id, 'u', user_id, 'r', organization_role_id, 't', observed_at)) from ${organizationMemberRoles}
        where organization_id = any(${sql.placeholder('organizationIds')}::text[])), '[]'::json) as roles`;

/**
 * `writeMembershipsOfOrganizations`' data-modifying CTEs: `memberWrites` over several organizations, the
 * organization a column of every array. The same guards: referents locked FOR KEY SHARE (organizations,
 * users and roles each in id order), nothing written that a removal or revoke recorded after
 * `observedAt` covers, no revoke of a grant recorded after it. Rows are inserted in (organization, user,
 * role) order, the order in which a single organization's apply inserts its own: two writers of the same
 * rows meet in one order and never wait on each other in a circle. The live checks are wrapped in `is
 * true` so they stay hashed lookups: pulled up into joins, planned for a handful of rows, they became
 * nested loops over every pair.
 */
const batchMemberWrites = (skipConflicts: boolean): SQL =>
  sql`later_removals as materialized (
      select organization_id, user_id, organization_role_id, kind from ${accessChanges}
      where organization_id = any(${sql.placeholder('organizationIds')}::text[]) and kind in ('member.removed', 'member_role.revoked')
        and observed_at > ${sql.placeholder('observedAt')}::timestamptz
    ), live_organizations as (
      select id from ${organizations} where id = any(${sql.placeholder('organizationIds')}::text[]) order by id for key share
    ), live_users as (
      select id from ${users} where id = any(${sql.placeholder('addingUserIds')}::text[]) order by id for key share
    ), live_roles as (
      select id from ${organizationRoles} where id = any(${sql.placeholder('grantedRoles')}::text[]) order by id for key share
    ), live_members as (
      select m.organization_id as o, m.user_id as u from ${organizationMembers} m
        join unnest(${sql.placeholder('grantedOrganizations')}::text[], ${sql.placeholder('grantedUsers')}::text[]) as g(o, u) on m.organization_id = g.o and m.user_id = g.u
      -- Nothing read when no grant needs a stored membership (every batch of a baseline), as in memberWrites.
      where cardinality(${sql.placeholder('grantedUsers')}::text[]) > 0
      order by m.organization_id, m.user_id for key share of m
    ), added as (
      insert into ${organizationMembers} (organization_id, user_id, since, observed_at)
      select t.o, t.u, ${sql.placeholder('observedAt')}::timestamptz, ${sql.placeholder('observedAt')}::timestamptz
      from unnest(${sql.placeholder('addingOrganizations')}::text[], ${sql.placeholder('addingUsers')}::text[]) with ordinality as t(o, u, n)
      where (t.o in (select id from live_organizations) and t.u in (select id from live_users)) is true
        and not exists (select from later_removals l where l.organization_id = t.o and l.user_id = t.u and l.kind = 'member.removed')
      order by t.n
      ${skipConflicts ? sql`on conflict do nothing` : sql``}
      returning organization_id, user_id
    ), granted as (
      insert into ${organizationMemberRoles} (organization_id, user_id, organization_role_id, since, observed_at)
      select t.o, t.u, t.r, ${sql.placeholder('observedAt')}::timestamptz, ${sql.placeholder('observedAt')}::timestamptz
      from unnest(${sql.placeholder('grantingOrganizations')}::text[], ${sql.placeholder('grantingUsers')}::text[], ${sql.placeholder('grantingRoles')}::text[]) with ordinality as t(o, u, r, n)
      where t.r in (select id from live_roles) and ((t.o, t.u) in (select o, u from live_members) or (t.o, t.u) in (select organization_id, user_id from added))
        and not exists (select from later_removals l where l.organization_id = t.o and l.user_id = t.u
          and (l.kind = 'member.removed' or (l.kind = 'member_role.revoked' and l.organization_role_id = t.r)))
      order by t.n
      ${skipConflicts ? sql`on conflict do nothing` : sql``}
      returning organization_id, user_id, organization_role_id
    ), revoked as (
      delete from ${organizationMemberRoles} m
      using unnest(${sql.placeholder('revokingOrganizations')}::text[], ${sql.placeholder('revokingUsers')}::text[], ${sql.placeholder('revokingRoles')}::text[]) as t(o, u, r)
      where m.organization_id = t.o and m.user_id = t.u and m.organization_role_id = t.r
        and m.observed_at <= ${sql.placeholder('observedAt')}::timestamptz
        and ${noLaterChange(sql`t.o`, sql.placeholder('observedAt'), sql`a.kind = 'member_role.granted' and a.organization_role_id = t.r`)}
      returning m.organization_id, m.user_id, m.organization_role_id
    )`;

/** The change rows `batchMemberWrites` make, each organization's in the order a single apply records them. */
const batchMemberChangesSelected = (): SQL =>
  sql`select 1, row_number() over (order by organization_id, user_id), 'member.added', user_id, organization_id, null::text, null::jsonb from added
    union all select 2, row_number() over (order by organization_id, user_id, organization_role_id), 'member_role.granted', user_id, organization_id, organization_role_id, null::jsonb from granted
    union all select 3, row_number() over (order by organization_id, user_id, organization_role_id), 'member_role.revoked', user_id, organization_id, organization_role_id, null::jsonb from revoked`;

/** Writes the membership diffs of several organizations in one statement, recording their changes after `prior` (see `writeMemberships`). */
const writeMembershipsOfOrganizations = async (
  tx: Database,
  diffs: { organizationId: string; diff: MembershipDiff }[],
  prior: ChangeRecord[],
  context: ChangeContext,
  countChanges: boolean,
  skipConflicts: boolean,
): Promise<ApplyResult> => {
  const ordered = [...diffs].sort((a, b) => compare(a.organizationId, b.organizationId));
  const adding: [string, string][] = [];
  const granting: [string, string, string][] = [];
  const revoking: [string, string, string][] = [];
  for (const { organizationId, diff } of ordered) {
    for (const userId of [...new Set(diff.toAdd)].sort()) adding.push([organizationId, userId]);
    const grants = [...diff.grants].sort(byMemberRole).filter((grant, index, sorted) => index === 0 || byMemberRole(sorted[index - 1]!, grant) !== 0);
    for (const grant of grants) granting.push([organizationId, grant.userId, grant.organizationRoleId]);
    for (const revoke of [...diff.revokes].sort(byMemberRole)) revoking.push([organizationId, revoke.userId, revoke.organizationRoleId]);
  }
  // As in `writeMemberships`: without `skipConflicts` a member being added needs no stored membership for its grants.
  const addingKeys = new Set(skipConflicts ? [] : adding.map(([o, u]) => pairKey(o, u)));
  const granted = [...new Map(granting.map(([o, u]) => [pairKey(o, u), [o, u] as const])).entries()].filter(([key]) => !addingKeys.has(key)).map(([, pair]) => pair);
  const column = <T extends readonly string[]>(tuples: T[], index: number) => textArray(tuples.map((tuple) => tuple[index]!));
  const recorded = await recordWrittenChanges(
    tx,
    {
      shape: skipConflicts ? 'members.batch.write.skip-conflicts' : 'members.batch.write',
      writes: () => batchMemberWrites(skipConflicts),
      selected: batchMemberChangesSelected,
      values: {
        organizationIds: textArray(ordered.map((entry) => entry.organizationId)),
        observedAt: context.observedAt.toISOString(),
        addingUserIds: textArray([...new Set(adding.map(([, u]) => u))].sort()),
        grantedRoles: textArray([...new Set(granting.map(([, , r]) => r))].sort()),
        grantedOrganizations: column(granted, 0),
        grantedUsers: column(granted, 1),
        addingOrganizations: column(adding, 0),
        addingUsers: column(adding, 1),
        grantingOrganizations: column(granting, 0),
        grantingUsers: column(granting, 1),
        grantingRoles: column(granting, 2),
        revokingOrganizations: column(revoking, 0),
        revokingUsers: column(revoking, 1),
        revokingRoles: column(revoking, 2),
      },
    },
    prior,
    context,
    countChanges,
  );
  const total = changeCount(recorded);
  return { changes: recorded.changes, ...(recorded.counted ? { counted: recorded.counted } : {}), rowsWritten: total + (total - prior.length) };
};

/**
 * `applyMembers` for several organizations at once, all observed at `context.observedAt`: one statement
 * compares them all with the stored state, and one transaction writes the users they bring and then
 * every organization's memberships, grants and revokes in one statement, with their change rows. For
 * organizations listed with few members (most of a tenant's): applied one by one, each cost its own
 * compare, write, transaction and read-back, whatever its size. All or nothing: a failure writes nothing
 * for any of them. `users`: the members' user snapshots (as in `ApplyMembersOptions.users`); with
 * `allOrNothing`, nothing is written when a role is unknown, only reported.
 */
export const applyMembersOfOrganizations = async (
  db: Database,
  entries: OrganizationMemberSnapshots[],
  context: ChangeContext,
  options: Pick<ApplyMembersOptions, 'allOrNothing' | 'users' | 'countChanges'> = {},
): Promise<OrganizationsMembersResult> => {
  try {
    return await applyMembersOfOrganizationsOnce(db, entries, context, options, false);
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
    return applyMembersOfOrganizationsOnce(db, entries, context, options, true);
  }
};

const applyMembersOfOrganizationsOnce = async (
  db: Database,
  entries: OrganizationMemberSnapshots[],
  context: ChangeContext,
  options: Pick<ApplyMembersOptions, 'allOrNothing' | 'users' | 'countChanges'>,
  skipConflicts: boolean,
): Promise<OrganizationsMembersResult> => {
  const result: OrganizationsMembersResult = { changes: [], rowsWritten: 0, unknownRoleIds: [], unknownOrganizationIds: [] };
  const listed = entries.filter((entry) => entry.members.length > 0);
  if (listed.length === 0) return result;
  const organizationIds = [...new Set(listed.map((entry) => entry.organizationId))].sort();
  const userIds = [...new Set(listed.flatMap((entry) => entry.members.map((member) => member.userId)))].sort();
  const roleIds = [...new Set(listed.flatMap((entry) => entry.members.flatMap((member) => member.organizationRoleIds)))].sort();
  const [row] = await namedShapeRows<StoredMembershipsRow>(db, 'members.batch.stored', readStoredMembershipsStatement, {
    organizationIds: textArray(organizationIds),
    userIds: textArray(userIds),
    roleIds: textArray(roleIds),
  });
  const knownOrganizations = new Set(row!.known_organizations);
  const knownUsers = new Set(row!.known_users);
  const knownRoles = new Set(row!.known_roles);
  result.unknownOrganizationIds = organizationIds.filter((id) => !knownOrganizations.has(id));
  result.unknownRoleIds = roleIds.filter((id) => !knownRoles.has(id));
  if (options.allOrNothing && result.unknownRoleIds.length > 0) return result;
  const storedOf = new Map<string, StoredMembership>();
  for (const organizationId of organizationIds) {
    storedOf.set(organizationId, { organizationKnown: knownOrganizations.has(organizationId), knownUsers, knownRoles, members: new Set(), roles: [], allMembers: null });
  }
  for (const member of row!.members) storedOf.get(member.o)?.members.add(member.u);
  for (const role of row!.roles) storedOf.get(role.o)?.roles.push({ userId: role.u, organizationRoleId: role.r, observedAt: new Date(role.t) });
  const applying = listed.filter((entry) => knownOrganizations.has(entry.organizationId));
  const diffsWith = (known: Set<string>) =>
    applying.flatMap(({ organizationId, members }) => {
      const diff = membershipDiff(members, storedOf.get(organizationId)!, known, true, context);
      return diff ? [{ organizationId, diff }] : [];
    });
  const bringing = [...new Map((options.users ?? []).filter((user) => !knownUsers.has(user.id)).map((user) => [user.id, user])).values()];
  const diffs = diffsWith(knownUsers);
  if (diffs.length === 0 && bringing.length === 0) return result;
  const offered = bringing.map((user) => user.id);
  const lock = bringing.length > 0 ? { entity: 'user' as const, ids: offered } : undefined;
  const plans = diffs.some(({ diff }) => diff.revokes.length > 0) ? 'custom' : 'generic';
  return applyTransaction(
    db,
    context,
    async (tx) => {
      const changes: ChangeRecord[] = [];
      let rowsWritten = 0;
      let written = diffs;
      if (bringing.length > 0) {
        // The users go first in the change log: a member is added after its user is created.
        const rows = new Map(bringing.map((user) => [user.id, toUserRow(user, context.observedAt)]));
        const brought = await writeUsers(tx, rows, offered, context);
        changes.push(...brought.changes);
        rowsWritten += brought.rowsWritten;
        // A user whose deletion was recorded after these pages were read stays out, and so do its memberships.
        written = diffsWith(new Set([...knownUsers, ...brought.held]));
      }
      if (written.length === 0) {
        rowsWritten += (await recordChanges(tx, changes, context)).length;
        return { ...result, changes, rowsWritten };
      }
      const memberships = await writeMembershipsOfOrganizations(tx, written, changes, context, options.countChanges ?? false, skipConflicts);
      return {
        ...result,
        changes: memberships.changes,
        ...(memberships.counted ? { counted: memberships.counted } : {}),
        rowsWritten: rowsWritten + memberships.rowsWritten,
      };
    },
    lock,
    plans,
  );
};

/**
 * The stored members of each organization of `listed` that its pages did not list (organizations with
 * none are absent): a group's candidates for removal. The difference is taken in PostgreSQL, so a
 * group whose pages listed every stored member (every group of a baseline) gets no row back: reading
 * every stored member back, to drop in this process all but the few another writer stored meanwhile,
 * parsed one row per membership just written.
 */
export const storedMembersNotListed = async (db: Database, listed: { id: string; userIds: string[] }[]): Promise<Map<string, string[]>> => {
  const found = new Map<string, string[]>();
  if (listed.length === 0) return found;
  // The listed (organization, user) pairs as two columns.
  const listedOrganizations = listed.flatMap(({ id, userIds }) => userIds.map(() => id));
  const listedUsers = listed.flatMap(({ userIds }) => userIds);
  const stored = await namedRows<{ o: string; u: string }>(
    db,
    sql`select organization_id as o, user_id as u from ${organizationMembers} where organization_id = ${idArray(listed.map(({ id }) => id))}
      except select * from unnest(${sql.param(textArray(listedOrganizations))}::text[], ${sql.param(textArray(listedUsers))}::text[])`,
  );
  for (const { o, u } of stored) {
    const ids = found.get(o);
    if (ids) ids.push(u);
    else found.set(o, [u]);
  }
  return found;
};
