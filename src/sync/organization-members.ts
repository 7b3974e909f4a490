import { lastChangeId } from '../db/change-frontier.js';
import type { LogtoOrganizationMember, LogtoUser, Page } from '../logto/index.js';
import {
  applyMembers,
  applyMembersOfOrganizations,
  applyOrganizationRoles,
  emptyResult,
  memberDiffers,
  membersChangedAfter,
  mergeResults,
  removeMembers,
  storedMemberIds,
  storedMembersNotListed,
  type ApplyResult,
  type ChangeContext,
  type MemberSnapshot,
  type StoredMembers,
} from './apply/index.js';
import type { SyncDeps } from './context.js';
import { batchObservedAt, pageBatches } from './page-batches.js';

/** Roles a page granted that the database does not know (created after the roles crawl), read from Logto; those deleted since are left out. */
const fetchOrganizationRoles = async (deps: SyncDeps, ids: string[]) =>
  (await Promise.all(ids.map((id) => deps.logto.getOrganizationRole(id)))).filter((role) => role !== null);

export type OrganizationMembersResult = ApplyResult & {
  membersChecked: number;
  memberRolesChecked: number;
  /** With `deferGoneUsers`: members whose user Logto no longer has, left for the caller's user removal. */
  goneUserIds?: string[];
  /**
   * With `deferRecompare`: the compare of the members changed in the database after the stored members
   * were read, given the last change id read after this crawl's pages (`lastChangeId`). Its result holds
   * what it removed and its gone users; what it applied goes to `onApplied` as the pages' did.
   */
  recompare?: (lastChangeId: number) => Promise<OrganizationMembersResult>;
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
  /**
   * Takes each page's result as it is applied, in page order, instead of the returned result holding
   * them: a large organization's changes then need not stay in memory until its last page.
   */
  onApplied?: (applied: ApplyResult) => void;
  /**
   * How many batches of pages may be applied at once, asked before each (default 4): a caller crawling
   * several organizations lets the last large ones go wider than when all share the database.
   */
  applyDepth?: () => number;
  /** Consecutive pages applied as one once they hold this many members (default: each page alone). */
  batchItems?: number;
  /**
   * The organization's stored members and roles, read before its crawl (`readStoredMembers`): each page
   * is compared with them here and only the members that differ are applied, so an unchanged page
   * costs no statement; members changed in the database after they were read (`changesAfter`) are
   * compared again after the last page. Without it each page is compared by the apply statement, and the
   * stored members are read again after the last page: those no page listed are the candidates for removal.
   */
  storedMembers?: StoredMembers;
  /**
   * Asked before each page is applied: whether its membership changes may come back only counted by
   * kind (`ApplyResult.counted`) instead of one record each (see `ApplyMembersOptions.countChanges`).
   */
  countChanges?: () => boolean;
  /**
   * With `storedMembers`: leave the look for changes made after the stored members were read to the
   * caller (`OrganizationMembersResult.recompare`), which reads the last change id once for several
   * organizations: a statement per organization was most of an unchanged reconcile's statements.
   */
  deferRecompare?: boolean;
};

/** Logto's order of member ids (`collate "C"`: by code point, as JavaScript compares strings). */
const compareIds = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Pages of one organization applied at once after its first, unless the caller says otherwise: their members are distinct id ranges, so
 * their transactions touch different rows, and a large organization's pages no longer wait on each
 * other's round trips in one chain (its crawl overlaps them the same way).
 */
const defaultApplyDepth = 4;

/** Candidates for removal up to this many are confirmed one by one; more than that, by a second crawl. */
const confirmOneByOneLimit = 20;

/** A member as Logto lists it, as the apply functions and the in-process compare take it. */
const memberSnapshot = (member: LogtoOrganizationMember): MemberSnapshot => ({
  userId: member.id,
  organizationRoleIds: member.organizationRoles.map((role) => role.id),
});

/**
 * Applies one page of members. A member crawl beside the users crawl often meets users not stored yet:
 * the member items are themselves full user snapshots, so they are written with the page, in its
 * transaction. A role created after the roles crawl is fetched first, then the page is applied again.
 */
