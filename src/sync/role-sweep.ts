import { sql, type SQL } from 'drizzle-orm';
import PQueue from 'p-queue';
import { accessChanges, organizations } from '../../db/schema.js';
import { rows, type Database } from '../db/client.js';
import { finishSyncRun, readSyncState, startSyncRun, writeSyncState, type SyncRun } from '../db/sync-runs.js';
import { metrics } from '../metrics.js';
import type { ApplyResult } from './apply/index.js';
import type { SyncDeps } from './context.js';
import { refreshOrganizationMembers } from './events/organization-resync.js';
import { DriftReporter } from './report.js';

/**
 * Logto emits nothing when a member's organization roles change (nor when JIT or an invitation grants
 * roles to an existing member), so the role sweep re-reads organizations' members with their roles on a
 * schedule. Each run sweeps a bounded number of organizations: those with recent activity first (most
 * recent change first), then the rest in a rotating order whose position is kept in `sync_state`
 * ('role_sweep'), so that every organization comes round. All requests go through the one Logto client
 * and its shared budget; what a run finds is applied with source 'sweep' under a `sync_runs` row.
 */

export const roleSweepStateKey = 'role_sweep';

export type RoleSweepState = {
  /** The last organization id the rotation swept; the next run continues after it. */
  position: string | null;
  lastRunAt: string | null;
  /** Organizations swept by the last run. */
  organizationsSwept: number;
  /** Completed passes of the rotation over all organizations (incremented when it wraps round). */
  cycle: number;
};

export type RoleSweepOptions = {
  trigger?: string;
  /** Organizations swept at most per run (the run's share of the request budget). Default 100. */
  maxOrganizations?: number;
  /** Stop starting organizations once the run has made this many Logto requests. Default: no limit beyond `maxOrganizations`. */
  maxRequests?: number;
  /** Changes within this window make an organization "recently active". Default 24 h. */
  recentWindowMs?: number;
  /** Organizations re-read at once (each still waits for the shared budget). Default 2. */
  concurrency?: number;
};

export type RoleSweepPlan = {
  /** Recently active organizations, most recent change first. */
  hot: string[];
  /** The next organizations of the rotation (by id, wrapping round). */
  rotation: string[];
  /** The rotation position after this plan. */
  nextPosition: string | null;
  /** Where in `rotation` the order wrapped round to the first organization (a new cycle begins); null if it did not. */
  wrapIndex: number | null;
};

export type RoleSweepCounts = {
  organizations: number;
  failedOrganizations: number;
  membersChecked: number;
  memberRolesChecked: number;
  changes: number;
  rowsWritten: number;
  drift: number;
  requests: number;
  durationMs: number;
};

export type RoleSweepResult = {
  run: SyncRun;
  counts: RoleSweepCounts;
  plan: RoleSweepPlan;
  /** Shorthands: `run.id`, `counts.organizations`, `counts.changes`. */
  runId: number;
  organizationsSwept: number;
  changes: number;
};

/** Sources whose changes count as activity: not the crawls of a baseline or reconcile, which touch everything. */
const activitySources = ['webhook', 'provision', 'sweep'];

/**
 * Which organizations a run sweeps. Recently active ones take at most half the budget (rounded up) when
 * there are more organizations than the budget, so the rotation always moves on.
 */
export const planRoleSweep = async (
  db: Database,
  options: { maxOrganizations: number; recentWindowMs: number; position: string | null },
): Promise<RoleSweepPlan> => {
  const budget = Math.max(1, Math.floor(options.maxOrganizations));
  const [{ total } = { total: 0 }] = await rows<{ total: number }>(db, sql`select count(*)::int as total from ${organizations}`);
  const hotLimit = Number(total) <= budget ? budget : Math.ceil(budget / 2);
  const hot = (
    await rows<{ id: string }>(
      db,
      sql`select c.organization_id as id
          from ${accessChanges} c
          join ${organizations} o on o.id = c.organization_id
          where c.organization_id is not null
            and c.at > now() - make_interval(secs => ${options.recentWindowMs / 1000})
            and c.source in (${sql.join(activitySources.map((source) => sql`${source}`), sql`, `)})
          group by c.organization_id
          order by max(c.at) desc, c.organization_id
          limit ${hotLimit}`,
    )
  ).map((row) => row.id);

  const wanted = budget - hot.length;
  const rotation: string[] = [];
  let wrapIndex: number | null = null;
  if (wanted > 0) {
    const exclude = hot.length === 0 ? sql`true` : sql`id not in (${sql.join(hot.map((id) => sql`${id}`), sql`, `)})`;
    const after = options.position;
    const pick = async (range: SQL, limit: number) =>
      (
        await rows<{ id: string }>(
          db,
          sql`select id from ${organizations} where ${range} and ${exclude} order by id collate "C" limit ${limit}`,
        )
      ).map((row) => row.id);
    rotation.push(...(await pick(after === null ? sql`true` : sql`id collate "C" > ${after}`, wanted)));
    if (rotation.length < wanted && after !== null) {
      // Wrap round to the start, up to (and including) where this run began.
      const before = rotation.length;
      rotation.push(...(await pick(sql`id collate "C" <= ${after}`, wanted - rotation.length)));
      if (rotation.length > before) wrapIndex = before;
    }
  }
  const nextPosition = rotation.length > 0 ? rotation[rotation.length - 1]! : options.position;
  return { hot, rotation, nextPosition, wrapIndex };
};

