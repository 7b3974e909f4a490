import PQueue from 'p-queue';
import { asc, gt } from 'drizzle-orm';
import { organizations } from '../../db/schema.js';
import { lastChangeId } from '../db/change-frontier.js';
import {
  clearCrawl,
  finishSyncRun,
  listSeen,
  markSeen,
  readCrawlPosition,
  readSeenIds,
  recordListProgress,
  startSyncRun,
  storedIdsAfter,
  writeCrawlPosition,
  type CrawlListPosition,
  type CrawlPosition,
  type ListEntity,
  type SyncRun,
} from '../db/sync-runs.js';
import type { AheadOptions, Page } from '../logto/index.js';
import { metrics } from '../metrics.js';
import {
  applyOrganizationRoles,
  applyOrganizations,
  applyUsers,
  changeCount,
  organizationsWithMembers,
  readStoredMembers,
  removeOrganizationRoles,
  removeOrganizations,
  removeUsers,
  type ApplyResult,
  type ChangeContext,
  type StoredMembers,
} from './apply/index.js';
import type { SyncDeps } from './context.js';
import { syncOrganizationMembers, syncOrganizationsMembersTogether, type OrganizationMembersResult } from './organization-members.js';
import { batchObservedAt, pageBatches } from './page-batches.js';
import { DriftReporter } from './report.js';

export type FullSyncKind = 'baseline' | 'reconcile';

export type SyncProgress = {
  phase: 'organization_roles' | 'organizations' | 'users' | 'members' | 'removals';
  done: number;
  total: number | null;
};

export type FullSyncOptions = {
  kind: FullSyncKind;
  trigger: string;
  /** Organizations whose members are crawled at once (default `defaultOrganizationConcurrency`); each still waits for the shared request budget. */
  organizationConcurrency?: number;
  /** Pages of one list requested ahead of the page being written; default 16 (8 per organization's members). */
  pagesAhead?: number;
  onProgress?: (progress: SyncProgress) => void;
  /** Lets a caller that needs the run id early (the API's 202) have it as soon as the row exists. */
  onStart?: (run: SyncRun) => void;
  /**
   * Work of a successful run after its last page (the runner's ANALYZE). The run stays 'running' until it
   * is done, because its lock is still held: a start refused meanwhile by another replica finds this run.
   */
  beforeFinish?: (counts: SyncCounts) => Promise<void>;
  /**
   * Called in a run into an empty database once the users list is applied (`'users'`: member pages add
   * only users created since it was read) and once every page is (`'pages'`, before the removals, which
   * in such a run can only remove what was written beside it). The tables then hold what the run ends
   * with, so work on them (the runner's ANALYZE) overlaps the rest of the run instead of following it.
   * The run awaits what it returns before `beforeFinish`, or before it fails.
   */
  onLoaded?: (loaded: 'users' | 'pages') => Promise<void> | void;
};

export type SyncCounts = {
  users: number;
  organizations: number;
  organizationRoles: number;
  memberships: number;
  memberRoles: number;
  rowsWritten: number;
  changes: number;
  removed: number;
  requests: number;
  drift: number;
  durationMs: number;
};

export type FullSyncResult = {
  run: SyncRun;
  counts: SyncCounts;
  organizationsAvailable: boolean;
  /** The run that began the crawl this run finished, when it continued an earlier one. */
  resumedFrom: number | null;
};

const removalBatch = 100;
/** Stored ids compared with the seen ids per statement of the removal phase. */
const storedIdsBatch = 10_000;
/**
 * Organizations whose members are crawled at once; the pure crawl of the bench uses the same number.
 * 16 (so that one organization's page is fetched while another's is written) showed no gain at scale
 * 0.3 (unchanged reconcile 8.83 s against 9.44 s with 8 and 8.96 s on main, within the noise) and an
 * unchanged reconcile of 53 s against main's 36 s at scale 1: kept at 8.
 */
export const defaultOrganizationConcurrency = 8;
/** Pages of one list requested ahead of the page being written (half that per organization's members). */
export const defaultPagesAhead = 16;
/** Batches of one list applied at once: a batch's round trips to the database overlap the next one's. */
const applyDepth = 2;
/**
 * Items of consecutive pages of one list applied as one (see `pageBatches`): four pages of a hundred. At
 * scale 0.3 a baseline's PostgreSQL CPU was ~22 s for ~500,000 rows whose inserts alone, set-based, cost ~5 s.
 */