const applyMemberPage = async (
  deps: SyncDeps,
  organizationId: string,
  members: LogtoOrganizationMember[],
  context: ChangeContext,
  readStoredMembers: boolean,
  countChanges: boolean,
): Promise<ApplyResult & { storedMemberIds?: string[] }> => {
  const db = deps.database.db;
  const snapshots = members.map(memberSnapshot);
  const first = await applyMembers(db, organizationId, snapshots, context, { allOrNothing: true, readStoredMembers, users: members, countChanges });
  if (first.unknownRoleIds.length === 0) return first;
  const result: ApplyResult & { storedMemberIds?: string[] } = mergeResults(emptyResult(), first);
  if (first.storedMemberIds) result.storedMemberIds = first.storedMemberIds;
  mergeResults(result, await applyOrganizationRoles(db, await fetchOrganizationRoles(deps, first.unknownRoleIds), context));
  return mergeResults(result, await applyMembers(db, organizationId, snapshots, context, { users: members, countChanges }));
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
  // Every stored member, as read before the crawl or by the first page, in Logto's order; `cursor` is where the pages got to.
  let stored: string[] | null = options.storedMembers ? [...options.storedMembers.keys()].sort(compareIds) : null;
  let cursor = 0;
  // With `storedMembers`, every member the pages listed: those found equal to the stored state with their
  // page's observedAt (nothing was written for them), those applied with null. Without, every member listed.
  const compared = new Map<string, Date | null>();
  const listed = new Set<string>();
  const take = (applied: ApplyResult) => {
    if (options.onApplied) options.onApplied({ changes: applied.changes, rowsWritten: applied.rowsWritten, ...(applied.counted ? { counted: applied.counted } : {}) });
    else mergeResults(result, applied);
  };
  const pages = pageBatches(
    deps.logto.listOrganizationMembers(organizationId, { ahead: options.ahead ?? 1, expectedTotal: options.expectedTotal ?? null }),
    options.batchItems ?? 1,
  )[Symbol.asyncIterator]();
  // Batches of pages (one page each unless `batchItems` says otherwise) are applied `applyDepth` at a
  // time; what follows an application (accounting, removal candidates) runs in page order. The first
  // batch is applied alone: it reads the stored members before any page of this crawl writes.
  const inFlight: Promise<void>[] = [];
  let previous: Promise<void> = Promise.resolve();
  try {
    for (;;) {
      const fallbackObservedAt = new Date();
      const next = await pages.next();
      if (next.done) break;
      if (options.shouldStop?.()) throw new Error('the crawl stopped');
      const items = next.value.flatMap((page) => page.items);
      const observedAt = batchObservedAt(next.value, fallbackObservedAt);
      for (const page of next.value) totals.add(page.total);
      if (items.length === 0) continue;
      const sorted = [...items].sort((a, b) => compareIds(a.id, b.id));
      const last = sorted[sorted.length - 1]!.id;
      const first = stored === null;
      const { storedMembers } = options;
      if (!storedMembers) for (const item of sorted) listed.add(item.id);
      const differing = storedMembers
        ? sorted.filter((item) => memberDiffers(storedMembers, memberSnapshot(item)))
        : sorted;
      if (storedMembers) {
        for (const item of sorted) compared.set(item.id, observedAt);
        for (const item of differing) compared.set(item.id, null);
      }
      const applying =
        differing.length > 0
          ? applyMemberPage(deps, organizationId, differing, { ...base, observedAt }, first, options.countChanges?.() ?? false)
          : Promise.resolve<ApplyResult & { storedMemberIds?: string[] }>(emptyResult());
      const before = previous;
      previous = (async () => {
        const applied = await applying;
        await before;
        take(applied);
        result.membersChecked += items.length;
        result.memberRolesChecked += items.reduce((sum, item) => sum + item.organizationRoles.length, 0);
        stored ??= [...(applied.storedMemberIds ?? (await storedMemberIds(db, organizationId)))].sort(compareIds);
        // Logto orders members by user id, so each page covers a range of ids: stored members up to its
        // last one that no page had are candidates for removal.
        const onPage = new Set(sorted.map((item) => item.id));
        for (; cursor < stored.length && compareIds(stored[cursor]!, last) <= 0; cursor += 1) {
          if (!onPage.has(stored[cursor]!)) candidates.push(stored[cursor]!);
        }
      })();
      // Awaited below or by the next page; a rejection must not count as unhandled in between.
      applying.catch(() => {});
      previous.catch(() => {});
      inFlight.push(previous);
      const depth = first ? 1 : Math.max(1, options.applyDepth?.() ?? defaultApplyDepth);
      while (inFlight.length >= depth) await inFlight.shift();
    }
    await previous;
  } catch (error) {
    // No transaction of this crawl is left running when it fails.
    await Promise.allSettled(inFlight);
    throw error;
  }
  // The list moved under the crawl (`Total-Number` changed): offset pages may have skipped a member.
  const moved = new Set([...totals].filter((total) => total !== null)).size > 1 && !options.settling;
  if (options.storedMembers) {
    candidates.push(...stored!.slice(cursor));
    const { storedMembers } = options;
    // A list that moved is crawled once more below, after the compare it needs first.
    if (options.deferRecompare && !moved) {
      const removing = new Set(candidates);
      result.recompare = async (lastChangeId) => {
        const later: OrganizationMembersResult = { ...emptyResult(), membersChecked: 0, memberRolesChecked: 0 };
        const takeLater = (applied: ApplyResult) => (options.onApplied ? take(applied) : void mergeResults(later, applied));
        const changed = await recompareChanged(deps, organizationId, base, options, storedMembers, compared, takeLater, lastChangeId);
        const more = changed.filter((userId) => !removing.has(userId));
        if (more.length > 0) await removeConfirmed(deps, organizationId, base, more, options, later);
        return later;
      };
    } else candidates.push(...(await recompareChanged(deps, organizationId, base, options, storedMembers, compared, take)));
  } else {
    // Read again once the pages are applied: a member stored after the first page's read by another writer
    // (a webhook that read Logto before the crawl, whose removal was lost) that no page listed is a candidate too.
    candidates.push(...(await storedMemberIds(db, organizationId)).filter((userId) => !listed.has(userId)));
  }
  if (candidates.length > 0) await removeConfirmed(deps, organizationId, base, [...new Set(candidates)], options, result);
  // Once more, which writes only what the first pass missed.
  if (moved) {
    // Compared by the apply statements: the first pass may have written since the stored members were read.
    const again = await syncOrganizationMembers(deps, organizationId, base, { ...options, expectedTotal: null, settling: true, storedMembers: undefined });
    mergeResults(result, again);
    result.membersChecked = again.membersChecked;
    result.memberRolesChecked = again.memberRolesChecked;
    if (again.goneUserIds) result.goneUserIds = [...(result.goneUserIds ?? []), ...again.goneUserIds];
  }
  return result;
};

