import { and, asc, eq, gt, ilike, or, sql, type SQL } from 'drizzle-orm';
import { organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';
import { containsPattern } from './sql.js';
import { userColumns, type UserDto } from './users.js';

export type OrganizationRoleDto = {
  id: string;
  name: string;
  description: string | null;
  type: string;
};

export type OrganizationRoleFilters = {
  /** Case-insensitive substring of the name or description. */
  search?: string | undefined;
};

export type OrganizationRoleCursor = [id: string];

export const listOrganizationRoles = async (
  db: Database,
  filters: OrganizationRoleFilters,
  page: Page<OrganizationRoleCursor>,
): Promise<Paged<OrganizationRoleDto, OrganizationRoleCursor>> => {
  const conditions: (SQL | undefined)[] = [];
  if (filters.search) {
    const pattern = containsPattern(filters.search);
    conditions.push(or(ilike(organizationRoles.name, pattern), ilike(organizationRoles.description, pattern)));
  }
  if (page.after) conditions.push(gt(organizationRoles.id, page.after[0]));
  const rows = await db
    .select({
      id: organizationRoles.id,
      name: organizationRoles.name,
      description: organizationRoles.description,
      type: organizationRoles.type,
    })
    .from(organizationRoles)
    .where(and(...conditions))
    .orderBy(asc(organizationRoles.id))
    .limit(fetchSize(page));
  return toPaged(rows, page, (row) => [row.id]);
};

export const organizationRoleExists = async (db: Database, id: string): Promise<boolean> => {
  const [row] = await db.select({ id: organizationRoles.id }).from(organizationRoles).where(eq(organizationRoles.id, id));
  return row !== undefined;
};

/** A member holding a role: the user, the organization where they hold it, since when, and since when they are a member. */
export type OrganizationRoleMember = UserDto & {
  organization: { id: string; name: string };
  since: Date;
  memberSince: Date;
};

export type OrganizationRoleMemberCursor = [organizationId: string, userId: string];

/**
 * Every organization member holding one role, ordered by (organization id, user id) along the
 * index on (organization_role_id, organization_id, user_id); null when the role is unknown.
 */
export const listOrganizationRoleMembers = async (
  db: Database,
  organizationRoleId: string,
  page: Page<OrganizationRoleMemberCursor>,
): Promise<Paged<OrganizationRoleMember, OrganizationRoleMemberCursor> | null> => {
  const rows = await db
    .select({
      ...userColumns,
      organizationId: organizations.id,
      organizationName: organizations.name,
      since: organizationMemberRoles.since,
      memberSince: organizationMembers.since,
    })
    .from(organizationMemberRoles)
    .innerJoin(
      organizationMembers,
      and(
        eq(organizationMembers.organizationId, organizationMemberRoles.organizationId),
        eq(organizationMembers.userId, organizationMemberRoles.userId),
      ),
    )
    .innerJoin(users, eq(users.id, organizationMemberRoles.userId))
    .innerJoin(organizations, eq(organizations.id, organizationMemberRoles.organizationId))
    .where(
      and(
        eq(organizationMemberRoles.organizationRoleId, organizationRoleId),
        page.after
          ? sql`(${organizationMemberRoles.organizationId}, ${organizationMemberRoles.userId}) > (${page.after[0]}, ${page.after[1]})`
          : undefined,
      ),
    )
    .orderBy(asc(organizationMemberRoles.organizationId), asc(organizationMemberRoles.userId))
    .limit(fetchSize(page));
  if (rows.length === 0 && !(await organizationRoleExists(db, organizationRoleId))) return null;
  const members = rows.map(({ organizationId, organizationName, ...rest }) => ({
    ...rest,
    organization: { id: organizationId, name: organizationName },
  }));
  return toPaged(members, page, (row) => [row.organization.id, row.id]);
};
