import { and, asc, eq, gt, ilike, or, sql, type SQL } from 'drizzle-orm';
import { organizations } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';
import { prepared, preparedRows, type PreparedStatement } from '../prepared.js';
import { isoSql, memberRolesJsonSql, pageJsonText, userJsonText, userPiecesSql, type UserPieces } from './json-text.js';
import { containsPattern, outer } from './sql.js';

export type OrganizationDto = {
  id: string;
  name: string;
  description: string | null;
  customData: Record<string, unknown>;
  isMfaRequired: boolean;
  createdAt: Date;
};

/** The columns an organization is answered with (the API, access events). */
export const organizationColumns = {
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

export type OrganizationMemberFilters = {
  /** Only members holding this organization role (by id). */
  roleId?: string | undefined;
  /** Only members holding an organization role of this name. */
  roleName?: string | undefined;
};

export type OrganizationMemberCursor = [userId: string];

type MemberRow = UserPieces & { key: string };

/** One statement per shape of the question (first page or after a cursor; which role filter), each prepared once. */
const memberStatements = new Map<string, PreparedStatement>();
const memberStatement = (after: boolean, filter: 'roleId' | 'roleName' | null): PreparedStatement => {
  const name = `list_organization_members_json_${after ? 'after' : 'first'}_${filter ?? 'all'}`;
  let statement = memberStatements.get(name);
  if (!statement) {
    const roleCondition =
      filter === null
        ? ''
        : ` and exists (select 1 from organization_member_roles fr join organization_roles fro on fro.id = fr.organization_role_id
            where fr.organization_id = m.organization_id and fr.user_id = m.user_id
            and ${filter === 'roleId' ? 'fr.organization_role_id' : 'fro.name'} = $3)`;
    statement = prepared(
      name,
      `select m.user_id as key, ${userPiecesSql([
        `${memberRolesJsonSql('m.organization_id', 'm.user_id', true)} as "organizationRoles"`,
        `${isoSql('m.since')} as since`,
      ])}
      from organization_members m join users u on u.id = m.user_id
      where m.organization_id = $1${after ? ` and m.user_id > $${filter === null ? 3 : 4}` : ''}${roleCondition}
      order by m.user_id limit $2`,
    );
    memberStatements.set(name, statement);
  }
  return statement;
};

/**
 * Members of one organization ordered by user id (along the member primary key), each with the roles
 * they hold there, as the JSON list body of the API; null when the organization is unknown.
 */
export const listOrganizationMembersJson = async (
  db: Database,
  organizationId: string,
  filters: OrganizationMemberFilters,
  page: Page<OrganizationMemberCursor>,
): Promise<string | null> => {
  const filter = filters.roleId !== undefined ? 'roleId' : filters.roleName !== undefined ? 'roleName' : null;
  const values: unknown[] = [organizationId, fetchSize(page)];
  if (filter !== null) values.push(filters.roleId ?? filters.roleName);
  if (page.after) values.push(page.after[0]);
  const rows = await preparedRows<MemberRow>(db, memberStatement(page.after !== undefined, filter), values);
  if (rows.length === 0 && !(await organizationExists(db, organizationId))) return null;
  return pageJsonText(rows, page.limit, userJsonText, (row) => [row.key]);
};
