import { inArray, sql } from 'drizzle-orm';
import { organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../../db/schema.js';
import type { Database } from '../../db/client.js';
import type { ChangeKind, ChangeRecord } from './changes.js';

type Grant = { organizationId: string; userId: string; organizationRoleId?: string };
export type HeldGrants = { memberships: Grant[]; roles: Grant[] };

/**
 * Ends the memberships and member roles that deleting these users, organizations or roles takes along
 * (the foreign keys cascade, as in Logto), and returns exactly the rows this transaction removed, so that
 * every ended grant is recorded once. The owners are locked first: no grant can be added to them
 * until the caller has deleted them, and a concurrent removal of the same grants is either seen as done
 * or waited for, never recorded twice.
 */
export const grantsHeldBy = async (
  tx: Database,
  by: 'user' | 'organization' | 'organization_role',
  ids: string[],
): Promise<HeldGrants> => {
  const owner = by === 'user' ? users : by === 'organization' ? organizations : organizationRoles;
  await tx.select({ id: owner.id }).from(owner).where(inArray(owner.id, ids)).orderBy(owner.id).for('update');
  const memberOf = by === 'user' ? organizationMembers.userId : organizationMembers.organizationId;
  // Memberships before their roles, the order every writer locks them in (see removeMembers): no deadlock.
  if (by !== 'organization_role') await tx.select({ userId: organizationMembers.userId }).from(organizationMembers).where(inArray(memberOf, ids)).for('update');
  const roles = await tx
    .delete(organizationMemberRoles)
    .where(
      by === 'user'
        ? // Through the memberships just locked (every member role has one): member roles have no index by user.
          sql`(${organizationMemberRoles.organizationId}, ${organizationMemberRoles.userId}) in (
            select ${organizationMembers.organizationId}, ${organizationMembers.userId} from ${organizationMembers} where ${inArray(organizationMembers.userId, ids)})`
        : inArray(by === 'organization' ? organizationMemberRoles.organizationId : organizationMemberRoles.organizationRoleId, ids),
    )
    .returning({
      organizationId: organizationMemberRoles.organizationId,
      userId: organizationMemberRoles.userId,
      organizationRoleId: organizationMemberRoles.organizationRoleId,
    });
  if (by === 'organization_role') return { memberships: [], roles };
  const memberships = await tx
    .delete(organizationMembers)
    .where(inArray(memberOf, ids))
    .returning({ organizationId: organizationMembers.organizationId, userId: organizationMembers.userId });
  return { memberships, roles };
};

/** The change records of grants that ended because `reason` deleted their owner (`ended` says which did). */
export const endedGrants = (grants: HeldGrants, ended: (grant: Grant) => boolean, reason: ChangeKind): ChangeRecord[] => [
  ...grants.roles.filter(ended).map((role): ChangeRecord => ({ kind: 'member_role.revoked', ...role, details: { reason } })),
  ...grants.memberships.filter(ended).map((membership): ChangeRecord => ({ kind: 'member.removed', ...membership, details: { reason } })),
];
