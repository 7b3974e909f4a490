import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import express from 'express';
import { accessChanges, webhookDeliveries } from '../../db/schema.js';
import { loadConfig, type Config } from '../../src/config.js';
import type { Database, DatabaseHandle } from '../../src/db/client.js';
import { createInboxWorker, type InboxWorker, type InboxWorkerOptions } from '../../src/jobs/inbox-worker.js';
import { silentLogger } from '../../src/logger.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { GenerateTenantOptions, SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { recordedSigningKey } from '../helpers/recordings.js';

/** A Standard Webhooks secret for the relay tests. */
export const svixSecret = `whsec_${Buffer.from('a-relay-secret-of-some-length!!').toString('base64')}`;

/** The service's configuration for a test: Logto at the simulated tenant (if any), the given signing keys. */
export const webhookConfig = (
  options: { sim?: SimulatedTenant; signingKeys?: string[]; maxAttempts?: number; svix?: boolean; hookId?: string } = {},
): Config =>
  loadConfig({
    LOGTO_BASE_URL: options.sim?.baseUrl ?? 'http://logto.invalid',
    ...(options.sim ? { LOGTO_MANAGEMENT_API_RESOURCE: options.sim.resource } : {}),
    LOGTO_CLIENT_ID: options.sim?.clientId ?? 'client',
    LOGTO_CLIENT_SECRET: options.sim?.clientSecret ?? 'client-secret',
    LOGTO_WEBHOOK_SIGNING_KEYS: (options.signingKeys ?? [options.sim?.signingKey ?? recordedSigningKey]).join(','),
    ...(options.svix ? { SVIX_WEBHOOK_SECRET: svixSecret } : {}),
    ...(options.hookId ?? options.sim?.hookId ? { LOGTO_HOOK_ID: options.hookId ?? options.sim?.hookId } : {}),
    WEBHOOK_MAX_ATTEMPTS: String(options.maxAttempts ?? 8),
  });

/** The receiver alone, mounted where the service mounts it. */
export const receiverApp = (db: Database, config: Config, onDelivery?: () => void, options: { wakeIntervalMs?: number } = {}): express.Express => {
  const app = express();
  app.use('/webhooks', createWebhookRouter({ db, config, logger: silentLogger, ...(onDelivery ? { onDelivery } : {}), ...options }));
  return app;
};

export type Receiver = { url: string; close(): Promise<void> };

/** The receiver listening on 127.0.0.1, for the simulated tenant to deliver to over HTTP. */
export const listen = async (app: express.Express): Promise<Receiver> => {
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
    listening.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/webhooks/logto`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
};

/** A worker with fast polling and retries, so tests stay quick. */
export const testWorker = (
  database: DatabaseHandle,
  logto: LogtoClient,
  config: Config,
  options: InboxWorkerOptions = {},
): InboxWorker =>
  createInboxWorker(
    { database, logto, logger: silentLogger, config },
    { pollIntervalMs: 20, retryBaseMs: 20, retryCapMs: 100, ...options },
  );

export const deliveries = (db: Database) => db.select().from(webhookDeliveries).orderBy(webhookDeliveries.id);

export const changesFrom = (db: Database, source: string) =>
  db.select().from(accessChanges).where(eq(accessChanges.source, source)).orderBy(accessChanges.id);

export type Pipeline = {
  database: TestDatabase;
  sim: SimulatedTenant;
  logto: LogtoClient;
  config: Config;
  worker: InboxWorker;
  receiver: Receiver;
  close(): Promise<void>;
};

/**
 * The whole webhook path over real HTTP: a simulated tenant delivering its own signed webhooks to the
 * receiver, the worker applying them, on a database that starts from a baseline equal to the tenant.
 */
export const startPipeline = async (tenant: { seed: number; generate: GenerateTenantOptions }): Promise<Pipeline> => {
  const database = await createTestDatabase();
  const sim = await startTenant({ seed: tenant.seed, generate: tenant.generate });
  const config = webhookConfig({ sim });
  const logto = clientFor(sim);
  const worker = testWorker(database, logto, config);
  const receiver = await listen(receiverApp(database.db, config, () => worker.wake()));
  sim.setWebhookEndpoints([{ url: receiver.url }]);
  await runFullSync(syncDepsFor(database, logto), { kind: 'baseline', trigger: 'test' });
  worker.start();
  return {
    database,
    sim,
    logto,
    config,
    worker,
    receiver,
    async close() {
      await worker.stop();
      await receiver.close();
      await sim.close();
      await database.drop();
    },
  };
};
