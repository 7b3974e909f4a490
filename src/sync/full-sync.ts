import PQueue from 'p-queue';
import { asc, gt } from 'drizzle-orm';
import { organizations } from '../../db/schema.js';
import {
  clearSeen,
  finishSyncRun,
  markSeen,
  startSyncRun,
  unseenIds,
  type SeenEntity,
  type SyncRun,
} from '../db/sync-runs.js';
import type { Page } from '../logto/index.js';
import { metrics } from '../metrics.js';
import {
  applyOrganizationRoles,
  applyOrganizations,
  applyUsers,
  removeOrganizationRoles,
  removeOrganizations,
  removeUsers,
  type ApplyResult,
  type ChangeContext,
} from './apply/index.js';
import type { SyncDeps } from './context.js';
import { syncOrganizationMembers } from './organization-members.js';
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
  /** Organizations whose members are crawled at once; each still waits for the shared request budget. */
  organizationConcurrency?: number;
  onProgress?: (progress: SyncProgress) => void;
  /** Lets a caller that needs the run id early (the API's 202) have it as soon as the row exists. */
  onStart?: (run: SyncRun) => void;
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

export type FullSyncResult = { run: SyncRun; counts: SyncCounts; organizationsAvailable: boolean };

const removalBatch = 100;

/**
 * The baseline and the reconcile are one mechanism: crawl the tenant page by page, apply each page
 * through the apply functions (which write only what differs), then remove what Logto no longer has,
 * each removal confirmed with Logto first. A run that fails part-way has applied only true pages and
 * removed nothing unconfirmed, so the previous state stays intact.
 */
export const runFullSync = async (deps: SyncDeps, options: FullSyncOptions): Promise<FullSyncResult> => {
  const db = deps.database.db;
  const source = options.kind === 'baseline' ? 'baseline' : 'reconcile';
  const run = await startSyncRun(db, options.kind, options.trigger);
  options.onStart?.(run);
  const started = performance.now();
  const requestsBefore = deps.logto.stats().requests;
  const base: Omit<ChangeContext, 'observedAt'> = { source, syncRunId: run.id, actor: `sync:${options.trigger}` };
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
    counts.changes += result.changes.length;
    drift.add(result.changes);
  };
  const log = deps.logger.child({ syncRunId: run.id, kind: options.kind });
  let organizationsAvailable = true;
  let notes: string | null = null;

  try {
    const probe = await deps.logto.probeOrganizations();
    if (!probe.available) {
      organizationsAvailable = false;
      notes = `Organizations are unavailable on this tenant (${probe.reason}): syncing users only.`;
      log.warn({ reason: probe.reason }, 'organizations unavailable: syncing users only');
    }

    if (organizationsAvailable) {
      counts.organizationRoles = await crawlSettled(deps, run.id, 'organization_role', () => deps.logto.listOrganizationRoles(), options, 'organization_roles', (items, observedAt) =>
        applyOrganizationRoles(db, items, { ...base, observedAt }).then(account),
      );
      counts.organizations = await crawlSettled(deps, run.id, 'organization', () => deps.logto.listOrganizations(), options, 'organizations', (items, observedAt) =>
        applyOrganizations(db, items, { ...base, observedAt }).then(account),
      );
    }
    counts.users = await crawlSettled(deps, run.id, 'user', () => deps.logto.listUsers(), options, 'users', (items, observedAt) =>
      applyUsers(db, items, { ...base, observedAt }).then(account),
    );

    // Removals come before the member crawl: a deleted user, organization or role then shows in the
    // report as itself, with the grants it took along counted as cascades, not as drift of its own.
    options.onProgress?.({ phase: 'removals', done: 0, total: null });
    counts.removed += await removeUnseen(deps, run.id, 'user', base, account, async (ids) => {
      const found = new Set((await deps.logto.findUsersByIds(ids)).map((user) => user.id));
      return ids.filter((id) => !found.has(id));
    });
    if (organizationsAvailable) {
      counts.removed += await removeUnseen(deps, run.id, 'organization', base, account, async (ids) =>
        confirmEach(ids, (id) => deps.logto.getOrganization(id)),
      );
      counts.removed += await removeUnseen(deps, run.id, 'organization_role', base, account, async (ids) =>
        confirmEach(ids, (id) => deps.logto.getOrganizationRole(id)),
      );
    }

    if (organizationsAvailable) {
      await crawlAllMembers(deps, base, options, counts, account);
    }

    counts.requests = deps.logto.stats().requests - requestsBefore;
    counts.drift = drift.total();
    counts.durationMs = Math.round(performance.now() - started);
    await clearSeen(db, run.id);
    const finished = await finishSyncRun(db, run.id, {
      status: 'succeeded',
      counts,
      report: { drift: drift.toJSON() },
      organizationsAvailable,
      notes,
    });
    metrics.syncDuration.observe({ kind: options.kind, status: 'succeeded' }, counts.durationMs / 1000);
    for (const [kind, total] of Object.entries(drift.toJSON().totals)) if (total > 0) metrics.driftFound.inc({ kind }, total);
    log.info({ counts, drift: drift.toJSON().totals }, `${options.kind} succeeded`);
    return { run: finished, counts, organizationsAvailable };
  } catch (error) {
    counts.requests = deps.logto.stats().requests - requestsBefore;
    counts.drift = drift.total();
    counts.durationMs = Math.round(performance.now() - started);
    const message = error instanceof Error ? error.message : String(error);
    await clearSeen(db, run.id).catch(() => {});
    await finishSyncRun(db, run.id, {
      status: 'failed',
      counts,
      report: { drift: drift.toJSON() },
      error: message,
      organizationsAvailable,
      notes,
    }).catch((finishError: unknown) => log.error({ err: finishError }, 'could not mark the run failed'));
    metrics.syncDuration.observe({ kind: options.kind, status: 'failed' }, counts.durationMs / 1000);
    log.error({ err: error, counts }, `${options.kind} failed`);
    throw error;
  }
};

