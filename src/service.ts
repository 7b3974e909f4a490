import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { beginDraining, createApp } from './api/app.js';
import { createAppServer } from './api/app-server.js';
import type { Config } from './config.js';
import { openDatabase, runMigrations, type DatabaseHandle } from './db/client.js';
import { finishSyncRun } from './db/sync-runs.js';
import { startFullSync, neverSynced } from './jobs/full-sync-runner.js';
import { startChangeFeed } from './db/change-feed.js';
import { createEventSender, type EventSenderOptions } from './jobs/event-sender.js';
import { createInboxWorker } from './jobs/inbox-worker.js';
import { withJobLock } from './jobs/lock.js';
import { startMissedDeliveriesJob, type MissedDeliveriesJob } from './jobs/missed-deliveries.js';
import {
  createFreshnessHold,
  planRestart,
  readRestartFacts,
  releaseOnFullSync,
  startCatchUp,
  type CatchUp,
} from './jobs/restart-catch-up.js';
import { scheduleReconcile, type ReconcileSchedule } from './jobs/reconcile-schedule.js';
import { startRoleSweepJob } from './jobs/role-sweep-job.js';
import type { Logger } from './logger.js';
import { createLogtoClient, type LogtoClient } from './logto/index.js';
import { retryDeadLetter } from './db/inbox.js';
import { unsettledDeliveries, writeServiceLifecycle } from './db/service-state.js';
import type { SyncDeps } from './sync/context.js';
import { createProvisioning } from './sync/provisioning.js';
import { createWebhookRouter } from './webhooks/router.js';

export type ServiceOptions = {
  logger: Logger;
  /** Run a baseline at start when the database has never been synced (default true). */
  initialSync?: boolean;
  /** Start the cron reconcile, role sweep and missed-delivery jobs (default true). */
  jobs?: boolean;
  /**
   * Catch up on what happened while the service was stopped: the scan of the hook logs at start, and a
   * reconcile when the gap is beyond them (default: as `jobs`).
   */
  catchUp?: boolean;
  /** An already open database (tests); otherwise the one the config names is opened and closed here. */
  database?: DatabaseHandle;
  /** Overrides of the event sender's settings (tests shorten the retry schedule). */
  eventSender?: EventSenderOptions;
};

export type Service = {
  url: string;
  server: Server;
  deps: SyncDeps;
  logto: LogtoClient;
  startReconcile(trigger: string): Promise<{ runId: number; done: Promise<unknown> }>;
  drainInbox(): Promise<void>;
  /** Settles when the catch-up after the stop (scan of the hook logs at start, reconcile at boot) has finished. */
  caughtUp(): Promise<void>;
  /** Resolves when no access event is left to send now (tests and tools). */
  drainEvents(options?: { includeDelayed?: boolean }): Promise<void>;
  close(): Promise<void>;
};

/**
 * Connections of the inbox worker's own pool (beside the shared pool of 10). Under 1,000 arrivals/s several
 * turns' snapshot transactions and settlements are in flight at once; with 3 connections they queued for
 * one, and a delivery's receipt → settlement p95 was 2.4–2.8× longer than with 6 (four back-to-back pairs).
 */
const inboxWorkerConnections = 6;

/**
 * The composition root: one config in, every part wired once. The server, the CLI's long-running mode,
 * the demo and the end-to-end tests all start the service through here.
 */
