import { and, asc, eq, gt, ilike, or, type SQL } from 'drizzle-orm';
import { organizationMembers, users } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { preparedRows, prepared } from '../prepared.js';
import { isoSql, memberRolesJsonSql, pageJsonText, userJsonText, userPiecesSql, type UserPieces } from './json-text.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';
import { containsPattern } from './sql.js';

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

const userDetailStatement = prepared(
  'find_user_json',
  `select ${userPiecesSql([
    `coalesce((select array_to_json(array_agg(x order by x.id)) from (
      select o.id, o.name, o.description, ${memberRolesJsonSql('m.organization_id', 'm.user_id', true)} as "organizationRoles",
        ${isoSql('m.since')} as since
      from organization_members m join organizations o on o.id = m.organization_id
      where m.user_id = u.id) x), '[]'::json) as organizations`,
  ])}
  from users u where u.id = $1`,
);

/** A user with every organization they belong to and their roles there, as the JSON of the API; null when unknown. */
export const findUserJson = async (db: Database, id: string): Promise<string | null> => {
  const [row] = await preparedRows<UserPieces>(db, userDetailStatement, [id]);
  return row ? userJsonText(row) : null;
};

export type UserOrganizationCursor = [organizationId: string];

const userOrganizationsSql = (after: boolean) => `
  select m.organization_id as key, (select row_to_json(x)::text from (
      select o.id, o.name, o.description, ${memberRolesJsonSql('m.organization_id', 'm.user_id', true)} as "organizationRoles",
        ${isoSql('m.since')} as since) x) as item
  from organization_members m join organizations o on o.id = m.organization_id
  where m.user_id = $1${after ? ' and m.organization_id > $3' : ''}
  order by m.organization_id limit $2`;
const userOrganizationsStatements = {
  first: prepared('list_user_organizations_json', userOrganizationsSql(false)),
  after: prepared('list_user_organizations_json_after', userOrganizationsSql(true)),
};

/**
 * The organizations of one user with the user's roles there and since when, ordered by organization id
 * (along the member index on (user_id, organization_id)), as the JSON list body of the API; null when
 * the user is unknown.
 */
export const listUserOrganizationsJson = async (
  db: Database,
  userId: string,
  page: Page<UserOrganizationCursor>,
): Promise<string | null> => {
  const rows = page.after
    ? await preparedRows<{ key: string; item: string }>(db, userOrganizationsStatements.after, [userId, fetchSize(page), page.after[0]])
    : await preparedRows<{ key: string; item: string }>(db, userOrganizationsStatements.first, [userId, fetchSize(page)]);
  // An empty page is the only case that needs to tell "no memberships" from "no such user".
  if (rows.length === 0 && !(await userExists(db, userId))) return null;
  return pageJsonText(rows, page.limit, (row) => row.item, (row) => [row.key]);
};
