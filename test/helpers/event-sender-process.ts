/**
 * The event sender as a process of its own, for crash tests: `DATABASE_URL` names the database,
 * `LEASE_MS` the lease. It prints "ready" once sending, and runs until it is killed.
 */
import { openPostgres } from '../../src/db/client.js';
import { createEventSender } from '../../src/jobs/event-sender.js';
import { silentLogger } from '../../src/logger.js';

const database = openPostgres(process.env.DATABASE_URL!);
const sender = createEventSender(
  { db: database.db, logger: silentLogger },
  { allowPrivateUrls: true, pollIntervalMs: 20, leaseMs: Number(process.env.LEASE_MS ?? 1000), concurrency: 8 },
);
sender.start();
process.stdout.write('ready\n');
