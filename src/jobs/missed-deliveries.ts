import type { Config } from '../config.js';
import { insertRecoveredDelivery } from '../db/inbox.js';
import { readSyncState, writeSyncState } from '../db/sync-runs.js';
import { repeatEvery } from './repeat.js';
import type { SyncDeps } from '../sync/context.js';
import { withJobLock } from './lock.js';

/**
 * Logto sends each webhook once (no retry of POST, no queue). A delivery that failed (receiver down,
 * timeout, 5xx, even a refused signature) is still in the hook's logs, with the full payload in
 * `hookRequest.body`. This job reads the failed ones since the last check (minus a margin) and stores
 * each in the inbox (channel 'recent_logs', dedup key `log:<log id>`), unless a delivery with the same
 * content is already there. The inbox worker then applies it like any other delivery.
 */

export const missedDeliveriesStateKey = 'missed_deliveries';
export const missedDeliveriesLockName = 'missed-deliveries';

export type MissedDeliveriesState = {
  /** Epoch ms: logs up to here were read. */
  lastCheckedAt: number;
  lastRunAt: string;
  /** Deliveries stored by the last check. */
  recovered: number;
};

export type MissedDeliveriesOptions = {
  /** Read this far before the last check too (late log rows, clock skew). Default 10 min. */
  marginMs?: number;
  /** How far back the first check reads. Default 24 h (Logto's default log window). */
  initialLookbackMs?: number;
  /** Read from here (epoch ms, before the margin) instead of the last check: the scan at start after a stop. */
  since?: number;
};

export type MissedDeliveriesResult = {
  /** Failed deliveries found in the window. */
  failed: number;
  /** Stored in the inbox. */
  stored: number;
  /** Already in the inbox (same content, or the same log read before). */
  known: number;
  /** Log rows without a usable body. */
  skipped: number;
  /** Inbox ids of the deliveries stored by this check. */
  storedIds: number[];
  window: { startTime: number; endTime: number };
};

const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/** One check (no lock; see `runMissedDeliveriesCheck`). Null when no hook id is configured. */
export const recoverMissedDeliveries = async (
  deps: SyncDeps & { config: Config },
  options: MissedDeliveriesOptions = {},
): Promise<MissedDeliveriesResult | null> => {
  const hookId = deps.config.logto.hookId;
  if (!hookId) return null;
  const db = deps.database.db;
  const state = await readSyncState<MissedDeliveriesState>(db, missedDeliveriesStateKey);
  const endTime = Date.now();
  const from =
    options.since ?? (typeof state?.lastCheckedAt === 'number' ? state.lastCheckedAt : endTime - (options.initialLookbackMs ?? 86_400_000));
  const startTime = Math.max(0, from - (options.marginMs ?? 600_000));
  const result: MissedDeliveriesResult = { failed: 0, stored: 0, known: 0, skipped: 0, storedIds: [], window: { startTime, endTime } };
  for await (const page of deps.logto.listHookLogs(hookId, { startTime, endTime, result: 'Error' })) {
    for (const log of page.items) {
      result.failed += 1;
      const body = log.payload.hookRequest?.body;
      if (!isRecord(body) || typeof body.event !== 'string') {
        result.skipped += 1;
        continue;
      }
      const stored = await insertRecoveredDelivery(db, { logId: log.id, payload: body });
      if (stored.duplicate) result.known += 1;
      else {
        result.stored += 1;
        result.storedIds.push(stored.id);
      }
    }
  }
  await writeSyncState(db, missedDeliveriesStateKey, {
    lastCheckedAt: endTime,
    lastRunAt: new Date().toISOString(),
    recovered: result.stored,
  } satisfies MissedDeliveriesState);
  if (result.stored > 0) deps.logger.warn({ stored: result.stored, window: result.window }, 'recovered webhook deliveries Logto failed to deliver');
  return result;
};

/** One check under the 'missed-deliveries' advisory lock: null when another replica (or caller) is checking. */
export const runMissedDeliveriesCheck = async (
  deps: SyncDeps & { config: Config },
  options: MissedDeliveriesOptions = {},
): Promise<MissedDeliveriesResult | null> =>
  (await withJobLock(deps.database, missedDeliveriesLockName, () => recoverMissedDeliveries(deps, options)))?.value ?? null;

export type MissedDeliveriesJobOptions = MissedDeliveriesOptions & {
  /** Default `config.jobs.missedDeliveriesIntervalMs` (MISSED_DELIVERIES_INTERVAL, 5 min). */
  intervalMs?: number;
  /** Default: the interval. */
  initialDelayMs?: number;
  /** Called when a check stored deliveries (wake the inbox worker). */
  onRecovered?: () => void;
};

export type MissedDeliveriesJob = {
  stop(): Promise<void>;
  /** Checks now (null when another replica or caller is checking); `since` widens this one check's window. */
  runNow(options?: Pick<MissedDeliveriesOptions, 'since'>): Promise<MissedDeliveriesResult | null>;
};

/** Checks Logto's hook logs for failed deliveries every few minutes. */
export const startMissedDeliveriesJob = (
  deps: SyncDeps & { config: Config },
  options: MissedDeliveriesJobOptions = {},
): MissedDeliveriesJob => {
  const intervalMs = options.intervalMs ?? deps.config.jobs.missedDeliveriesIntervalMs;
  const log = deps.logger.child({ job: 'missed-deliveries' });
  const runNow = (once: Pick<MissedDeliveriesOptions, 'since'> = {}) =>
    schedule.track(
      runMissedDeliveriesCheck(deps, { ...options, ...once }).then((result) => {
        if (result && result.stored > 0) options.onRecovered?.();
        return result;
      }),
    );
  const schedule = repeatEvery({
    intervalMs,
    initialDelayMs: options.initialDelayMs ?? intervalMs,
    tick: async () => {
      try {
        await runNow();
      } catch (error) {
        log.error({ err: error }, 'could not read the hook logs; the next tick tries again');
      }
    },
  });
  return { stop: () => schedule.stop(), runNow };
};