const batchItems = 400;
/**
 * Organizations listed with at most this many members have their stored members read together, one
 * statement per keyset batch of organizations; a larger one's are read when its own crawl starts, so
 * what is held at once stays bounded by the largest organizations being crawled.
 */
const storedMembersReadTogether = 1_000;
/**
 * Organizations listed with at most `batchItems` members and none stored are crawled together, as many as
 * hold about this many members or `organizationsTogether` of them (see `syncOrganizationsMembersTogether`):
 * each alone cost a compare, a transaction, a write and a read-back, whatever its size.
 */
const membersTogether = 800;
const organizationsTogether = 32;
/**
 * Pages of a list whose seen ids and position are recorded together (and at a failure): a statement per
 * batch of pages cost as much as an unchanged batch's compare. A crash forgets at most these pages, which
 * the next run crawls again (writing nothing).
 */
const progressEveryPages = 20;
/** Finished organizations recorded in the crawl's seen set together. */
const progressBatch = 20;

/** An unfinished crawl older than this is not continued: what it saw is too old to trust for removals. */
export const resumeWithinMs = 6 * 3_600_000;

type Phase = SyncProgress['phase'];
type Base = Omit<ChangeContext, 'observedAt'>;

/** What the parts of one run share. */
type RunContext = {
  deps: SyncDeps;
  options: FullSyncOptions;
  base: Base;
  position: CrawlPosition;
  /**
   * Ids of each list the crawl has seen (with a continued crawl's recorded ones): held here, compared
   * with the stored ids at the removal phase, and recorded in chunks only for a later run to continue.
   */
  seen: Record<ListEntity, Set<string>>;
  /** Numbers this run's recorded chunks of seen ids. */
  chunks: number;
  account: (result: ApplyResult) => void;
  /** Whether the drift report keeps no more items: the pages applied from then on need only count their changes. */
  reportFull: () => boolean;
  counts: SyncCounts;
  /** Set when one part failed: the others stop at their next page. */
  stopped: { error: unknown };
  /**
   * Writes of the crawl position, one after another: the users list records its progress while the
   * organization lists write theirs, and each write carries the whole position as it is when it starts,
   * so a write started earlier must not commit after a later one.
   */
  positionWrites: Promise<void>;
  /** The organization roles and organizations lists are crawled and their removals done. */
  definitionsDone: boolean;
  usersDone: boolean;
};

/**
 * The baseline and the reconcile are one mechanism: crawl the tenant, apply each page through the apply
 * functions (which write only what differs), then remove what Logto no longer has, each removal
 * confirmed with Logto first. Pages are requested ahead while earlier ones are written, and members are
 * crawled while users still are. A run that fails part-way has applied only true pages and removed
 * nothing unconfirmed, so the previous state stays intact; its crawl position (lists and pages applied,
 * organizations done, the seen set) stays in the database and the next run continues from there.
 */