/** One role sweep. Failures of single organizations are recorded and the run goes on; they come round again. */
export const runRoleSweep = async (deps: SyncDeps, options: RoleSweepOptions = {}): Promise<RoleSweepResult> => {
  const db = deps.database.db;
  const trigger = options.trigger ?? 'schedule';
  const run = await startSyncRun(db, 'sweep', trigger);
  const log = deps.logger.child({ syncRunId: run.id, kind: 'sweep' });
  const started = performance.now();
  const requestsBefore = deps.logto.stats().requests;
  const counts: RoleSweepCounts = {
    organizations: 0,
    failedOrganizations: 0,
    membersChecked: 0,
    memberRolesChecked: 0,
    changes: 0,
    rowsWritten: 0,
    drift: 0,
    requests: 0,
    durationMs: 0,
  };
  const drift = new DriftReporter();
  const failures: { organizationId: string; error: string }[] = [];
  const changesByKind: Record<string, number> = {};
  const account = (result: ApplyResult) => {
    for (const change of result.changes) changesByKind[change.kind] = (changesByKind[change.kind] ?? 0) + 1;
    counts.changes += result.changes.length;
    counts.rowsWritten += result.rowsWritten;
    drift.add(result.changes);
  };
  const finish = () => {
    counts.requests = deps.logto.stats().requests - requestsBefore;
    counts.drift = drift.total();
    counts.durationMs = Math.round(performance.now() - started);
  };

  let plan: RoleSweepPlan = { hot: [], rotation: [], nextPosition: null, wrapIndex: null };
  try {
    const state = await readSyncState<RoleSweepState>(db, roleSweepStateKey);
    plan = await planRoleSweep(db, {
      maxOrganizations: options.maxOrganizations ?? 100,
      recentWindowMs: options.recentWindowMs ?? 86_400_000,
      position: state?.position ?? null,
    });
    const base = { source: 'sweep' as const, syncRunId: run.id, actor: `sweep:${trigger}` };
    const queue = new PQueue({ concurrency: Math.max(1, options.concurrency ?? 2) });
    // The rotation's position is the end of its finished prefix (organizations finish out of order under
    // concurrency; a failed one counts as finished, it comes round again). It is saved after each
    // organization, so a crashed or stopped run resumes where it got to.
    const finishedIndexes = new Set<number>();
    let finishedPrefix = -1;
    const cycleBefore = state?.cycle ?? 0;
    const stateAfter = (prefix: number): RoleSweepState => ({
      position: prefix >= 0 ? plan.rotation[prefix]! : (state?.position ?? null),
      lastRunAt: new Date().toISOString(),
      organizationsSwept: counts.organizations,
      cycle: cycleBefore + (plan.wrapIndex !== null && prefix >= plan.wrapIndex ? 1 : 0),
    });
    let saving: Promise<void> = Promise.resolve();
    const saveProgress = (value: RoleSweepState) => {
      saving = saving
        .then(() => writeSyncState(db, roleSweepStateKey, value))
        .catch((error: unknown) => log.warn({ err: error }, 'role sweep: could not save its position'));
      return saving;
    };
    let budgetSpent = false;
    for (const organizationId of [...plan.hot, ...plan.rotation]) {
      void queue.add(async () => {
        if (options.maxRequests !== undefined && deps.logto.stats().requests - requestsBefore >= options.maxRequests) {
          budgetSpent = true;
          return;
        }
        try {
          const result = await refreshOrganizationMembers(deps, organizationId, base);
          account(result);
          counts.organizations += 1;
          counts.membersChecked += result.membersChecked;
          counts.memberRolesChecked += result.memberRolesChecked;
        } catch (error) {
          counts.failedOrganizations += 1;
          const message = error instanceof Error ? error.message : String(error);
          if (failures.length < 50) failures.push({ organizationId, error: message });
          log.warn({ organizationId, error: message }, 'role sweep: organization not swept');
        }
        const index = plan.rotation.indexOf(organizationId);
        if (index < 0) return;
        finishedIndexes.add(index);
        const before = finishedPrefix;
        while (finishedIndexes.has(finishedPrefix + 1)) finishedPrefix += 1;
        if (finishedPrefix > before) await saveProgress(stateAfter(finishedPrefix));
      });
    }
    await queue.onIdle();
    await saving;

    // With a request budget cut short, the rotation resumes after the end of its finished prefix.
    const finalState = stateAfter(finishedPrefix);
    const position = finalState.position;
    await writeSyncState(db, roleSweepStateKey, finalState);
    finish();
    const failed = counts.organizations === 0 && counts.failedOrganizations > 0;
    const finished = await finishSyncRun(db, run.id, {
      status: failed ? 'failed' : 'succeeded',
      counts,
      report: { changesByKind, drift: drift.toJSON(), hot: plan.hot, rotation: { from: plan.rotation[0] ?? null, to: position, cycle: finalState.cycle }, failures },
      error: failures.length > 0 ? `${counts.failedOrganizations} organization(s) could not be swept; first: ${failures[0]!.error}` : null,
      notes: budgetSpent ? `stopped early: the request budget (${options.maxRequests}) was spent` : null,
    });
    metrics.syncDuration.observe({ kind: 'sweep', status: finished.status }, counts.durationMs / 1000);
    for (const [kind, total] of Object.entries(drift.toJSON().totals)) if (total > 0) metrics.driftFound.inc({ kind }, total);
    log.info({ counts }, 'role sweep finished');
    return { run: finished, counts, plan, runId: finished.id, organizationsSwept: counts.organizations, changes: counts.changes };
  } catch (error) {
    finish();
    const message = error instanceof Error ? error.message : String(error);
    await finishSyncRun(db, run.id, { status: 'failed', counts, report: { drift: drift.toJSON(), failures }, error: message }).catch(
      (finishError: unknown) => log.error({ err: finishError }, 'could not mark the sweep failed'),
    );
    metrics.syncDuration.observe({ kind: 'sweep', status: 'failed' }, counts.durationMs / 1000);
    log.error({ err: error }, 'role sweep failed');
    throw error;
  }
};
