import { setTimeout as sleep } from 'node:timers/promises';
import type { Database } from '../db/client.js';
import {
  lastDeliveryReceivedAt,
  lastFullSyncStartedAt,
  readServiceLifecycle,
  unsettledDeliveries,
  type ServiceLifecycle,
} from '../db/service-state.js';
import { findSyncRun, readSyncState } from '../db/sync-runs.js';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';
import { missedDeliveriesStateKey, type MissedDeliveriesJob, type MissedDeliveriesState } from './missed-deliveries.js';

/**
 * After a stop, the copy is only known to follow Logto up to the stop: deliveries Logto attempted while
 * the service was down failed, and Logto never retries them. They are in the hook's logs (for about a
 * day: `recent-logs` reads the last 24 hours), so a start first scans those logs; when the gap is longer
 * than the logs reach, only a reconcile can close it. Until the catch-up finished, the freshness header
 * stays at the last time the copy was known good.
 */

/** How far back Logto's hook logs reach (`GET /hooks/:id/recent-logs` reads the last 24 hours by default). */
export const hookLogWindowMs = 24 * 60 * 60 * 1000;

export type RestartFacts = {
  /** The latest delivery sent to this service (not one recovered from the logs). */
  lastDeliveryReceivedAt: Date | null;
  /** Up to where the latest scan of the hook logs read. */
  lastScanAt: Date | null;
  /** Start of the latest baseline or reconcile that succeeded; null: never synced. */
  lastFullSyncStartedAt: Date | null;
  /** The lifecycle marker the previous process left: 'running' means it did not stop cleanly. */
  lifecycle: ServiceLifecycle | null;
};

export type RestartPlan = {
  synced: boolean;
  /** The last time the copy is known to have followed Logto: the header shows no later time until the catch-up ends. */
  knownGoodAt: Date | null;
  /** Where the scan at start reads from (before its margin): the older of the last delivery and the last scan. */
  scanSince: Date | null;
  /** Why a reconcile runs at boot, or null. */
  reconcile: string | null;
};

export const readRestartFacts = async (db: Database): Promise<RestartFacts> => {
  const scan = await readSyncState<MissedDeliveriesState>(db, missedDeliveriesStateKey);
  return {
    lastDeliveryReceivedAt: await lastDeliveryReceivedAt(db),
    lastScanAt: typeof scan?.lastCheckedAt === 'number' ? new Date(scan.lastCheckedAt) : null,
    lastFullSyncStartedAt: await lastFullSyncStartedAt(db),
    lifecycle: await readServiceLifecycle(db),
  };
};

const latest = (...dates: (Date | null)[]): Date | null =>
  dates.reduce<Date | null>((best, date) => (date && (!best || date > best) ? date : best), null);
const earliest = (...dates: (Date | null)[]): Date | null =>
  dates.reduce<Date | null>((best, date) => (date && (!best || date < best) ? date : best), null);

/**
 * What a start has to do to be current again. Pure: the facts and the clock in, the plan out.
 * - Known good: the last delivery received before the stop, or a later scan of the logs or full sync (all
 *   happened while the process ran, so none is after the stop).
 * - Down since: the clean stop's own time, or (after a crash, whose time nobody wrote down) the known-good time.
 * - Reconcile when the gap is longer than the hook logs reach, or when there is no hook to read and the
 *   process did not stop cleanly with an empty inbox.
 */
export const planRestart = (
  facts: RestartFacts,
  options: { now: Date; hookConfigured: boolean; logWindowMs?: number },
): RestartPlan => {
  const scanSince = earliest(facts.lastDeliveryReceivedAt, facts.lastScanAt);
  if (!facts.lastFullSyncStartedAt) return { synced: false, knownGoodAt: null, scanSince, reconcile: null };
  const knownGoodAt = latest(facts.lastDeliveryReceivedAt, facts.lastScanAt, facts.lastFullSyncStartedAt)!;
  const stop = facts.lifecycle?.state === 'stopped' ? facts.lifecycle : null;
  const downSince = stop ? new Date(stop.stoppedAt) : knownGoodAt;
  const downMs = options.now.getTime() - downSince.getTime();
  const windowMs = options.logWindowMs ?? hookLogWindowMs;
  let reconcile: string | null = null;
  if (downMs > windowMs) {
    reconcile = `down for ${(downMs / 3_600_000).toFixed(1)} h, longer than Logto keeps hook logs (${windowMs / 3_600_000} h)`;
  } else if (!options.hookConfigured && !stop?.inboxEmpty) {
    reconcile = 'no LOGTO_HOOK_ID to recover missed deliveries from, and the last stop was not clean with an empty inbox';
  }
  return { synced: true, knownGoodAt, scanSince, reconcile };
};