export const runFullSync = async (deps: SyncDeps, options: FullSyncOptions): Promise<FullSyncResult> => {
  const db = deps.database.db;
  const source = options.kind === 'baseline' ? 'baseline' : 'reconcile';
  const run = await startSyncRun(db, options.kind, options.trigger);
  options.onStart?.(run);
  const started = performance.now();
  const requestsBefore = deps.logto.stats().requests;
  const base: Base = { source, syncRunId: run.id, actor: `sync:${options.trigger}` };
  const counts: SyncCounts = {
    users: 0,
    organizations: 0,
    organizationRoles: 0,
    memberships: 0,
    memberRoles: 0,
    rowsWritten: 0,
    changes: 0,
    removed: 0,
    requests: 0,
    drift: 0,
    durationMs: 0,
  };
  const drift = new DriftReporter();
  const account = (result: ApplyResult) => {
    counts.rowsWritten += result.rowsWritten;
    counts.changes += changeCount(result);
    drift.add(result.changes);
    if (result.counted) drift.addCounted(result.counted);
  };
  const log = deps.logger.child({ syncRunId: run.id, kind: options.kind });
  let organizationsAvailable = true;
  let notes: string | null = null;
  let resumedFrom: number | null = null;
  // Work started by `onLoaded`, awaited before the run ends.
  const overlapping: Promise<void>[] = [];

  try {
    const position = await startOrContinueCrawl(deps, run.id);
    if (position.crawlId !== run.id) {
      resumedFrom = position.crawlId;
      log.info({ crawlId: position.crawlId, lists: position.lists }, 'continuing the crawl of an unfinished full sync');
    }
    const seen = await readSeenIds(db, position.crawlId);
    const context: RunContext = {
      deps, options, base, position, seen, chunks: 0, account, reportFull: () => drift.full(), counts, stopped: { error: null }, positionWrites: Promise.resolve(), definitionsDone: false, usersDone: false,
    };

    // Into an empty database (a first baseline, not one continued or run again) every users page is
    // written whole, without first asking which of its users are stored (see `ApplyUsersOptions`).
    const nothingStored = (await storedIdsAfter(db, 'user', null, 1)).length === 0;
    const loaded = (part: 'users' | 'pages') => {
      if (!nothingStored || !options.onLoaded) return;
      const work = (async () => options.onLoaded?.(part))();
      // Awaited before the run ends; a rejection must not count as unhandled in between.
      work.catch(() => {});
      overlapping.push(work);
    };
    // The users crawl starts at once, beside the organization roles and organizations lists: it needs
    // nothing from them, and those lists (a few dozen pages) alone left the request pipeline half empty
    // for the first ~1 s of a scale-1 baseline. Its progress is reported once they are done, so that a
    // progress bar still shows one phase at a time.
    const users = crawlList(context, 'user', 'users', (ahead) => deps.logto.listUsers(ahead), (items, observedAt) =>
      applyUsers(db, items, { ...base, observedAt }, { nothingStored }).then(account),
    { reportProgress: () => context.definitionsDone },
    ).then((seen) => {
      counts.users = seen;
      context.usersDone = true;
      loaded('users');
    });
    const organizationsAndMembers = async () => {
      const probe = await deps.logto.probeOrganizations();
      if (!probe.available) {
        organizationsAvailable = false;
        notes = `Organizations are unavailable on this tenant (${probe.reason}): syncing users only.`;
        log.warn({ reason: probe.reason }, 'organizations unavailable: syncing users only');
        context.definitionsDone = true;
        return;
      }
      const memberCounts = new Map<string, number | null>();
      counts.organizationRoles = await crawlList(context, 'organization_role', 'organization_roles', (ahead) => deps.logto.listOrganizationRoles(ahead), (items, observedAt) =>
        applyOrganizationRoles(db, items, { ...base, observedAt }).then(account),
      );
      counts.organizations = await crawlList(
        context,
        'organization',
        'organizations',
        (ahead) => withIds(deps.logto.listOrganizationsWithMemberCounts(ahead), (entry) => entry.organization.id),
        (items, observedAt) => {
          for (const { organization, usersCount } of items) memberCounts.set(organization.id, usersCount);
          return applyOrganizations(db, items.map((entry) => entry.organization), { ...base, observedAt }).then(account);
        },
      );
      // Definitions go before any member is crawled: a deleted organization or role then shows in the
      // report as itself, with the grants it took along counted as cascades, not as drift of their own.
      counts.removed += await removeUnseen(context, 'organization', async (ids) => confirmEach(ids, (id) => deps.logto.getOrganization(id)));
      counts.removed += await removeUnseen(context, 'organization_role', async (ids) =>
        confirmEach(ids, (id) => deps.logto.getOrganizationRole(id)),
      );
      context.definitionsDone = true;
      if (context.usersDone) options.onProgress?.({ phase: 'users', done: counts.users, total: counts.users });
      await crawlAllMembers(context, memberCounts);
    };

    const parts = [users, organizationsAndMembers()].map((part) =>
      part.catch((error: unknown) => {
        context.stopped.error ??= error;
      }),
    );
    await Promise.all(parts);
    if (context.stopped.error) throw context.stopped.error;
    loaded('pages');

    // Users go last: a user deleted in Logto is removed with its memberships, recorded as cascades.
    options.onProgress?.({ phase: 'removals', done: 0, total: null });
    const confirmUsersGone = async (ids: string[]) => {
      const found = new Set((await deps.logto.findUsersByIds(ids)).map((user) => user.id));
      return ids.filter((id) => !found.has(id));
    };
    counts.removed += await removeUnseen(context, 'user', confirmUsersGone);
    counts.removed += await removeGoneUsers(context, confirmUsersGone);

    counts.requests = deps.logto.stats().requests - requestsBefore;
    counts.drift = drift.total();
    await clearCrawl(db, position.crawlId);
    await Promise.all(overlapping);
    await options.beforeFinish?.(counts);
    counts.durationMs = Math.round(performance.now() - started);
    const finished = await finishSyncRun(db, run.id, {
      status: 'succeeded',
      counts,
      report: { drift: drift.toJSON(), ...(resumedFrom === null ? {} : { resumedFrom }) },
      organizationsAvailable,
      notes,
    });
    metrics.syncDuration.observe({ kind: options.kind, status: 'succeeded' }, counts.durationMs / 1000);
    for (const [kind, total] of Object.entries(drift.toJSON().totals)) if (total > 0) metrics.driftFound.inc({ kind }, total);
    log.info({ counts, drift: drift.toJSON().totals }, `${options.kind} succeeded`);
    return { run: finished, counts, organizationsAvailable, resumedFrom };
  } catch (error) {
    // Nothing this run started is left running on the database once it has ended.
    await Promise.allSettled(overlapping);
    counts.requests = deps.logto.stats().requests - requestsBefore;
    counts.drift = drift.total();
    counts.durationMs = Math.round(performance.now() - started);
    const message = error instanceof Error ? error.message : String(error);
    // The crawl position and seen set stay: the next run continues from them.
    await finishSyncRun(db, run.id, {
      status: 'failed',
      counts,
      report: { drift: drift.toJSON(), ...(resumedFrom === null ? {} : { resumedFrom }) },
      error: message,
      organizationsAvailable,
      notes,
    }).catch((finishError: unknown) => log.error({ err: finishError }, 'could not mark the run failed'));
    metrics.syncDuration.observe({ kind: options.kind, status: 'failed' }, counts.durationMs / 1000);
    log.error({ err: error, counts }, `${options.kind} failed`);
    throw error;
  }
};

