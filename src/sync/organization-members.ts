import type { LogtoOrganizationMember } from '../logto/index.js';
import {
  applyMembers,
  applyOrganizationRoles,
  applyUsers,
  emptyResult,
  mergeResults,
  removeMembers,
  storedMemberIdsBetween,
  type ApplyResult,
  type StoredMemberRange,
  type ChangeContext,
} from './apply/index.js';
import type { SyncDeps } from './context.js';

export type OrganizationMembersResult = ApplyResult & {
  membersChecked: number;
  memberRolesChecked: number;
  /** With `deferGoneUsers`: members whose user Logto no longer has, left for the caller's user removal. */
  goneUserIds?: string[];
};

export type OrganizationMembersOptions = {
  /** Member pages requested ahead of the one being written (each through the shared budget). */
  ahead?: number;
  /** The member count if known (`usersCount`): all pages can be requested at once. */
  expectedTotal?: number | null;
  /**
   * Leave memberships of users deleted in Logto to the caller, which removes those users (with their
   * grants as cascades): a full sync does, so a deleted user shows in its report as itself.
   */
  deferGoneUsers?: boolean;
  /** Checked before each page: a crawl that failed elsewhere stops here too. */
  shouldStop?: () => boolean;
  /** The second pass over a list that moved: no third. */
  settling?: boolean;
};

/** Candidates for removal up to this many are confirmed one by one; more than that, by a second crawl. */
const confirmOneByOneLimit = 20;

/**
 * Applies one page of members, first bringing in whatever the page refers to that the database lacks:
 * a user created after the users crawl (the member item is itself a full user snapshot) or a role
 * created after the roles crawl.
 */
const applyMemberPage = async (
  deps: SyncDeps,
  organizationId: string,
  members: LogtoOrganizationMember[],
  context: ChangeContext,
  storedMembersBetween: StoredMemberRange,
): Promise<ApplyResult & { storedMemberIds?: string[] }> => {
  const db = deps.database.db;
  const snapshots = members.map((member) => ({
    userId: member.id,
    organizationRoleIds: member.organizationRoles.map((role) => role.id),
  }));
  // A member crawl beside the users crawl often meets users not stored yet: they are brought in from
  // the page itself, then the page is written once.
  const first = await applyMembers(db, organizationId, snapshots, context, { allOrNothing: true, storedMembersBetween });
  if (first.unknownUserIds.length === 0 && first.unknownRoleIds.length === 0) return first;
  const result: ApplyResult & { storedMemberIds?: string[] } = mergeResults(emptyResult(), first);
  if (first.storedMemberIds) result.storedMemberIds = first.storedMemberIds;
  const unknownUsers = new Set(first.unknownUserIds);
  mergeResults(result, await applyUsers(db, members.filter((member) => unknownUsers.has(member.id)), context));
  const roles = (await Promise.all(first.unknownRoleIds.map((id) => deps.logto.getOrganizationRole(id)))).filter(
    (role) => role !== null,
  );
  mergeResults(result, await applyOrganizationRoles(db, roles, context));
  return mergeResults(result, await applyMembers(db, organizationId, snapshots, context));
};

/**
 * Makes one organization's members and member roles in the database equal to Logto's, streaming page
 * by page. Logto orders members by user id, so each page covers a range of ids: stored members inside a
 * page's range that the page lacks are candidates for removal. Offset paging can skip a member when the
 * list changes during the crawl, so candidates are confirmed before anything is removed.
 */
