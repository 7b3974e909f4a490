import { and, eq, inArray, lte, or, sql } from 'drizzle-orm';
import { organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../../db/schema.js';
import type { Database } from '../../db/client.js';
import { changedSince, recordChanges, type ApplyResult, type ChangeContext, type ChangeRecord } from './changes.js';

/** One member of one organization as Logto reported it: a member, holding exactly these roles. */
export type MemberSnapshot = { userId: string; organizationRoleIds: string[] };

export type MembersResult = ApplyResult & {
  /** Users the database does not know: the caller fetches them and applies again. */
  unknownUserIds: string[];
  /** Roles the database does not know: the caller fetches them and applies again. */
  unknownRoleIds: string[];
  organizationKnown: boolean;
};

const pairKey = (...parts: string[]) => parts.join('\u0000');

const applyMemberships = async (
  db: Database,
  organizationId: string,
  members: MemberSnapshot[],
  context: ChangeContext,
  withRoles: boolean,
): Promise<MembersResult> => {
  const empty: MembersResult = { changes: [], rowsWritten: 0, unknownUserIds: [], unknownRoleIds: [], organizationKnown: true };
  if (members.length === 0) return empty;
  return db.transaction(async (tx) => {
    const [organization] = await tx.select({ id: organizations.id }).from(organizations).where(eq(organizations.id, organizationId));
    if (!organization) return { ...empty, organizationKnown: false };
    const userIds = [...new Set(members.map((member) => member.userId))].sort();
    const knownUsers = new Set(
      (await tx.select({ id: users.id }).from(users).where(inArray(users.id, userIds))).map((row) => row.id),
    );
    const roleIds = [...new Set(members.flatMap((member) => member.organizationRoleIds))];
    const knownRoles = new Set(
      roleIds.length === 0
        ? []
        : (await tx.select({ id: organizationRoles.id }).from(organizationRoles).where(inArray(organizationRoles.id, roleIds))).map(
            (row) => row.id,
          ),
    );
    const later = await changedSince(tx, ['member.removed', 'member_role.granted', 'member_role.revoked'], context.observedAt, {
      organizationId,
      userIds: userIds.filter((id) => knownUsers.has(id)),
    });
    const removedLater = new Set(later.filter((c) => c.kind === 'member.removed').map((c) => c.userId!));
    const grantedLater = new Set(later.filter((c) => c.kind === 'member_role.granted').map((c) => pairKey(c.userId!, c.organizationRoleId!)));
    const revokedLater = new Set(later.filter((c) => c.kind === 'member_role.revoked').map((c) => pairKey(c.userId!, c.organizationRoleId!)));

    const eligible = members.filter((member) => knownUsers.has(member.userId) && !removedLater.has(member.userId));
    const changes: ChangeRecord[] = [];
    let rowsWritten = 0;
    if (eligible.length > 0) {
      const added = await tx
        .insert(organizationMembers)
        .values(eligible.map((member) => ({ organizationId, userId: member.userId, since: context.observedAt, observedAt: context.observedAt })))
        .onConflictDoNothing()
        .returning({ userId: organizationMembers.userId });
      rowsWritten += added.length;
      changes.push(...added.map(({ userId }): ChangeRecord => ({ kind: 'member.added', organizationId, userId })));
    }

    if (withRoles && eligible.length > 0) {
      const stored = await tx
        .select({
          userId: organizationMemberRoles.userId,
          organizationRoleId: organizationMemberRoles.organizationRoleId,
          observedAt: organizationMemberRoles.observedAt,
        })
        .from(organizationMemberRoles)
        .where(
          and(
            eq(organizationMemberRoles.organizationId, organizationId),
            inArray(organizationMemberRoles.userId, eligible.map((member) => member.userId)),
          ),
        );
      const storedByKey = new Map(stored.map((row) => [pairKey(row.userId, row.organizationRoleId), row]));
      const grants: { userId: string; organizationRoleId: string }[] = [];
      const revokes: { userId: string; organizationRoleId: string }[] = [];
      for (const member of eligible) {
        const desired = new Set(member.organizationRoleIds.filter((id) => knownRoles.has(id)));
        for (const roleId of desired) {
          const key = pairKey(member.userId, roleId);
          if (!storedByKey.has(key) && !revokedLater.has(key)) grants.push({ userId: member.userId, organizationRoleId: roleId });
        }
      }
      const eligibleById = new Map(eligible.map((member) => [member.userId, new Set(member.organizationRoleIds)]));
      for (const row of stored) {
        const key = pairKey(row.userId, row.organizationRoleId);
        if (eligibleById.get(row.userId)?.has(row.organizationRoleId)) continue;
        if (grantedLater.has(key) || row.observedAt.getTime() > context.observedAt.getTime()) continue;
        revokes.push({ userId: row.userId, organizationRoleId: row.organizationRoleId });
      }
      if (grants.length > 0) {
        const granted = await tx
          .insert(organizationMemberRoles)
          .values(grants.map((grant) => ({ organizationId, ...grant, since: context.observedAt, observedAt: context.observedAt })))
          .onConflictDoNothing()
          .returning({ userId: organizationMemberRoles.userId, organizationRoleId: organizationMemberRoles.organizationRoleId });
        rowsWritten += granted.length;
        changes.push(...granted.map((grant): ChangeRecord => ({ kind: 'member_role.granted', organizationId, ...grant })));
      }
      if (revokes.length > 0) {
        const revoked = await tx
          .delete(organizationMemberRoles)
          .where(
            and(
              eq(organizationMemberRoles.organizationId, organizationId),
              or(
                ...revokes.map((revoke) =>
                  and(eq(organizationMemberRoles.userId, revoke.userId), eq(organizationMemberRoles.organizationRoleId, revoke.organizationRoleId)),
                ),
              ),
            ),
          )
          .returning({ userId: organizationMemberRoles.userId, organizationRoleId: organizationMemberRoles.organizationRoleId });
        rowsWritten += revoked.length;
        changes.push(...revoked.map((revoke): ChangeRecord => ({ kind: 'member_role.revoked', organizationId, ...revoke })));
      }
    }
    rowsWritten += await recordChanges(tx, changes, context);
    return {
      changes,
      rowsWritten,
      unknownUserIds: userIds.filter((id) => !knownUsers.has(id)),
      unknownRoleIds: withRoles ? roleIds.filter((id) => !knownRoles.has(id)) : [],
      organizationKnown: true,
    };
  });
};

/**
 * Applies what Logto says about some members of one organization: each is a member holding exactly the
 * listed roles. Members not listed are left alone (see `removeMembers`).
 */
export const applyMembers = (db: Database, organizationId: string, members: MemberSnapshot[], context: ChangeContext) =>
  applyMemberships(db, organizationId, members, context, true);

/** A membership delta (`addedUserIds`): adds the memberships and leaves roles as they are. */
export const addMembers = (db: Database, organizationId: string, userIds: string[], context: ChangeContext) =>
  applyMemberships(db, organizationId, userIds.map((userId) => ({ userId, organizationRoleIds: [] })), context, false);

/**
 * Ends memberships (and with them the member's roles). A membership added after `context.observedAt`
 * is newer than the information behind this removal, so it stays.
 */
export const removeMembers = async (
  db: Database,
  organizationId: string,
  userIds: string[],
  context: ChangeContext,
): Promise<ApplyResult> => {
  if (userIds.length === 0) return { changes: [], rowsWritten: 0 };
  const ids = [...new Set(userIds)].sort();
  return db.transaction(async (tx) => {
    const target = and(
      eq(organizationMembers.organizationId, organizationId),
      inArray(organizationMembers.userId, ids),
      lte(organizationMembers.observedAt, context.observedAt),
    );
    const roles = await tx
      .select({ userId: organizationMemberRoles.userId, organizationRoleId: organizationMemberRoles.organizationRoleId })
      .from(organizationMemberRoles)
      .where(
        and(
          eq(organizationMemberRoles.organizationId, organizationId),
          inArray(organizationMemberRoles.userId, ids),
        ),
      );
    const removed = await tx.delete(organizationMembers).where(target).returning({ userId: organizationMembers.userId });
    const gone = new Set(removed.map((row) => row.userId));
    const changes: ChangeRecord[] = [
      ...roles
        .filter((role) => gone.has(role.userId))
        .map((role): ChangeRecord => ({ kind: 'member_role.revoked', organizationId, ...role, details: { reason: 'member.removed' } })),
      ...removed.map((row): ChangeRecord => ({ kind: 'member.removed', organizationId, userId: row.userId })),
    ];
    const logged = await recordChanges(tx, changes, context);
    return { changes, rowsWritten: changes.length + logged };
  });
};

/** Stored members of an organization whose user id falls in (after, upTo], in Logto's order (by user id). */
export const storedMemberIdsBetween = async (
  db: Database,
  organizationId: string,
  after: string | null,
  upTo: string | null,
): Promise<string[]> => {
  const result = await db
    .select({ userId: organizationMembers.userId })
    .from(organizationMembers)
    .where(
      and(
        eq(organizationMembers.organizationId, organizationId),
        after === null ? undefined : sql`${organizationMembers.userId} collate "C" > ${after}`,
        upTo === null ? undefined : sql`${organizationMembers.userId} collate "C" <= ${upTo}`,
      ),
    );
  return result.map((row) => row.userId);
};