/**
 * The crawl this run continues, or a new one. A crawl is continued only while young: its seen set says
 * which ids Logto had when their pages were read, and a removal still asks Logto first, but pages read
 * long ago would hide drift since then behind a "complete" crawl.
 */
const startOrContinueCrawl = async (deps: SyncDeps, runId: number): Promise<CrawlPosition> => {
  const db = deps.database.db;
  const existing = await readCrawlPosition(db);
  if (existing && Date.now() - Date.parse(existing.startedAt) < resumeWithinMs) return existing;
  if (existing) await clearCrawl(db, existing.crawlId);
  const position: CrawlPosition = { crawlId: runId, startedAt: new Date().toISOString(), lists: {} };
  await writeCrawlPosition(db, position);
  return position;
};

/** Gives items without an `id` of their own one for the seen set and deduplication. */
async function* withIds<T>(pages: AsyncIterable<Page<T>>, id: (item: T) => string): AsyncGenerator<Page<T & { id: string }>> {
  for await (const page of pages) yield { ...page, items: page.items.map((item) => ({ ...item, id: id(item) })) };
}

/**
 * Streams one list from where the crawl left it, applying each page in order while later ones are
 * fetched, and remembering what it saw. Offset pages over a list that changed during the crawl
 * (`Total-Number` moved) can skip items: then it crawls once more, which writes only what the first
 * pass missed. Returns how many items the crawl has seen of this list (across continued runs).
 */
