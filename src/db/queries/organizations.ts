import { and, asc, eq, exists, gt, ilike, or, sql, type SQL } from 'drizzle-orm';
import { organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';
import { containsPattern, memberRolesJson, outer, toRoleGrants, type RoleGrant } from './sql.js';
import { userColumns, type UserDto } from './users.js';

export type OrganizationDto = {
  id: string;
  name: string;
  description: string | null;
  customData: Record<string, unknown>;
  isMfaRequired: boolean;
  createdAt: Date;
};

const organizationColumns = {
  id: organizations.id,
  name: organizations.name,
  description: organizations.description,
  customData: organizations.customData,
  isMfaRequired: organizations.isMfaRequired,
  createdAt: organizations.createdAt,
};

export type OrganizationFilters = {
  /** Case-insensitive substring of the name or description. */
  search?: string | undefined;
};

export type OrganizationCursor = [id: string];

export const listOrganizations = async (
  db: Database,
  filters: OrganizationFilters,
  page: Page<OrganizationCursor>,
): Promise<Paged<OrganizationDto, OrganizationCursor>> => {
  const conditions: (SQL | undefined)[] = [];
  if (filters.search) {
    const pattern = containsPattern(filters.search);
    conditions.push(or(ilike(organizations.name, pattern), ilike(organizations.description, pattern)));
  }
  if (page.after) conditions.push(gt(organizations.id, page.after[0]));
  const rows = await db
    .select(organizationColumns)
    .from(organizations)
    .where(and(...conditions))
    .orderBy(asc(organizations.id))
    .limit(fetchSize(page));
  return toPaged(rows, page, (row) => [row.id]);
};

export const organizationExists = async (db: Database, id: string): Promise<boolean> => {
  const [row] = await db.select({ id: organizations.id }).from(organizations).where(eq(organizations.id, id));
  return row !== undefined;
};

export type OrganizationDetail = OrganizationDto & { memberCount: number };

/** One organization with its member count (an index-only count over the member primary key); null when unknown. */
export const findOrganization = async (db: Database, id: string): Promise<OrganizationDetail | null> => {
  const [row] = await db
    .select({
      ...organizationColumns,
      memberCount: sql<number>`(select count(*) from organization_members m where m.organization_id = ${outer(organizations.id)})`.mapWith(
        Number,
      ),
    })
    .from(organizations)
    .where(eq(organizations.id, id));
  return row ?? null;
};

export type OrganizationMember = UserDto & { organizationRoles: RoleGrant[]; since: Date };

export type OrganizationMemberFilters = {
  /** Only members holding this organization role (by id). */
  roleId?: string | undefined;
  /** Only members holding an organization role of this name. */
  roleName?: string | undefined;
};

export type OrganizationMemberCursor = [userId: string];

/**
 * Members of one organization ordered by user id (along the member primary key), each with the
 * roles they hold there; null when the organization is unknown.
 */
export const listOrganizationMembers = async (
  db: Database,
  organizationId: string,
  filters: OrganizationMemberFilters,
  page: Page<OrganizationMemberCursor>,
): Promise<Paged<OrganizationMember, OrganizationMemberCursor> | null> => {
  const conditions: (SQL | undefined)[] = [eq(organizationMembers.organizationId, organizationId)];
  if (page.after) conditions.push(gt(organizationMembers.userId, page.after[0]));
  if (filters.roleId !== undefined || filters.roleName !== undefined) {
    const roleConditions: (SQL | undefined)[] = [
      eq(organizationMemberRoles.organizationId, outer(organizationMembers.organizationId)),
      eq(organizationMemberRoles.userId, outer(organizationMembers.userId)),
    ];
    if (filters.roleId !== undefined) roleConditions.push(eq(organizationMemberRoles.organizationRoleId, filters.roleId));
    if (filters.roleName !== undefined) roleConditions.push(eq(organizationRoles.name, filters.roleName));
    conditions.push(
      exists(
        db
          .select({ one: sql`1` })
          .from(organizationMemberRoles)
          .innerJoin(organizationRoles, eq(organizationRoles.id, organizationMemberRoles.organizationRoleId))
          .where(and(...roleConditions)),
      ),
    );
  }
  const rows = await db
    .select({
      ...userColumns,
      since: organizationMembers.since,
      organizationRoles: memberRolesJson(outer(organizationMembers.organizationId), outer(organizationMembers.userId)),
    })
    .from(organizationMembers)
    .innerJoin(users, eq(users.id, organizationMembers.userId))
    .where(and(...conditions))
    .orderBy(asc(organizationMembers.userId))
    .limit(fetchSize(page));
  if (rows.length === 0 && !(await organizationExists(db, organizationId))) return null;
  return toPaged(
    rows.map((row) => ({ ...row, organizationRoles: toRoleGrants(row.organizationRoles) })),
    page,
    (row) => [row.id],
  );
};