/** Streams one list, applying each page and remembering what it saw; returns how many items it saw. */
const crawl = async <T extends { id: string }>(
  deps: SyncDeps,
  runId: number,
  entity: SeenEntity,
  pages: AsyncIterable<Page<T>>,
  options: FullSyncOptions,
  phase: SyncProgress['phase'],
  apply: (items: T[], observedAt: Date) => Promise<void>,
): Promise<{ seen: number; moved: boolean }> => {
  const iterator = pages[Symbol.asyncIterator]();
  let seen = 0;
  const totals = new Set<number>();
  for (;;) {
    // Taken before the request: the page is at least this fresh, so a change applied later wins over it.
    const observedAt = new Date();
    const next = await iterator.next();
    if (next.done) break;
    const { items, total } = next.value;
    if (total !== null) totals.add(total);
    if (items.length === 0) continue;
    await apply(items, observedAt);
    await markSeen(deps.database.db, runId, entity, items.map((item) => item.id));
    seen += items.length;
    options.onProgress?.({ phase, done: seen, total });
  }
  return { seen, moved: totals.size > 1 };
};

/**
 * Offset pages over a list that changed during the crawl (`Total-Number` moved) can skip items: crawl once
 * more, which writes only what the first pass missed, so a skipped item is not left out until the next run.
 */
const crawlSettled = async <T extends { id: string }>(
  deps: SyncDeps,
  runId: number,
  entity: SeenEntity,
  list: () => AsyncIterable<Page<T>>,
  options: FullSyncOptions,
  phase: SyncProgress['phase'],
  apply: (items: T[], observedAt: Date) => Promise<void>,
): Promise<number> => {
  const first = await crawl(deps, runId, entity, list(), options, phase, apply);
  if (!first.moved) return first.seen;
  deps.logger.info({ entity }, 'the list changed during the crawl: crawling it once more');
  const second = await crawl(deps, runId, entity, list(), options, phase, apply);
  return Math.max(first.seen, second.seen);
};

const crawlAllMembers = async (
  deps: SyncDeps,
  base: Omit<ChangeContext, 'observedAt'>,
  options: FullSyncOptions,
  counts: SyncCounts,
  account: (result: ApplyResult) => void,
) => {
  const db = deps.database.db;
  const queue = new PQueue({ concurrency: options.organizationConcurrency ?? 6 });
  let done = 0;
  let failure: unknown = null;
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
    for (const { id } of batch) {
      void queue.add(async () => {
        if (failure) return;
        try {
          const result = await syncOrganizationMembers(deps, id, base);
          account(result);
          counts.memberships += result.membersChecked;
          counts.memberRoles += result.memberRolesChecked;
          done += 1;
          options.onProgress?.({ phase: 'members', done, total: counts.organizations });
        } catch (error) {
          failure ??= error;
        }
      });
    }
    await queue.onSizeLessThan(queue.concurrency);
    if (failure) break;
  }
  await queue.onIdle();
  if (failure) throw failure;
};

/** Candidates the crawl did not see are removed only once Logto confirms they are gone. */
const removeUnseen = async (
  deps: SyncDeps,
  runId: number,
  entity: SeenEntity,
  base: Omit<ChangeContext, 'observedAt'>,
  account: (result: ApplyResult) => void,
  confirmGone: (ids: string[]) => Promise<string[]>,
): Promise<number> => {
  const db = deps.database.db;
  const remove = { user: removeUsers, organization: removeOrganizations, organization_role: removeOrganizationRoles }[entity];
  let removed = 0;
  let after: string | null = null;
  for (;;) {
    const ids = await unseenIds(db, runId, entity, after, removalBatch);
    if (ids.length === 0) break;
    after = ids[ids.length - 1]!;
    const observedAt = new Date();
    const gone = await confirmGone(ids);
    if (gone.length === 0) continue;
    const result = await remove(db, gone, { ...base, observedAt });
    account(result);
    removed += gone.length;
  }
  return removed;
};

const confirmEach = async (ids: string[], lookup: (id: string) => Promise<unknown>): Promise<string[]> => {
  const found = await Promise.all(ids.map(async (id) => ((await lookup(id)) === null ? id : null)));
  return found.filter((id) => id !== null);
};