const crawlList = async <T extends { id: string }>(
  context: RunContext,
  entity: 'user' | 'organization' | 'organization_role',
  phase: Phase,
  list: (ahead: AheadOptions) => AsyncIterable<Page<T>>,
  apply: (items: T[], observedAt: Date) => Promise<void>,
  { reportProgress = () => true }: { reportProgress?: () => boolean } = {},
): Promise<number> => {
  const { deps, position, options } = context;
  const db = deps.database.db;
  const seenIds = context.seen[entity];
  const inOrder = (write: () => Promise<void>) => {
    const written = context.positionWrites.then(write);
    context.positionWrites = written.catch(() => {});
    return written;
  };
  const record = (ids: string[], at?: CrawlPosition) => {
    const chunk = `${context.base.syncRunId}:${(context.chunks += 1)}`;
    return inOrder(() => recordListProgress(db, position.crawlId, entity, chunk, ids, at));
  };
  const progress: CrawlListPosition = (position.lists[entity] ??= { pages: 0, total: null, moved: false, done: false });
  const ahead = options.pagesAhead ?? defaultPagesAhead;
  if (!progress.done) {
    const continuing = progress.pages > 0;
    let yielded = 0;
    // Batches of pages are applied `applyDepth` at a time (their items are distinct: the crawl deduplicates),
    // each batch's progress recorded only once it and every batch before it are applied.
    const recorded: Promise<void>[] = [];
    let previous: Promise<void> = Promise.resolve();
    // Ids of the pages applied since the position was last recorded, and the last of those pages. The
    // position's page count moves only with their ids: another list writing the position meanwhile must not
    // record pages whose ids are not yet in the seen set (a continued run would then take those users
    // for unseen, and ask Logto about each of them).
    let unrecorded: string[] = [];
    let unrecordedPages = 0;
    let appliedThrough = progress.pages;
    const recordProgress = async () => {
      if (unrecordedPages === 0) return;
      const ids = unrecorded;
      unrecorded = [];
      unrecordedPages = 0;
      progress.pages = appliedThrough;
      await record(ids, position);
    };
    try {
      for await (const batch of pageBatches(list({ ahead, startPage: progress.pages + 1 }), batchItems)) {
        if (context.stopped.error) throw context.stopped.error;
        yielded += batch.length;
        for (const page of batch) {
          if (page.total === null) continue;
          if (progress.total !== null && progress.total !== page.total) progress.moved = true;
          progress.total = page.total;
        }
        const items = batch.flatMap((page) => page.items);
        const last = batch[batch.length - 1]!;
        const applied = items.length > 0 ? apply(items, batchObservedAt(batch, new Date())) : Promise.resolve();
        const before = previous;
        previous = (async () => {
          await applied;
          await before;
          appliedThrough = last.page;
          for (const item of items) {
            unrecorded.push(item.id);
            seenIds.add(item.id);
          }
          unrecordedPages += batch.length;
          if (unrecordedPages >= progressEveryPages) await recordProgress();
          if (reportProgress()) options.onProgress?.({ phase, done: seenIds.size, total: last.total });
        })();
        // Awaited below or by the next page; a rejection must not count as unhandled in between.
        applied.catch(() => {});
        previous.catch(() => {});
        recorded.push(previous);
        if (recorded.length >= applyDepth) await recorded.shift();
      }
      await previous;
      await recordProgress();
    } catch (error) {
      // The pages already being applied finish, and those applied are recorded, so the next run continues after them.
      await Promise.allSettled(recorded);
      await recordProgress().catch(() => {});
      throw error;
    }
    // Continued past the end without a page to compare totals with: the list may have shrunk since.
    if (continuing && yielded === 0) progress.moved = true;
    if (progress.moved) {
      deps.logger.info({ entity }, 'the list changed during the crawl: crawling it once more');
      for await (const page of list({ ahead })) {
        if (context.stopped.error) throw context.stopped.error;
        if (page.items.length === 0) continue;
        await apply(page.items, page.requestedAt ?? new Date());
        for (const item of page.items) seenIds.add(item.id);
        await record(page.items.map((item) => item.id));
      }
    }
    progress.done = true;
    await inOrder(() => writeCrawlPosition(db, position));
  }
  return seenIds.size;
};

/**
 * Crawls every stored organization's members, several organizations at once, each one's pages in order.
 * With the member count from the organization list, all of an organization's pages are requested at
 * once, and an organization Logto lists as empty, with no member stored, costs no request. Organizations
 * already done by an earlier run of this crawl are skipped; one left half-way is crawled again whole.
 */
