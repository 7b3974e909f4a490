import { asc } from 'drizzle-orm';
import {
  organizationMemberRoles,
  organizationMembers,
  organizationRoles,
  organizations,
  users,
} from '../../db/schema.js';
import type { Database } from '../../src/db/client.js';
import type { TenantSnapshot } from '../../src/simulator/state.js';

/**
 * The access state in a comparable shape, from the mirror or from the simulated tenant: equality of the
 * two is what "the database equals Logto" means in these tests.
 */
export type AccessState = {
  users: Record<string, { username: string | null; primaryEmail: string | null; name: string | null; isSuspended: boolean; customData: unknown; updatedAt: number }>;
  organizations: Record<string, { name: string; description: string | null }>;
  organizationRoles: Record<string, { name: string; description: string | null }>;
  memberships: Record<string, Record<string, string[]>>;
};

export const mirrorState = async (db: Database): Promise<AccessState> => {
  const state: AccessState = { users: {}, organizations: {}, organizationRoles: {}, memberships: {} };
  for (const user of await db.select().from(users).orderBy(asc(users.id))) {
    state.users[user.id] = {
      username: user.username,
      primaryEmail: user.primaryEmail,
      name: user.name,
      isSuspended: user.isSuspended,
      customData: user.customData,
      updatedAt: user.updatedAt.getTime(),
    };
  }
  for (const organization of await db.select().from(organizations).orderBy(asc(organizations.id))) {
    state.organizations[organization.id] = { name: organization.name, description: organization.description };
  }
  for (const role of await db.select().from(organizationRoles).orderBy(asc(organizationRoles.id))) {
    state.organizationRoles[role.id] = { name: role.name, description: role.description };
  }
  for (const member of await db.select().from(organizationMembers)) {
    ((state.memberships[member.organizationId] ??= {})[member.userId] ??= []);
  }
  for (const role of await db.select().from(organizationMemberRoles).orderBy(asc(organizationMemberRoles.organizationRoleId))) {
    state.memberships[role.organizationId]![role.userId]!.push(role.organizationRoleId);
  }
  for (const members of Object.values(state.memberships)) for (const roleIds of Object.values(members)) roleIds.sort();
  return state;
};

export const tenantState = (snapshot: TenantSnapshot): AccessState => {
  const state: AccessState = { users: {}, organizations: {}, organizationRoles: {}, memberships: {} };
  for (const user of [...snapshot.users].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    state.users[user.id] = {
      username: user.username,
      primaryEmail: user.primaryEmail,
      name: user.name,
      isSuspended: user.isSuspended,
      customData: user.customData,
      updatedAt: user.updatedAt,
    };
  }
  for (const organization of snapshot.organizations) {
    state.organizations[organization.id] = { name: organization.name, description: organization.description };
  }
  for (const role of snapshot.organizationRoles) {
    state.organizationRoles[role.id] = { name: role.name, description: role.description };
  }
  for (const [organizationId, members] of Object.entries(snapshot.memberships)) {
    if (Object.keys(members).length === 0) continue;
    state.memberships[organizationId] = Object.fromEntries(
      Object.entries(members).map(([userId, roleIds]) => [userId, [...roleIds].sort()]),
    );
  }
  return state;
};
