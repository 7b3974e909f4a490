import { and, asc, eq, gt, ilike, or, sql, type SQL } from 'drizzle-orm';
import { organizationMembers, organizations, users } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';
import { containsPattern, isoText, memberRolesJson, outer, toRoleGrants, type RawRoleGrant, type RoleGrant } from './sql.js';

/**
 * A Logto user as this service stores it, with Logto's field names. The read API and provisioning
 * (which returns the user it just wrote) share this shape.
 */
export type UserDto = {
  id: string;
  username: string | null;
  primaryEmail: string | null;
  primaryPhone: string | null;
  name: string | null;
  avatar: string | null;
  isSuspended: boolean;
  customData: Record<string, unknown>;
  profile: Record<string, unknown>;
  applicationId: string | null;
  lastSignInAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
};

/** The columns of a `UserDto`, for selects that join users with other tables. */
export const userColumns = {
  id: users.id,
  username: users.username,
  primaryEmail: users.primaryEmail,
  primaryPhone: users.primaryPhone,
  name: users.name,
  avatar: users.avatar,
  isSuspended: users.isSuspended,
  customData: users.customData,
  profile: users.profile,
  applicationId: users.applicationId,
  lastSignInAt: users.lastSignInAt,
  createdAt: users.createdAt,
  updatedAt: users.updatedAt,
};

export type UserFilters = {
  /** Case-insensitive substring of username, primary email or name. */
  search?: string | undefined;
  isSuspended?: boolean | undefined;
  /** Only members of this organization. */
  organizationId?: string | undefined;
};

export type UserCursor = [id: string];

const searchCondition = (search: string): SQL => {
  const pattern = containsPattern(search);
  return or(ilike(users.username, pattern), ilike(users.primaryEmail, pattern), ilike(users.name, pattern)) as SQL;
};

/** Users ordered by id. With `organizationId`, the walk runs along that organization's member index. */
export const listUsers = async (
  db: Database,
  filters: UserFilters,
  page: Page<UserCursor>,
): Promise<Paged<UserDto, UserCursor>> => {
  const conditions: SQL[] = [];
  if (filters.search) conditions.push(searchCondition(filters.search));
  if (filters.isSuspended !== undefined) conditions.push(eq(users.isSuspended, filters.isSuspended));
  let rows: UserDto[];
  if (filters.organizationId !== undefined) {
    if (page.after) conditions.push(gt(organizationMembers.userId, page.after[0]));
    rows = await db
      .select(userColumns)
      .from(organizationMembers)
      .innerJoin(users, eq(users.id, organizationMembers.userId))
      .where(and(eq(organizationMembers.organizationId, filters.organizationId), ...conditions))
      .orderBy(asc(organizationMembers.userId))
      .limit(fetchSize(page));
  } else {
    if (page.after) conditions.push(gt(users.id, page.after[0]));
    rows = await db
      .select(userColumns)
      .from(users)
      .where(and(...conditions))
      .orderBy(asc(users.id))
      .limit(fetchSize(page));
  }
  return toPaged(rows, page, (row) => [row.id]);
};

export const userExists = async (db: Database, id: string): Promise<boolean> => {
  const [row] = await db.select({ id: users.id }).from(users).where(eq(users.id, id));
  return row !== undefined;
};

/** One user by id, or null. */
export const getUser = async (db: Database, id: string): Promise<UserDto | null> => {
  const [row] = await db.select(userColumns).from(users).where(eq(users.id, id));
  return row ?? null;
};

/** A membership seen from the user's side: the organization, the member's roles in it, and since when. */
export type UserOrganization = {
  id: string;
  name: string;
  description: string | null;
  organizationRoles: RoleGrant[];
  since: Date;
};

export type UserDetail = UserDto & { organizations: UserOrganization[] };

type RawUserOrganization = { id: string; name: string; description: string | null; since: string; organizationRoles: RawRoleGrant[] };

const toUserOrganization = (raw: RawUserOrganization): UserOrganization => ({
  id: raw.id,
  name: raw.name,
  description: raw.description,
  organizationRoles: toRoleGrants(raw.organizationRoles),
  since: new Date(raw.since),
});

/** A user with every organization they belong to and their roles there, in one query; null when unknown. */
export const findUser = async (db: Database, id: string): Promise<UserDetail | null> => {
  const [row] = await db
    .select({
      ...userColumns,
      organizations: sql<RawUserOrganization[]>`coalesce((
        select json_agg(json_build_object(
          'id', o.id, 'name', o.name, 'description', o.description, 'since', ${isoText(sql`m.since`)},
          'organizationRoles', ${memberRolesJson(sql`m.organization_id`, sql`m.user_id`)}
        ) order by o.id)
        from organization_members m
        join organizations o on o.id = m.organization_id
        where m.user_id = ${outer(users.id)}
      ), '[]'::json)`,
    })
    .from(users)
    .where(eq(users.id, id));
  if (!row) return null;
  const { organizations: rawOrganizations, ...user } = row;
  return { ...user, organizations: rawOrganizations.map(toUserOrganization) };
};

export type UserOrganizationCursor = [organizationId: string];

/**
 * The organizations of one user (ordered by organization id, along the member index on
 * (user_id, organization_id)); null when the user is unknown.
 */
export const listUserOrganizations = async (
  db: Database,
  userId: string,
  page: Page<UserOrganizationCursor>,
): Promise<Paged<UserOrganization, UserOrganizationCursor> | null> => {
  const rows = await db
    .select({
      id: organizations.id,
      name: organizations.name,
      description: organizations.description,
      since: organizationMembers.since,
      organizationRoles: memberRolesJson(outer(organizationMembers.organizationId), outer(organizationMembers.userId)),
    })
    .from(organizationMembers)
    .innerJoin(organizations, eq(organizations.id, organizationMembers.organizationId))
    .where(
      and(
        eq(organizationMembers.userId, userId),
        page.after ? gt(organizationMembers.organizationId, page.after[0]) : undefined,
      ),
    )
    .orderBy(asc(organizationMembers.organizationId))
    .limit(fetchSize(page));
  // An empty page is the only case that needs to tell "no memberships" from "no such user".
  if (rows.length === 0 && !(await userExists(db, userId))) return null;
  return toPaged(
    rows.map((row) => ({ ...row, organizationRoles: toRoleGrants(row.organizationRoles) })),
    page,
    (row) => [row.id],
  );
};
