import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { beginDraining, createApp } from './api/app.js';
import type { Config } from './config.js';
import { openDatabase, runMigrations, type DatabaseHandle } from './db/client.js';
import { failAbandonedRuns } from './db/sync-runs.js';
import { startFullSync, neverSynced } from './jobs/full-sync-runner.js';
import { startChangeFeed } from './db/change-feed.js';
import { createEventSender, type EventSenderOptions } from './jobs/event-sender.js';
import { createInboxWorker } from './jobs/inbox-worker.js';
import { withJobLock } from './jobs/lock.js';
import { startMissedDeliveriesJob } from './jobs/missed-deliveries.js';
import { scheduleReconcile, type ReconcileSchedule } from './jobs/reconcile-schedule.js';
import { startRoleSweepJob } from './jobs/role-sweep-job.js';
import type { Logger } from './logger.js';
import { createLogtoClient, type LogtoClient } from './logto/index.js';
import { retryDeadLetter } from './db/inbox.js';
import type { SyncDeps } from './sync/context.js';
import { createProvisioning } from './sync/provisioning.js';
import { createWebhookRouter } from './webhooks/router.js';

export type ServiceOptions = {
  logger: Logger;
  /** Run a baseline at start when the database has never been synced (default true). */
  initialSync?: boolean;
  /** Start the cron reconcile, role sweep and missed-delivery jobs (default true). */
  jobs?: boolean;
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
  /** Resolves when no access event is left to send now (tests and tools). */
  drainEvents(options?: { includeDelayed?: boolean }): Promise<void>;
  close(): Promise<void>;
};

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
  // A run left 'running' by a process that died is over; only the lock holder may say so.
  await withJobLock(database, 'full-sync', (session) =>
    failAbandonedRuns(session, ['baseline', 'reconcile'], 'the process running it stopped before it finished'),
  );

  const startReconcile = async (trigger: string, kind: 'baseline' | 'reconcile' = 'reconcile') => {
    const started = await startFullSync(deps, { kind, trigger });
    started.done.catch(() => {
      // Already logged and recorded on the run by runFullSync; the next run starts clean.
    });
    return started;
  };

  const worker = createInboxWorker({ ...deps, config });
  const provisioning = createProvisioning(deps);
  // Access events out: the sender drains the outbox; the feed (one LISTEN per process) wakes it and the live streams.
  const sender = createEventSender(
    { db: database.db, logger },
    { allowPrivateUrls: config.events.allowPrivateUrls, concurrency: config.events.senderConcurrency, ...options.eventSender },
  );
  const feed = await startChangeFeed(database, { onError: (error) => logger.warn({ err: error }, 'change feed poll failed') });
  feed.subscribe({ wake: () => sender.wake(), close: () => {} });
  let schedule: ReconcileSchedule | null = null;
  const app = createApp({
    db: database.db,
    config,
    logger,
    webhookRouter: createWebhookRouter({ db: database.db, config, logger, onDelivery: () => worker.wake() }),
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
    const listening = app.listen(config.http.port, config.http.host, () => resolve(listening));
    listening.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const host = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;
  const url = `http://${host}:${address.port}`;
  logger.info({ url }, 'listening');

  worker.start();
  sender.start();
  const stoppers: (() => Promise<void>)[] = [];
  if (options.jobs ?? true) {
    schedule = scheduleReconcile(
      { cron: config.jobs.reconcileCron, timezone: config.jobs.reconcileTimezone, logger },
      () => startReconcile('cron'),
    );
    stoppers.push(() => schedule!.stop());
    const sweep = startRoleSweepJob({ ...deps, config });
    stoppers.push(() => sweep.stop());
    if (config.logto.hookId) {
      const missed = startMissedDeliveriesJob({ ...deps, config }, { onRecovered: () => worker.wake() });
      stoppers.push(() => missed.stop());
    }
  }
  if ((options.initialSync ?? true) && (await neverSynced(deps))) {
    logger.info('the database has never been synced: starting the baseline');
    await startReconcile('start', 'baseline').catch((error: unknown) => logger.warn({ err: error }, 'baseline not started'));
  }

  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= (async () => {
      logger.info('shutting down: finishing requests in flight');
      // /readyz answers 503 and responses close their connections, so load balancers stop sending work here.
      beginDraining(app);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Live streams never finish by themselves: ending them lets the server close (clients resume with Last-Event-ID).
      await feed.close();
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), config.shutdownTimeoutMs);
      await closed;
      clearTimeout(timer);
      for (const stop of stoppers) await stop().catch((error: unknown) => logger.warn({ err: error }, 'job did not stop cleanly'));
      // Deliveries not yet applied stay in the inbox for the next start (or another replica).
      await worker.stop();
      // Events not yet sent stay in the outbox for the next start (or another replica).
      await sender.stop();
      if (ownsDatabase) await database.close();
      logger.info('stopped');
    })());

  return {
    url,
    server,
    deps,
    logto,
    startReconcile: (trigger) => startReconcile(trigger),
    drainInbox: () => worker.drain(),
    drainEvents: (drainOptions) => sender.drain(drainOptions),
    close,
  };
};