/**
 * Times the freshness header may not go past, by reason. The API shows the earliest of them instead of a
 * later time; with none held it shows what the database says.
 */
export type FreshnessHold = {
  hold(reason: string, at: Date): void;
  release(reason: string): void;
  cap(): Date | null;
};

export const createFreshnessHold = (): FreshnessHold => {
  const held = new Map<string, Date>();
  return {
    hold: (reason, at) => void held.set(reason, at),
    release: (reason) => void held.delete(reason),
    cap: () => (held.size === 0 ? null : earliest(...held.values())),
  };
};

export type CatchUpDeps = {
  db: Database;
  logger: Logger;
  plan: RestartPlan;
  hold: FreshnessHold;
  /** The missed-deliveries job, when a hook id is configured. */
  missed: MissedDeliveriesJob | null;
  wakeWorker(): void;
  /** Starts a reconcile; throws AppError 409 'reconcile_running' with `runId` while one runs elsewhere. */
  startReconcile(trigger: string): Promise<{ runId: number; done: Promise<unknown> }>;
  /** Pause between attempts when Logto or the database fails (default 5 s). */
  retryMs?: number;
};

export type CatchUp = {
  /** Settles when the scan at start (and the boot reconcile, if any) finished, or the catch-up was stopped. */
  done: Promise<void>;
  stop(): Promise<void>;
};

/** Runs what the plan asks for in the background, releasing each hold on the freshness header as its part ends. */
export const startCatchUp = (deps: CatchUpDeps): CatchUp => {
  const { plan, hold, logger } = deps;
  const log = logger.child({ job: 'restart-catch-up' });
  const retryMs = deps.retryMs ?? 5000;
  const abort = new AbortController();
  const pause = (ms: number) => sleep(ms, undefined, { signal: abort.signal, ref: false }).then(
    () => true,
    () => false,
  );

  const scan = async () => {
    const missed = deps.missed;
    if (!missed) return;
    if (plan.knownGoodAt) hold.hold('scan', plan.knownGoodAt);
    const since = plan.scanSince ? { since: plan.scanSince.getTime() } : {};
    while (!abort.signal.aborted) {
      try {
        const result = await missed.runNow(since);
        if (!result) {
          // Another replica is scanning; its window may not reach back as far as ours, so wait and scan ourselves.
          if (!(await pause(1000))) return;
          continue;
        }
        log.info({ window: result.window, stored: result.stored }, 'scanned the hook logs for deliveries missed while stopped');
        deps.wakeWorker();
        // Recovered deliveries carry the time they were recovered; until they are applied, the stop is still the truth.
        while ((await unsettledDeliveries(deps.db, result.storedIds)) > 0) {
          if (!(await pause(100))) return;
        }
        hold.release('scan');
        return;
      } catch (error) {
        log.warn({ err: error }, 'could not scan the hook logs at start; trying again');
        if (!(await pause(retryMs))) return;
      }
    }
  };

  const reconcile = async () => {
    if (!plan.reconcile || !plan.knownGoodAt) return;
    hold.hold('reconcile', plan.knownGoodAt);
    log.warn({ reason: plan.reconcile }, 'reconciling at start: deliveries missed while stopped cannot all be recovered');
    let runId: number;
    try {
      const started = await deps.startReconcile('start');
      runId = started.runId;
      await started.done;
      hold.release('reconcile');
      return;
    } catch (error) {
      if (!(error instanceof AppError && error.code === 'reconcile_running' && typeof error.details?.runId === 'number')) {
        // The header stays held until a later reconcile succeeds (see `releaseOnFullSync`).
        log.error({ err: error }, 'the reconcile at start failed');
        return;
      }
      runId = error.details.runId;
    }
    // Another replica is already reconciling: its run closes the gap as well as ours would.
    while (!abort.signal.aborted) {
      const run = await findSyncRun(deps.db, runId).catch(() => null);
      if (run && run.status !== 'running') {
        if (run.status === 'succeeded') hold.release('reconcile');
        return;
      }
      if (!(await pause(1000))) return;
    }
  };

  const done = Promise.all([scan(), reconcile()]).then(() => undefined);
  return {
    done,
    async stop() {
      abort.abort();
      await done;
    },
  };
};

/** Any full sync that succeeds later also closes the gap a failed boot reconcile left open. */
export const releaseOnFullSync = (hold: FreshnessHold, done: Promise<unknown>): void => {
  done.then(
    () => hold.release('reconcile'),
    () => {},
  );
};
