import { and, asc, eq, inArray } from 'drizzle-orm';
import { accessChanges } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { accessChangeColumns, type AccessChange } from './changes.js';
import { toPaged, type Page, type Paged } from './pagination.js';
import { userExists } from './users.js';

/**
 * One period during which a user held a membership (role null) or an organization role. Times are
 * the `observed_at` of the change rows: when the grant or revoke was true in Logto.
 */
export type GrantInterval = {
  organizationId: string;
  organizationRoleId: string | null;
  /** Null when the log holds the end of a grant but not its beginning. */
  grantedAt: Date | null;
  revokedAt: Date | null;
  grantedBy: string | null;
  revokedBy: string | null;
  /** The id of the first change row of this interval: its sort key. */
  key: number;
};

const grantKinds = ['member.added', 'member.removed', 'member_role.granted', 'member_role.revoked', 'user.deleted'];

/**
 * Pairs a user's change rows (in id order) into intervals. An add or grant opens an interval
 * (a second one while open changes nothing); a removal or revoke closes it. Removing a member also
 * ends the roles it held in that organization, an organization.deleted row ends everything there,
 * and deleting the user ends everything, whether or not the writer logged each cascade.
 */
export const pairGrantIntervals = (changes: readonly AccessChange[]): GrantInterval[] => {
  const intervals: GrantInterval[] = [];
  const open = new Map<string, GrantInterval>();
  const keyOf = (organizationId: string, roleId: string | null) => `${organizationId}\u0000${roleId ?? ''}`;
  const close = (interval: GrantInterval, change: AccessChange) => {
    interval.revokedAt = change.observedAt;
    interval.revokedBy = change.source;
    open.delete(keyOf(interval.organizationId, interval.organizationRoleId));
  };
  const closeWhere = (change: AccessChange, predicate: (interval: GrantInterval) => boolean) => {
    for (const interval of [...open.values()]) if (predicate(interval)) close(interval, change);
  };
  for (const change of changes) {
    const organizationId = change.organizationId;
    const isMembership = change.kind === 'member.added' || change.kind === 'member.removed';
    const roleId = isMembership ? null : change.organizationRoleId;
    switch (change.kind) {
      case 'member.added':
      case 'member_role.granted': {
        if (organizationId === null || (!isMembership && roleId === null)) break;
        if (open.has(keyOf(organizationId, roleId))) break;
        const interval: GrantInterval = {
          organizationId,
          organizationRoleId: roleId,
          grantedAt: change.observedAt,
          revokedAt: null,
          grantedBy: change.source,
          revokedBy: null,
          key: change.id,
        };
        open.set(keyOf(organizationId, roleId), interval);
        intervals.push(interval);
        break;
      }
      case 'member.removed':
      case 'member_role.revoked': {
        if (organizationId === null || (!isMembership && roleId === null)) break;
        const interval = open.get(keyOf(organizationId, roleId));
        if (interval) close(interval, change);
        else {
          intervals.push({
            organizationId,
            organizationRoleId: roleId,
            grantedAt: null,
            revokedAt: change.observedAt,
            grantedBy: null,
            revokedBy: change.source,
            key: change.id,
          });
        }
        if (isMembership) closeWhere(change, (candidate) => candidate.organizationId === organizationId);
        break;
      }
      case 'organization.deleted':
        if (organizationId !== null) closeWhere(change, (candidate) => candidate.organizationId === organizationId);
        break;
      case 'user.deleted':
        closeWhere(change, () => true);
        break;
      default:
        break;
    }
  }
  return intervals.sort((left, right) => left.key - right.key);
};

export type GrantIntervalCursor = [key: number];

/**
 * When each of a user's memberships and roles began and ended, oldest first; works for deleted
 * users. Null when the user is unknown and has no history.
 */
export const listUserGrantIntervals = async (
  db: Database,
  userId: string,
  page: Page<GrantIntervalCursor>,
): Promise<Paged<GrantInterval, GrantIntervalCursor> | null> => {
  // One scan of the index on (user_id, id). The writer logs a member.removed / member_role.revoked
  // row for every user a cascade touches (user, organization or role deletion), so the user's own
  // rows are the whole story; pairGrantIntervals still closes everything at user.deleted.
  const changes = await db
    .select(accessChangeColumns)
    .from(accessChanges)
    .where(and(eq(accessChanges.userId, userId), inArray(accessChanges.kind, grantKinds)))
    .orderBy(asc(accessChanges.id));
  if (changes.length === 0 && !(await userExists(db, userId))) return null;
  const intervals = pairGrantIntervals(changes);
  const after = page.after?.[0];
  const remaining = after === undefined ? intervals : intervals.filter((interval) => interval.key > after);
  return toPaged(remaining.slice(0, page.limit + 1), page, (interval) => [interval.key]);
};
