import type { Config } from '../config.js';
import { failAbandonedRuns, readSyncState } from '../db/sync-runs.js';
import { repeatEvery } from './repeat.js';
import type { SyncDeps } from '../sync/context.js';
import { roleSweepStateKey, runRoleSweep, type RoleSweepOptions, type RoleSweepResult, type RoleSweepState } from '../sync/role-sweep.js';
import { withJobLock } from './lock.js';

export const roleSweepLockName = 'role-sweep';

/**
 * Organizations one scheduled sweep may re-read. The Logto client's budget (`rate.requests` per
 * `rate.intervalMs`) is shared with webhooks handling, full syncs and provisioning, so a sweep takes at
 * most a quarter of what the budget allows over one sweep interval, counting about one request per
 * organization (one page of members with roles; big organizations take more, and the client's rate limit
 * still holds them back). At least 10, so a tight budget still moves the rotation on.
 */
export const roleSweepBudget = (rate: { requests: number; intervalMs: number }, sweepIntervalMs: number): number =>
  Math.max(10, Math.floor((rate.requests * sweepIntervalMs) / rate.intervalMs / 4));

export type RoleSweepJobOptions = Omit<RoleSweepOptions, 'trigger'> & {
  /** Time between sweeps. Default `config.jobs.roleSweepIntervalMs` (10 min). */
  intervalMs?: number;
  /** Delay before the first tick. Default the smaller of the interval and one minute. */
  initialDelayMs?: number;
};

export type RoleSweepJob = {
  /** Stops the schedule and waits for a sweep under way to finish. */
  stop(): Promise<void>;
  /**
   * Sweeps now, unless a sweep runs elsewhere (another replica or caller: null). Scheduled ticks pass
   * `force: false` and skip when another replica swept within the interval.
   */
  runNow(options?: { force?: boolean }): Promise<RoleSweepResult | null>;
};

/**
 * One sweep under the 'role-sweep' advisory lock (held on its own session for the whole run, so it runs
 * once across replicas; in-process callers are excluded as well). Without `force`, a sweep that another
 * replica finished less than 90% of an interval ago counts as this tick's, so N replicas do not sweep N
 * times per interval.
 */
export const runScheduledRoleSweep = async (
  deps: SyncDeps,
  options: RoleSweepOptions & { intervalMs: number; force?: boolean },
): Promise<RoleSweepResult | null> => {
  const outcome = await withJobLock(deps.database, roleSweepLockName, async (session) => {
    // A sweep is only 'running' while its process holds this lock: one still marked so was left by a process that died.
    await failAbandonedRuns(session, ['sweep'], 'the process running it stopped before it finished');
    if (!options.force) {
      const state = await readSyncState<RoleSweepState>(deps.database.db, roleSweepStateKey);
      const last = state?.lastRunAt ? Date.parse(state.lastRunAt) : Number.NaN;
      if (Number.isFinite(last) && Date.now() - last < options.intervalMs * 0.9) return null;
    }
    return runRoleSweep(deps, options);
  });
  return outcome?.value ?? null;
};

/** Schedules the role sweep every `intervalMs` (a timer chain: a slow sweep delays the next, never overlaps it). */
export const startRoleSweepJob = (deps: SyncDeps & { config: Config }, options: RoleSweepJobOptions = {}): RoleSweepJob => {
  const intervalMs = options.intervalMs ?? deps.config.jobs.roleSweepIntervalMs;
  const maxOrganizations = options.maxOrganizations ?? roleSweepBudget(deps.config.logto.rateLimit, intervalMs);
  const log = deps.logger.child({ job: 'role-sweep' });
  const runNow = (runOptions: { force?: boolean } = {}) =>
    schedule.track(
      runScheduledRoleSweep(deps, {
        ...options,
        maxOrganizations,
        intervalMs,
        trigger: runOptions.force === false ? 'schedule' : 'manual',
        force: runOptions.force ?? true,
      }),
    );
  const schedule = repeatEvery({
    intervalMs,
    initialDelayMs: options.initialDelayMs ?? Math.min(intervalMs, 60_000),
    tick: async () => {
      try {
        const result = await runNow({ force: false });
        if (result) log.info({ runId: result.run.id, counts: result.counts }, 'role sweep done');
      } catch (error) {
        log.error({ err: error }, 'role sweep failed; the next tick tries again');
      }
    },
  });
  return { stop: () => schedule.stop(), runNow };
};
