import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The service's HTTP stack with its webhook receiver and nothing behind it (no inbox worker, no jobs):
 * the built `createApp` and `createWebhookRouter` from `<build>/dist/src`, configured from the environment
 * as the service is. `bench/hot-paths.ts` loads it beside the service to tell the receive path's own cost
 * from what the worker applying the deliveries on the same cores takes. argv: <build dir> <port>.
 */
const [build, port] = process.argv.slice(2) as [string, string];
const from = async <T>(path: string): Promise<T> => (await import(`${build}/dist/src/${path}`)) as T;
const { loadConfig } = await from<typeof import('../../src/config.js')>('config.js');
const { openDatabase } = await from<typeof import('../../src/db/client.js')>('db/client.js');
const { createApp } = await from<typeof import('../../src/api/app.js')>('api/app.js');
const { createWebhookRouter } = await from<typeof import('../../src/webhooks/router.js')>('webhooks/router.js');
const { createLogger } = await from<typeof import('../../src/logger.js')>('logger.js');

const config = loadConfig();
const logger = createLogger(config.logLevel);
const database = await openDatabase(config.database);
const unused = () => {
  throw new Error('not served by the receiver-only bench app');
};
const app = createApp({
  db: database.db,
  config,
  logger,
  webhookRouter: createWebhookRouter({ db: database.db, config, logger }),
  actions: {
    startReconcile: unused,
    retryDeadLetter: unused,
    nextReconcileAt: () => null,
    provision: new Proxy({}, { get: () => unused }) as never,
  },
});
// As the service serves it; a build older than `createAppServer` has only express's own server.
const appServer = await from<typeof import('../../src/api/app-server.js')>('api/app-server.js').catch(() => null);
const server = (appServer ? appServer.createAppServer(app) : createServer(app)).listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`));
