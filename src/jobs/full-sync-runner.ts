import type { Config } from '../config.js';
import { openDatabase, type DatabaseHandle } from '../db/client.js';
import { analyzeLoadedTables, analyzeLoadedUsers, summarizeLoadedChanges } from '../db/statistics.js';
import { lastSyncRun, lastSyncRunId } from '../db/sync-runs.js';
import { AppError } from '../errors.js';
import type { SyncDeps } from '../sync/context.js';
import { runFullSync, type FullSyncKind, type FullSyncOptions, type FullSyncResult, type SyncCounts } from '../sync/full-sync.js';
import { withJobLock } from './lock.js';

/**
 * The connections of a process that exists for one baseline (the CLI's `sync`): the lock's session and
 * three for the writes, as many as the ANALYZE after it runs at once. A new backend page-faults each
 * shared buffer the first time it touches it (4 kB pages on a server without reserved huge pages), so
 * spreading the writes over fewer backends is CPU PostgreSQL does not spend: at scale 0.3 a baseline took
 * 9.1 s of backend CPU over 4 connections against 10.7 s over the default 10, in no more time (wall ÷
 * simulator CPU 3.41 against 3.68, three alternating pairs); at scale 1, 28.1 s against 31.1–34.6 s, wall
 * 32.1 s against 32.8–38.3 s (two pairs). A reconcile, mostly reads, was not measured.
 */
export const baselineConnections = 4;

/** The database of a process that runs one baseline and exits, on `baselineConnections` connections. */
export const openBaselineDatabase = (config: Config['database']): Promise<DatabaseHandle> => openDatabase({ ...config, max: baselineConnections });

export type StartedRun = { runId: number; done: Promise<FullSyncResult> };

const lockName = 'full-sync';

/** A reconcile that wrote this many rows loaded in bulk as well (e.g. after a long outage): analyze after it too. */
const bulkRowsWritten = 5000;

/**
 * The run of the start in this process that is taking or holding the lock (null once it ends without
 * one). A start refused in this process is told that run from here: read back from sync_runs, a run
 * that ended before the refused start looked (a short reconcile, a start scheduled late on a loaded
 * host) is missed, and the caller is answered 409 with no run to wait for.
 */
let startInProcess: Promise<number | null> | null = null;

const holdStartInProcess = (run: Promise<number | null>, done: Promise<unknown>) => {
  startInProcess = run;
  const release = () => (startInProcess = null);
  void done.then(release, release);
};

/**
 * The run another replica holds the lock for: it may have taken the lock an instant ago and not yet written
 * its row, so wait for it briefly. A run written after `runsBefore` (the last run id before the lock was
 * tried) is that run whatever its status: a short one can start and end between two looks.
 */
const runningOnAnotherReplica = async (deps: SyncDeps, runsBefore: number | null): Promise<number | null> => {
  for (let attempt = 0; ; attempt += 1) {
    const newest = await lastSyncRun(deps.database.db, ['baseline', 'reconcile']);
    if (newest && (newest.status === 'running' || (runsBefore !== null && newest.id > runsBefore))) return newest.id;
    if (attempt >= 20) return null;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

type StartOptions = Pick<FullSyncOptions, 'kind' | 'trigger' | 'onProgress' | 'organizationConcurrency'>;

/**
 * The ANALYZE of what a run loaded: under the lock, so the next run is planned with these statistics,
 * and before the run is marked finished; a failure costs only speed. Into an empty database it starts as
 * soon as a table is loaded (`onLoaded`): `users` and the change log's BRIN ranges filled so far while
 * members are still crawled, the rest beside the removals. At scale 1 the baseline's tail after its last
 * member page (removals ~0.3 s, then ANALYZE ~0.65 s, of which `access_changes` then its BRIN summary
 * ~0.55 s one after the other) was 0.74–1.16 s; it is ~0.42 s.
 */
export const loadedStatistics = (deps: SyncDeps, kind: FullSyncKind): Pick<FullSyncOptions, 'onLoaded' | 'beforeFinish'> => {
  const warn = (error: unknown) => deps.logger.warn({ err: error }, 'could not analyze the tables the sync loaded');
  let analyzed = false;
  return {
    onLoaded: async (loaded) => {
      // With users, the change log's ranges filled so far, most of them when the users list is the last.
      if (loaded === 'users') {
        await Promise.all([analyzeLoadedUsers(deps.database.db), summarizeLoadedChanges(deps.database.db)]).catch(warn);
        return;
      }
      analyzed = true;
      await analyzeLoadedTables(deps.database.db, { users: false }).catch(warn);
    },
    beforeFinish: async (counts: SyncCounts) => {
      if (analyzed || (kind !== 'baseline' && counts.rowsWritten < bulkRowsWritten)) return;
      await analyzeLoadedTables(deps.database.db).catch(warn);
    },
  };
};

/**
 * Starts a baseline or reconcile under the one 'full-sync' lock, so across every replica at most one
 * runs. Resolves as soon as the run has its id; a start while another runs fails with 409 and that id.
 */
export const startFullSync = (deps: SyncDeps, options: StartOptions): Promise<StartedRun> => tryStart(deps, options, true);

const tryStart = async (deps: SyncDeps, options: StartOptions, mayRetry: boolean): Promise<StartedRun> => {
  // Read before the lock is tried, for a refusal by another replica (a start in this process answers one itself).
  const runsBefore = startInProcess ? null : await lastSyncRunId(deps.database.db);
  let started!: (runId: number) => void;
  const runId = new Promise<number>((resolve) => (started = resolve));
  const done = withJobLock(deps.database, lockName, () =>
    runFullSync(deps, { ...options, onStart: (run) => started(run.id), ...loadedStatistics(deps, options.kind) }),
  ).then((outcome) => {
    if (outcome === null) throw new AppError(409, 'sync_running', 'A full sync or reconcile is already running');
    return outcome.value;
  });
  const inProcess = startInProcess;
  if (!inProcess) holdStartInProcess(Promise.race([runId, done.then(() => null, () => null)]), done);
  const first = await Promise.race([runId.then((id) => ({ id })), done.then(() => null, (error: unknown) => ({ error }))]);
  if (first && 'id' in first) return { runId: first.id, done };
  const error = first?.error;
  if (error instanceof AppError && error.code === 'sync_running') {
    const running = (await inProcess) ?? (await runningOnAnotherReplica(deps, runsBefore));
    // Held by another replica, yet no run is running there and none started since this start looked: its
    // run had ended and it was releasing the lock (the instant between the run's final update and the
    // unlock), which a second of looks has outlasted. Nothing runs, so this start may.
    if (running === null && !inProcess && mayRetry) return tryStart(deps, options, false);
    throw new AppError(409, 'reconcile_running', 'A full sync or reconcile is already running', { runId: running });
  }
  throw error;
};

/** True when no baseline or reconcile has ever succeeded: the database has never been synced. */
export const neverSynced = async (deps: SyncDeps): Promise<boolean> =>
  (await lastSyncRun(deps.database.db, ['baseline', 'reconcile'], 'succeeded')) === null;