/**
 * The members changed in the database after the stored members were read (by a webhook, the role sweep
 * or provisioning, not by this crawl): a page that matched the stored state was compared with a state
 * that no longer held, so each of them is applied again with its page, which writes what differs now
 * (a change observed after the page still stands: the apply statements leave it). A changed member no
 * page listed is returned, a candidate for removal like a stored member the pages lacked.
 */
const recompareChanged = async (
  deps: SyncDeps,
  organizationId: string,
  base: Omit<ChangeContext, 'observedAt'>,
  options: OrganizationMembersOptions,
  storedMembers: StoredMembers,
  compared: Map<string, Date | null>,
  take: (applied: ApplyResult) => void,
  lastChangeIdAfterPages?: number,
): Promise<string[]> => {
  const db = deps.database.db;
  // No change recorded anywhere since the stored members were read: the usual reconcile, where one
  // statement per organization cost PostgreSQL 0.2-0.3 s at 600 organizations (a full sync reads the last
  // id once for several organizations: `deferRecompare`). Once any change was recorded (this run's own
  // repairs too), each organization asks for its own.
  if ((lastChangeIdAfterPages ?? (await lastChangeId(db))) <= storedMembers.changesAfter) return [];
  const changed = await membersChangedAfter(db, organizationId, storedMembers.changesAfter, base.syncRunId ?? null);
  // Members found equal hold on their page exactly the roles stored for them: their snapshot, by page.
  const byPage = new Map<number, MemberSnapshot[]>();
  for (const userId of changed) {
    const observedAt = compared.get(userId);
    if (!observedAt) continue;
    const page = byPage.get(observedAt.getTime()) ?? [];
    page.push({ userId, organizationRoleIds: storedMembers.get(userId)! });
    byPage.set(observedAt.getTime(), page);
  }
  for (const [observedAt, members] of byPage) {
    take(await applyMembers(db, organizationId, members, { ...base, observedAt: new Date(observedAt) }, { countChanges: options.countChanges?.() ?? false }));
  }
  return changed.filter((userId) => !compared.has(userId));
};