const crawlAllMembers = async (context: RunContext, memberCounts: Map<string, number | null>): Promise<void> => {
  const { deps, position, options, base, counts, account } = context;
  const db = deps.database.db;
  const done = new Set(await listSeen(db, position.crawlId, 'organization_members'));
  const queue = new PQueue({ concurrency: options.organizationConcurrency ?? defaultOrganizationConcurrency });
  const ahead = Math.max(1, Math.floor((options.pagesAhead ?? defaultPagesAhead) / 2));
  let finished = done.size;
  let failure: unknown = null;
  // Organizations finished but not yet in the seen set, recorded a few at a time: most take one page,
  // and a statement each would cost as much as their page. A crash forgets at most these, which the
  // next run crawls again (writing nothing). Each is recorded only after the compare of its members
  // changed since their stored state was read (`recompare`): the last change id is read once for them
  // all, after all their pages were compared (an unchanged reconcile's one statement per organization).
  let organizationsDone: { id: string; recompare: OrganizationMembersResult['recompare'] }[] = [];
  const recordOrganizationsDone = async () => {
    const group = organizationsDone;
    organizationsDone = [];
    if (group.some((entry) => entry.recompare)) {
      const last = await lastChangeId(db);
      for (const { recompare } of group) {
        if (!recompare) continue;
        const later = await recompare(last);
        account(later);
        await markSeen(db, position.crawlId, 'gone_user', later.goneUserIds ?? []);
      }
    }
    await markSeen(db, position.crawlId, 'organization_members', group.map((entry) => entry.id), { flush: false });
  };
  // Organizations Logto listed as empty whose member crawl was skipped, nothing stored for them.
  const listedEmpty: string[] = [];
  // `stored`: the organization's stored members read with its batch's, or 'read' to read them as its crawl starts.
  const crawl = (id: string, expectedTotal: number | null, stored: StoredMembers | undefined | 'read') =>
    void queue.add(async () => {
      if (failure || context.stopped.error) return;
      try {
        const storedMembers = stored === 'read' ? (await readStoredMembers(db, [id])).get(id) : stored;
        const result = await syncOrganizationMembers(deps, id, base, {
          // None stored (a baseline): every page differs, and the apply statements compare as they write.
          ...(storedMembers ? { storedMembers } : {}),
          ahead,
          expectedTotal,
          deferGoneUsers: true,
          batchItems,
          shouldStop: () => context.stopped.error !== null,
          onApplied: account,
          // Past the report's last item a baseline's memberships are only counted: receiving a record of
          // each (~820,000 at 100,000 users) cost the sync process more than writing them did.
          countChanges: context.reportFull,
          // One page at a time each while the queue is full, as many as four for the last large ones:
          // as many transactions as organizations crawled at once, and pages held in memory no more.
          applyDepth: () => Math.min(4, Math.floor(queue.concurrency / Math.max(1, queue.pending))),
          deferRecompare: true,
        });
        await finish(id, result);
      } catch (error) {
        failure ??= error;
      }
    });
  const finish = async (id: string, result: OrganizationMembersResult) => {
    account(result);
    counts.memberships += result.membersChecked;
    counts.memberRoles += result.memberRolesChecked;
    await markSeen(db, position.crawlId, 'gone_user', result.goneUserIds ?? []);
    organizationsDone.push({ id, recompare: result.recompare });
    if (organizationsDone.length >= progressBatch) await recordOrganizationsDone();
    finished += 1;
    if (context.usersDone) options.onProgress?.({ phase: 'members', done: finished, total: counts.organizations });
  };
  // Small organizations with nothing stored, waiting to be crawled together (`membersTogether`).
  let together: { id: string; expectedTotal: number }[] = [];
  let togetherMembers = 0;
  const crawlTogether = () => {
    const group = together;
    together = [];
    togetherMembers = 0;
    if (group.length === 0) return;
    void queue.add(async () => {
      if (failure || context.stopped.error) return;
      try {
        const results = await syncOrganizationsMembersTogether(deps, group, base, {
          ahead,
          deferGoneUsers: true,
          shouldStop: () => context.stopped.error !== null,
          onApplied: account,
          countChanges: context.reportFull,
        });
        for (const { id } of group) await finish(id, results.get(id)!);
      } catch (error) {
        failure ??= error;
      }
    });
  };
  // Keyset over the stored organizations keeps memory flat however many there are.
  let after: string | null = null;
  for (;;) {
    const batch: { id: string }[] = await db
      .select({ id: organizations.id })
      .from(organizations)
      .where(after === null ? undefined : gt(organizations.id, after))
      .orderBy(asc(organizations.id))
      .limit(100);
    if (batch.length === 0) break;
    after = batch[batch.length - 1]!.id;
    const ids = batch.map(({ id }) => id).filter((id) => !done.has(id));
    const small = (id: string) => (memberCounts.get(id) ?? Infinity) <= storedMembersReadTogether;
    // Pages are compared with what is stored in this process: an unchanged page then costs no statement.
    const storedTogether = await readStoredMembers(db, ids.filter(small));
    for (const id of ids) {
      const expectedTotal = memberCounts.get(id) ?? null;
      if (expectedTotal === 0 && !storedTogether.has(id)) {
        listedEmpty.push(id);
        finished += 1;
        continue;
      }
      if (expectedTotal !== null && expectedTotal <= batchItems && !storedTogether.has(id)) {
        together.push({ id, expectedTotal });
        togetherMembers += expectedTotal;
        if (togetherMembers >= membersTogether || together.length >= organizationsTogether) crawlTogether();
        continue;
      }
      crawl(id, expectedTotal, small(id) ? storedTogether.get(id) : 'read');
    }
    await queue.onSizeLessThan(queue.concurrency);
    if (failure || context.stopped.error) break;
  }
  if (!failure && !context.stopped.error) crawlTogether();
  await queue.onIdle();
  // Skipped as empty with nothing stored when their batch was read: one stored since (a webhook that read
  // Logto earlier, whose removal was lost) was compared with nothing, so those are crawled now.
  if (!failure && !context.stopped.error && listedEmpty.length > 0) {
    for (const id of await organizationsWithMembers(db, listedEmpty)) {
      // Counted as finished when skipped: counted again when its crawl finishes.
      finished -= 1;
      crawl(id, null, 'read');
    }
    await queue.onIdle();
  }
  // Also after a failure: the next run then skips the organizations this one finished.
  await recordOrganizationsDone().catch((error: unknown) => {
    failure ??= error;
  });
  if (failure) throw failure;
  if (context.stopped.error) throw context.stopped.error;
};