export const startService = async (config: Config, options: ServiceOptions): Promise<Service> => {
  const { logger } = options;
  const ownsDatabase = !options.database;
  const database = options.database ?? (await openDatabase(config.database));
  await runMigrations(database);
  logger.info({ driver: database.driver }, database.driver === 'postgres' ? 'using PostgreSQL' : 'using embedded PGlite');

  const logto = createLogtoClient(config.logto, { logger });
  const deps: SyncDeps = { database, logto, logger };
  // Taking the lock marks failed any run a process that died left 'running' (see withJobLock).
  await withJobLock(database, 'full-sync', async () => {});

  // What the previous process left behind decides how this one catches up; from now on a crash reads as unclean.
  const jobsEnabled = options.jobs ?? true;
  const catchUpEnabled = options.catchUp ?? jobsEnabled;
  const plan = planRestart(await readRestartFacts(database.db), { now: new Date(), hookConfigured: Boolean(config.logto.hookId) });
  await writeServiceLifecycle(database.db, { state: 'running', startedAt: new Date().toISOString() });
  const freshnessHold = createFreshnessHold();

  /** Full syncs this process runs, by run id: shutdown waits for them within its grace period. */
  const runsInHand = new Map<number, Promise<unknown>>();
  const startReconcile = async (trigger: string, kind: 'baseline' | 'reconcile' = 'reconcile') => {
    const started = await startFullSync(deps, { kind, trigger });
    runsInHand.set(
      started.runId,
      started.done
        .catch(() => {
          // Already logged and recorded on the run by runFullSync; the next run starts clean.
        })
        .finally(() => runsInHand.delete(started.runId)),
    );
    releaseOnFullSync(freshnessHold, started.done);
    return started;
  };

  // The worker's statements on connections of their own: in the shared pool each of them queued behind the
  // receiver's inserts, and under 1,000 deliveries/s a delivery took 0.4 s from receipt to settlement.
  // Pipelining: an apply's opening statements go out together, and its COMMIT with its last write.
  const workerDatabase = database.separatePool(inboxWorkerConnections, { pipeline: true });
  const worker = createInboxWorker({ ...deps, database: workerDatabase, config }, { leaseMs: config.webhooks.leaseMs });
  const provisioning = createProvisioning(deps);
  // Access events out: the sender drains the outbox; the feed (one LISTEN per process) wakes it and the live streams.
  const sender = createEventSender(
    { db: database.db, logger },
    { allowPrivateUrls: config.events.allowPrivateUrls, concurrency: config.events.senderConcurrency, ...options.eventSender },
  );
  const feed = await startChangeFeed(database, { onError: (error) => logger.warn({ err: error }, 'change feed poll failed') });
  // Only by commits that queued outbox rows (or may have). A row that becomes claimable otherwise (a retry
  // falling due; the end of a transaction it waited for, when that one queued nothing) is found by the
  // sender's poll, within its interval, where any later commit used to wake it sooner.
  feed.subscribe({
    wake: (news) => {
      if (news.outboxRows) sender.wake();
    },
    close: () => {},
  });
  let schedule: ReconcileSchedule | null = null;
  const app = createApp({
    db: database.db,
    config,
    logger,
    freshnessCap: () => freshnessHold.cap(),
    webhookRouter: createWebhookRouter({ db: database.db, config, logger, onDelivery: () => worker.wake(), intake: worker.intake }),
    events: { wake: () => sender.wake(), feed },
    actions: {
      startReconcile: async (trigger) => ({ runId: (await startReconcile(trigger)).runId }),
      retryDeadLetter: async (id) => {
        const retried = await retryDeadLetter(database.db, id);
        if (retried) worker.wake();
        return retried;
      },
      nextReconcileAt: () => schedule?.nextRunAt() ?? null,
      provision: provisioning,
    },
  });

  const server = await new Promise<Server>((resolve, reject) => {
    const listening = createAppServer(app).listen(config.http.port, config.http.host, () => resolve(listening));
    listening.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const host = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;
  const url = `http://${host}:${address.port}`;
  logger.info({ url }, 'listening');

  worker.start();
  sender.start();
  const stoppers: (() => Promise<void>)[] = [];
  if (jobsEnabled) {
    schedule = scheduleReconcile(
      { cron: config.jobs.reconcileCron, timezone: config.jobs.reconcileTimezone, logger },
      () => startReconcile('cron'),
    );
    stoppers.push(() => schedule!.stop());
    const sweep = startRoleSweepJob({ ...deps, config });
    stoppers.push(() => sweep.stop());
  }
  let missed: MissedDeliveriesJob | null = null;
  if (config.logto.hookId && (jobsEnabled || catchUpEnabled)) {
    // The catch-up's scan at start is the first check; the schedule runs every interval after it.
    const job = startMissedDeliveriesJob(
      { ...deps, config },
      { onRecovered: () => worker.wake(), ...(jobsEnabled ? {} : { intervalMs: 2 ** 31 - 1 }) },
    );
    missed = job;
    stoppers.push(() => job.stop());
  }
  let catchUp: CatchUp | null = null;
  if (catchUpEnabled) {
    // Deliveries are taken from here on: recover what Logto failed to deliver while stopped, reconcile if that is not enough.
    const running = startCatchUp({
      db: database.db,
      logger,
      plan,
      hold: freshnessHold,
      missed,
      wakeWorker: () => worker.wake(),
      startReconcile: (trigger) => startReconcile(trigger),
    });
    catchUp = running;
    stoppers.unshift(() => running.stop());
  }
  if ((options.initialSync ?? true) && (await neverSynced(deps))) {
    logger.info('the database has never been synced: starting the baseline');
    await startReconcile('start', 'baseline').catch((error: unknown) => logger.warn({ err: error }, 'baseline not started'));
  }

  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      logger.info('shutting down: finishing requests in flight');
      // One grace period for everything: requests, jobs and the deliveries in hand.
      const deadline = Date.now() + config.shutdownTimeoutMs;
      const withinGrace = (work: Promise<unknown>) =>
        new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
          work.then(
            () => resolve(true),
            () => resolve(true),
          ).finally(() => clearTimeout(timer));
        });
      // /readyz answers 503 and responses close their connections, so load balancers stop sending work here.
      beginDraining(app);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Live streams never finish by themselves: ending them lets the server close (clients resume with Last-Event-ID).
      await feed.close();
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), config.shutdownTimeoutMs);
      await closed;
      clearTimeout(timer);
      const stopped = await withinGrace(
        (async () => {
          for (const stop of stoppers) await stop().catch((error: unknown) => logger.warn({ err: error }, 'job did not stop cleanly'));
          // Deliveries not yet applied stay in the inbox for the next start (or another replica).
          await worker.stop();
          // Events not yet sent stay in the outbox for the next start (or another replica).
          await sender.stop();
          await Promise.all(runsInHand.values());
        })(),
      );
      if (!stopped) {
        // Every write is one transaction, so what did not commit is simply not there; the claims in hand
        // expire with their lease and another replica (or the next start) applies those deliveries.
        logger.warn({ graceMs: config.shutdownTimeoutMs }, 'the grace period ran out: work still in hand is left to the next process');
        // A full sync cut short applied only true pages and removed nothing unconfirmed; say that it stopped.
        for (const runId of runsInHand.keys()) {
          await finishSyncRun(database.db, runId, { status: 'failed', counts: {}, error: 'the service stopped before the run finished' }).catch(
            (error: unknown) => logger.warn({ err: error, runId }, 'could not mark the interrupted run failed; the next run does'),
          );
        }
      }
      // A clean stop, and whether it left work behind: the next start plans its catch-up from this.
      await unsettledDeliveries(database.db)
        .then((left) =>
          writeServiceLifecycle(database.db, { state: 'stopped', stoppedAt: new Date().toISOString(), inboxEmpty: stopped && left === 0 }),
        )
        .catch((error: unknown) => logger.warn({ err: error }, 'could not record the clean shutdown'));
      await withinGrace(workerDatabase.close());
      if (ownsDatabase) {
        const released = await withinGrace(database.close());
        if (!released) logger.warn('database connections still in use at the end of the grace period');
      }
      logger.info('stopped');
    })());

  return {
    url,
    server,
    deps,
    logto,
    startReconcile: (trigger) => startReconcile(trigger),
    drainInbox: () => worker.drain(),
    caughtUp: () => catchUp?.done ?? Promise.resolve(),
    drainEvents: (drainOptions) => sender.drain(drainOptions),
    close,
  };
};
