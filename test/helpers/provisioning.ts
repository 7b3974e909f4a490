import request from 'supertest';
import { createApp, type AppOptions } from '../../src/api/app.js';
import { createApiKey } from '../../src/db/api-keys.js';
import { silentLogger } from '../../src/logger.js';
import type { GenerateTenantOptions } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { createProvisioning } from '../../src/sync/provisioning.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { listen, testWorker, webhookConfig } from '../webhooks/harness.js';
import { createTestDatabase } from './database.js';
import { clientFor, startTenant, syncDepsFor } from './tenant.js';

export type ProvisioningStack = Awaited<ReturnType<typeof startProvisioningStack>>;

/**
 * The API with the real provisioning over a simulated tenant, its signed webhooks delivered back to the
 * same app and applied by the inbox worker, on a database that starts from a baseline equal to the tenant.
 */
export const startProvisioningStack = async (
  options: { seed?: number; generate?: GenerateTenantOptions; app?: AppOptions; webhooks?: boolean } = {},
) => {
  const database = await createTestDatabase();
  const sim = await startTenant({ seed: options.seed ?? 7, generate: options.generate ?? { users: 40, organizations: 4, organizationRoles: 3 } });
  const config = webhookConfig({ sim });
  const logto = clientFor(sim);
  const deps = syncDepsFor(database, logto);
  const worker = testWorker(database, logto, config);
  const app = createApp(
    {
      db: database.db,
      config,
      logger: silentLogger,
      webhookRouter: createWebhookRouter({ db: database.db, config, logger: silentLogger, onDelivery: () => worker.wake() }),
      actions: {
        startReconcile: async () => ({ runId: 0 }),
        retryDeadLetter: async () => false,
        nextReconcileAt: () => null,
        provision: createProvisioning(deps),
      },
    },
    { validateResponses: true, ...options.app },
  );
  const receiver = await listen(app);
  if (options.webhooks ?? true) sim.setWebhookEndpoints([{ url: receiver.url }]);
  await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
  worker.start();
  const read = await createApiKey(database.db, { name: 'provision-reader', scope: 'read' });
  const write = await createApiKey(database.db, { name: 'provision-writer', scope: 'write' });
  const withKey = (test: request.Test, key: string) => test.set('Authorization', `Bearer ${key}`);
  return {
    database,
    sim,
    logto,
    app,
    worker,
    config,
    keys: { read, write },
    get: (path: string, key: string = read.secret) => withKey(request(app).get(path), key),
    post: (path: string, key: string = write.secret) => withKey(request(app).post(path), key),
    put: (path: string, key: string = write.secret) => withKey(request(app).put(path), key),
    delete: (path: string, key: string = write.secret) => withKey(request(app).delete(path), key),
    /** Every webhook the tenant sent has arrived and been applied. */
    async settle() {
      await sim.webhooks.idle();
      await worker.drain();
    },
    async close() {
      await worker.stop();
      await receiver.close();
      await sim.close();
      await database.drop();
    },
  };
};