const removers = { user: removeUsers, organization: removeOrganizations, organization_role: removeOrganizationRoles };

/**
 * Candidates the crawl did not see are removed only once Logto confirms they are gone. The stored ids are
 * read in id order and compared with the seen ids here: most runs see every one, and then nothing else
 * happens.
 */
const removeUnseen = async (context: RunContext, entity: ListEntity, confirmGone: (ids: string[]) => Promise<string[]>): Promise<number> => {
  const { deps, base, account } = context;
  const db = deps.database.db;
  const seen = context.seen[entity];
  let removed = 0;
  const remove = async (ids: string[]) => {
    const observedAt = new Date();
    const gone = await confirmGone(ids);
    if (gone.length === 0) return;
    account(await removers[entity](db, gone, { ...base, observedAt }));
    removed += gone.length;
  };
  const unseen: string[] = [];
  let after: string | null = null;
  for (;;) {
    const ids = await storedIdsAfter(db, entity, after, storedIdsBatch);
    if (ids.length === 0) break;
    after = ids[ids.length - 1]!;
    for (const id of ids) if (!seen.has(id)) unseen.push(id);
    while (unseen.length >= removalBatch) await remove(unseen.splice(0, removalBatch));
  }
  if (unseen.length > 0) await remove(unseen);
  return removed;
};

/** Users a member crawl found deleted in Logto (and the users crawl may have seen before that). */
const removeGoneUsers = async (context: RunContext, confirmGone: (ids: string[]) => Promise<string[]>): Promise<number> => {
  const { deps, position, base, account } = context;
  const db = deps.database.db;
  const candidates = await listSeen(db, position.crawlId, 'gone_user');
  let removed = 0;
  for (let start = 0; start < candidates.length; start += removalBatch) {
    const observedAt = new Date();
    const gone = await confirmGone(candidates.slice(start, start + removalBatch));
    if (gone.length === 0) continue;
    account(await removeUsers(db, gone, { ...base, observedAt }));
    removed += gone.length;
  }
  return removed;
};

const confirmEach = async (ids: string[], lookup: (id: string) => Promise<unknown>): Promise<string[]> => {
  const found = await Promise.all(ids.map(async (id) => ((await lookup(id)) === null ? id : null)));
  return found.filter((id) => id !== null);
};
