import { getTableName, sql, type Column, type SQL, type SQLWrapper } from 'drizzle-orm';

/**
 * A column always written as "table"."column". Drizzle leaves columns unqualified in single-table
 * selects, and inside a correlated subquery an unqualified name binds to the innermost table that
 * has it: outer references must be qualified.
 */
export const outer = (column: Column): SQL => sql`${sql.identifier(getTableName(column.table))}.${sql.identifier(column.name)}`;

/**
 * A timestamp as ISO 8601 UTC text with milliseconds, formatted by PostgreSQL. Used inside JSON
 * aggregates, where driver type parsers never run, so both drivers return the same text.
 */
export const isoText = (value: SQLWrapper): SQL<string> =>
  sql<string>`to_char(${value} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** A case-insensitive substring pattern for ILIKE, with the pattern characters of `text` escaped. */
export const containsPattern = (text: string): string => `%${text.replace(/[\\%_]/g, (character) => `\\${character}`)}%`;

export type RoleRef = { id: string; name: string };
export type RoleGrant = RoleRef & { since: Date };

/**
 * The organization roles one member holds, as a JSON array ordered by name: one correlated
 * subquery over the primary key of organization_member_roles (organization, user, role).
 */
export const memberRolesJson = (organizationId: SQLWrapper, userId: SQLWrapper): SQL<RawRoleGrant[]> =>
  sql<RawRoleGrant[]>`coalesce((
    select json_agg(json_build_object('id', r.id, 'name', r.name, 'since', ${isoText(sql`mr.since`)}) order by r.name, r.id)
    from organization_member_roles mr
    join organization_roles r on r.id = mr.organization_role_id
    where mr.organization_id = ${organizationId} and mr.user_id = ${userId}
  ), '[]'::json)`;

export type RawRoleGrant = { id: string; name: string; since: string };

export const toRoleGrants = (raw: RawRoleGrant[] | null | undefined): RoleGrant[] =>
  (raw ?? []).map((role) => ({ id: role.id, name: role.name, since: new Date(role.since) }));

/** A timestamp that may arrive as a Date (column mapping) or as text (raw queries). */
export const toDate = (value: Date | string): Date => (value instanceof Date ? value : new Date(value));
export const toDateOrNull = (value: Date | string | null | undefined): Date | null =>
  value === null || value === undefined ? null : toDate(value);