const removeConfirmed = async (
  deps: SyncDeps,
  organizationId: string,
  base: Omit<ChangeContext, 'observedAt'>,
  candidates: string[],
  options: OrganizationMembersOptions,
  result: OrganizationMembersResult,
): Promise<void> => {
  const db = deps.database.db;
  // Logto is asked from here on: a membership recorded as observed after that (added since) is newer, and stays.
  const confirmingAt = new Date();
  const { removed, goneUsers } = await confirmRemovedMembers(deps, organizationId, candidates, options);
  const deferred = new Set(options.deferGoneUsers ? goneUsers : []);
  if (options.deferGoneUsers) result.goneUserIds = [...deferred];
  const removing = removed.filter((userId) => !deferred.has(userId));
  mergeResults(result, await removeMembers(db, organizationId, removing, { ...base, observedAt: confirmingAt }));
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


/**
 * `syncOrganizationMembers` for several organizations listed with few members and none stored when the
 * caller looked (most organizations of a baseline): their pages are fetched at once, compared and written
 * together (`applyMembersOfOrganizations`: one compare, one transaction, one write statement), and their
 * stored members read back together. Applied one by one, each such organization cost PostgreSQL about as
 * much in per-statement work (a compare, a transaction, a write, a read-back) as in its rows. All or
 * nothing: a failure writes nothing for any of them, and the caller marks none of them done. A list that
 * moved during its crawl is crawled again alone. Returns each organization's result; what was applied
 * goes to `onApplied` when given, else to the first result.
 */
export const syncOrganizationsMembersTogether = async (
  deps: SyncDeps,
  organizations: { id: string; expectedTotal: number | null }[],
  base: Omit<ChangeContext, 'observedAt'>,
  options: Pick<OrganizationMembersOptions, 'ahead' | 'deferGoneUsers' | 'shouldStop' | 'onApplied' | 'countChanges'> = {},
): Promise<Map<string, OrganizationMembersResult>> => {
  const db = deps.database.db;
  const results = new Map<string, OrganizationMembersResult>();
  const fallbackObservedAt = new Date();
  const crawled = await Promise.all(
    organizations.map(async ({ id, expectedTotal }) => {
      const pages: Page<LogtoOrganizationMember>[] = [];
      for await (const page of deps.logto.listOrganizationMembers(id, { ahead: options.ahead ?? 1, expectedTotal })) {
        if (options.shouldStop?.()) throw new Error('the crawl stopped');
        pages.push(page);
      }
      return { id, pages };
    }),
  );
  const moved = crawled.filter(({ pages }) => new Set(pages.map((page) => page.total).filter((total) => total !== null)).size > 1);
  const together = crawled.filter((entry) => !moved.includes(entry));
  const observedAt = batchObservedAt(together.flatMap(({ pages }) => pages), fallbackObservedAt);
  const listed = together.map(({ id, pages }) => ({ id, items: pages.flatMap((page) => page.items) }));
  const entries = listed.map(({ id, items }) => ({ organizationId: id, members: items.map(memberSnapshot) }));
  const users: LogtoUser[] = listed.flatMap(({ items }) => items);
  const context = { ...base, observedAt };
  const countChanges = options.countChanges?.() ?? false;
  const first = await applyMembersOfOrganizations(db, entries, context, { allOrNothing: true, users, countChanges });
  let applied: ApplyResult = first;
  if (first.unknownRoleIds.length > 0) {
    // A role created after the roles crawl: fetched first, then the pages are applied again.
    const roles = await fetchOrganizationRoles(deps, first.unknownRoleIds);
    applied = mergeResults(await applyOrganizationRoles(db, roles, context), await applyMembersOfOrganizations(db, entries, context, { users, countChanges }));
  }
  const appliedOnly: ApplyResult = { changes: applied.changes, rowsWritten: applied.rowsWritten, ...(applied.counted ? { counted: applied.counted } : {}) };
  if (options.onApplied) options.onApplied(appliedOnly);
  // Read once the pages are applied: a member stored by another writer that no page listed is a candidate for removal.
  const unlisted = await storedMembersNotListed(db, listed.map(({ id, items }) => ({ id, userIds: items.map((item) => item.id) })));
  for (const [index, { id, items }] of listed.entries()) {
    const result: OrganizationMembersResult = {
      ...(index === 0 && !options.onApplied ? mergeResults(emptyResult(), appliedOnly) : emptyResult()),
      membersChecked: items.length,
      memberRolesChecked: items.reduce((sum, item) => sum + item.organizationRoles.length, 0),
    };
    const candidates = unlisted.get(id) ?? [];
    if (candidates.length > 0) await removeConfirmed(deps, id, base, candidates, options, result);
    results.set(id, result);
  }
  for (const { id } of moved) results.set(id, await syncOrganizationMembers(deps, id, base, { ...options, expectedTotal: null }));
  return results;
};
