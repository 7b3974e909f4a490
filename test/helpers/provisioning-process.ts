/**
 * A second replica for the Idempotency-Key tests: the API with the real provisioning, in a process of its
 * own, on the database and the Logto named by the environment (the service's settings, plus
 * IDEMPOTENCY_LEASE_MS for a short lease). Prints `listening <port>` once it accepts requests.
 */
import { createApp } from '../../src/api/app.js';
import { loadConfig } from '../../src/config.js';
import { openPostgres } from '../../src/db/client.js';
import { silentLogger } from '../../src/logger.js';
import { createLogtoClient } from '../../src/logto/index.js';
import { createProvisioning } from '../../src/sync/provisioning.js';

const config = loadConfig(process.env);
const database = openPostgres(config.database.url ?? '');
const logto = createLogtoClient(config.logto, { backoff: { baseMs: 5, capMs: 50 } });
const app = createApp(
  {
    db: database.db,
    config,
    logger: silentLogger,
    actions: {
      startReconcile: async () => ({ runId: 0 }),
      retryDeadLetter: async () => false,
      nextReconcileAt: () => null,
      provision: createProvisioning({ database, logto, logger: silentLogger }),
    },
  },
  { idempotency: { leaseMs: Number(process.env.IDEMPOTENCY_LEASE_MS ?? 30_000) } },
);
const server = app.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : 0}\n`);
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void database.close().then(() => process.exit(0));
});
