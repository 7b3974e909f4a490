import { inArray } from 'drizzle-orm';
import { organizationMemberRoles, organizationMembers } from '../../../db/schema.js';
import type { Database } from '../../db/client.js';
import type { ChangeKind, ChangeRecord } from './changes.js';

type Grant = { organizationId: string; userId: string; organizationRoleId?: string };
export type HeldGrants = { memberships: Grant[]; roles: Grant[] };

/**
 * The memberships and member roles that deleting these users, organizations or roles takes along (the
 * foreign keys cascade, as in Logto). Read before the delete, so that every ended grant is recorded.
 */
export const grantsHeldBy = async (
  tx: Database,
  by: 'user' | 'organization' | 'organization_role',
  ids: string[],
): Promise<HeldGrants> => {
  const roles = await tx
    .select({
      organizationId: organizationMemberRoles.organizationId,
      userId: organizationMemberRoles.userId,
      organizationRoleId: organizationMemberRoles.organizationRoleId,
    })
    .from(organizationMemberRoles)
    .where(
      inArray(
        by === 'user'
          ? organizationMemberRoles.userId
          : by === 'organization'
            ? organizationMemberRoles.organizationId
            : organizationMemberRoles.organizationRoleId,
        ids,
      ),
    );
  if (by === 'organization_role') return { memberships: [], roles };
  const memberships = await tx
    .select({ organizationId: organizationMembers.organizationId, userId: organizationMembers.userId })
    .from(organizationMembers)
    .where(inArray(by === 'user' ? organizationMembers.userId : organizationMembers.organizationId, ids));
  return { memberships, roles };
};

/** The change records of grants that ended because `reason` deleted their owner (`ended` says which did). */
export const endedGrants = (grants: HeldGrants, ended: (grant: Grant) => boolean, reason: ChangeKind): ChangeRecord[] => [
  ...grants.roles.filter(ended).map((role): ChangeRecord => ({ kind: 'member_role.revoked', ...role, details: { reason } })),
  ...grants.memberships.filter(ended).map((membership): ChangeRecord => ({ kind: 'member.removed', ...membership, details: { reason } })),
];