export const syncOrganizationMembers = async (
  deps: SyncDeps,
  organizationId: string,
  base: Omit<ChangeContext, 'observedAt'>,
  options: OrganizationMembersOptions = {},
): Promise<OrganizationMembersResult> => {
  const db = deps.database.db;
  const result: OrganizationMembersResult = { ...emptyResult(), membersChecked: 0, memberRolesChecked: 0 };
  const candidates: string[] = [];
  const totals = new Set<number | null>();
  let previousLast: string | null = null;
  const crawlStartedAt = new Date();
  const pages = deps.logto
    .listOrganizationMembers(organizationId, { ahead: options.ahead ?? 1, expectedTotal: options.expectedTotal ?? null })
    [Symbol.asyncIterator]();
  for (;;) {
    const fallbackObservedAt = new Date();
    const next = await pages.next();
    if (next.done) break;
    if (options.shouldStop?.()) throw new Error('the crawl stopped');
    const { items, total } = next.value;
    const observedAt = next.value.requestedAt ?? fallbackObservedAt;
    totals.add(total);
    if (items.length === 0) continue;
    const sorted = [...items].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const last = sorted[sorted.length - 1]!.id;
    const applied = await applyMemberPage(deps, organizationId, sorted, { ...base, observedAt }, { after: previousLast, upTo: last });
    mergeResults(result, applied);
    result.membersChecked += items.length;
    result.memberRolesChecked += items.reduce((sum, item) => sum + item.organizationRoles.length, 0);
    const onPage = new Set(sorted.map((item) => item.id));
    const inRange = applied.storedMemberIds ?? (await storedMemberIdsBetween(db, organizationId, previousLast, last));
    candidates.push(...inRange.filter((id) => !onPage.has(id)));
    previousLast = last;
  }
  candidates.push(...(await storedMemberIdsBetween(db, organizationId, previousLast, null)));
  if (candidates.length > 0) await removeConfirmed(deps, organizationId, base, candidates, crawlStartedAt, options, result);
  // The list moved under the crawl (`Total-Number` changed): offset pages may have skipped a member.
  // Once more, which writes only what the first pass missed.
  if (new Set([...totals].filter((total) => total !== null)).size > 1 && !options.settling) {
    const again = await syncOrganizationMembers(deps, organizationId, base, { ...options, expectedTotal: null, settling: true });
    mergeResults(result, again);
    result.membersChecked = again.membersChecked;
    result.memberRolesChecked = again.memberRolesChecked;
    if (again.goneUserIds) result.goneUserIds = [...(result.goneUserIds ?? []), ...again.goneUserIds];
  }
  return result;
};

const removeConfirmed = async (
  deps: SyncDeps,
  organizationId: string,
  base: Omit<ChangeContext, 'observedAt'>,
  candidates: string[],
  crawlStartedAt: Date,
  options: OrganizationMembersOptions,
  result: OrganizationMembersResult,
): Promise<void> => {
  const db = deps.database.db;

  const { removed, goneUsers } = await confirmRemovedMembers(deps, organizationId, candidates, options);
  const deferred = new Set(options.deferGoneUsers ? goneUsers : []);
  if (options.deferGoneUsers) result.goneUserIds = [...deferred];
  // Only memberships that existed before the crawl began may go: one added since is newer than what we read.
  const removing = removed.filter((userId) => !deferred.has(userId));
  mergeResults(result, await removeMembers(db, organizationId, removing, { ...base, observedAt: crawlStartedAt }));
};

/** Of the candidates, the members Logto confirms are gone from the organization, and which of them are deleted users. */
const confirmRemovedMembers = async (
  deps: SyncDeps,
  organizationId: string,
  candidates: string[],
  options: OrganizationMembersOptions,
): Promise<{ removed: string[]; goneUsers: string[] }> => {
  if (candidates.length <= confirmOneByOneLimit) {
    const checks = await Promise.all(
      candidates.map(async (userId) => ({ userId, organizations: await deps.logto.getUserOrganizations(userId) })),
    );
    return {
      removed: checks
        .filter(({ organizations }) => organizations === null || !organizations.some((organization) => organization.id === organizationId))
        .map(({ userId }) => userId),
      goneUsers: checks.filter(({ organizations }) => organizations === null).map(({ userId }) => userId),
    };
  }
  const wanted = new Set(candidates);
  for await (const page of deps.logto.listOrganizationMembers(organizationId, { ahead: options.ahead ?? 1 })) {
    for (const item of page.items) wanted.delete(item.id);
  }
  const removed = [...wanted];
  if (!options.deferGoneUsers || removed.length === 0) return { removed, goneUsers: [] };
  const existing = new Set((await deps.logto.findUsersByIds(removed)).map((user) => user.id));
  return { removed, goneUsers: removed.filter((userId) => !existing.has(userId)) };
};

