import { and, eq, inArray } from 'drizzle-orm';
import { organizationMemberRoles, organizationRoles } from '../../../db/schema.js';
import type { Database } from '../client.js';

/** The stored type (`User` | `MachineToMachine`) of each of these roles; roles not stored are absent. */
export const findOrganizationRoleTypes = async (db: Database, roleIds: string[]): Promise<Map<string, string>> => {
  if (roleIds.length === 0) return new Map();
  const rows = await db
    .select({ id: organizationRoles.id, type: organizationRoles.type })
    .from(organizationRoles)
    .where(inArray(organizationRoles.id, roleIds));
  return new Map(rows.map((row) => [row.id, row.type]));
};

/** The stored role ids of each of these members of one organization (members without roles are absent). */
export const findMemberRoleIds = async (db: Database, organizationId: string, userIds: string[]): Promise<Map<string, string[]>> => {
  const result = new Map<string, string[]>();
  if (userIds.length === 0) return result;
  const rows = await db
    .select({ userId: organizationMemberRoles.userId, roleId: organizationMemberRoles.organizationRoleId })
    .from(organizationMemberRoles)
    .where(and(eq(organizationMemberRoles.organizationId, organizationId), inArray(organizationMemberRoles.userId, userIds)));
  for (const row of rows) result.set(row.userId, [...(result.get(row.userId) ?? []), row.roleId]);
  return result;
};
