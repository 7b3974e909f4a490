import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { users, webhookDeliveries } from '../../db/schema.js';
import type { Config } from '../../src/config.js';
import { readSyncState } from '../../src/db/sync-runs.js';
import type { InboxWorker } from '../../src/jobs/inbox-worker.js';
import {
  missedDeliveriesStateKey,
  recoverMissedDeliveries,
  startMissedDeliveriesJob,
  type MissedDeliveriesState,
} from '../../src/jobs/missed-deliveries.js';
import { silentLogger } from '../../src/logger.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import type { TestDatabase } from '../helpers/database.js';
import { deliveries, startPipeline, type Pipeline, type Receiver } from '../webhooks/harness.js';

/** Logto never retries a failed delivery; its hook logs keep the payload, and the service recovers it from there. */
describe('recovering deliveries Logto failed to make', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let logto: LogtoClient;
  let worker: InboxWorker;
  let receiver: Receiver;
  let config: Config;
  const deps = () => ({ database, logto, logger: silentLogger, config });
  const settle = async () => {
    await sim.webhooks.idle();
    await worker.drain();
  };

  let pipeline: Pipeline;
  beforeAll(async () => {
    pipeline = await startPipeline({ seed: 9, generate: { users: 20, organizations: 3, organizationRoles: 2 } });
    ({ database, sim, logto, worker, receiver, config } = pipeline);
  });
  afterAll(async () => {
    await pipeline.close();
  });
  afterEach(() => {
    sim.setWebhookEndpoints([{ url: receiver.url }]);
  });

  it('stores a dropped delivery from the hook logs and applies it', async () => {
    const user = sim.state.listUsers()[0]!;
    sim.webhooks.dropNext(1);
    await sim.api.patch(`/users/${user.id}`, { name: 'Renamed, webhook lost' });
    await settle();
    expect(sim.webhooks.sent.at(-1)).toMatchObject({ dropped: true });
    expect(await database.db.$count(webhookDeliveries)).toBe(0);
    expect((await mirrorState(database.db)).users[user.id]?.name).not.toBe('Renamed, webhook lost');

    const result = await recoverMissedDeliveries(deps());
    expect(result).toMatchObject({ failed: 1, stored: 1, known: 0, skipped: 0 });
    const [row] = await deliveries(database.db);
    const [log] = sim.logs.list({ hookId: sim.hookId, startTimeExclusive: 0 });
    expect(row).toMatchObject({ channel: 'recent_logs', dedupKey: `log:${log!.id}`, event: 'User.Data.Updated' });
    await settle();
    expect((await deliveries(database.db))[0]?.status).toBe('applied');
    const [stored] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(stored?.name).toBe('Renamed, webhook lost');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));

    // The next check reads the same log again (its window overlaps by a margin) and stores nothing.
    const state = await readSyncState<MissedDeliveriesState>(database.db, missedDeliveriesStateKey);
    expect(state?.lastCheckedAt).toBe(result!.window.endTime);
    const again = await recoverMissedDeliveries(deps(), { marginMs: 60_000 });
    expect(again).toMatchObject({ failed: 1, stored: 0, known: 1 });
    expect(again!.window.startTime).toBe(result!.window.endTime - 60_000);
    expect(await database.db.$count(webhookDeliveries)).toBe(1);
  });

  it('does not store again a delivery that reached the receiver although Logto logged it as failed', async () => {
    // A second hook endpoint that is down: Logto logs the failure, with the very payload we did receive.
    sim.setWebhookEndpoints([{ url: receiver.url }, { url: 'http://127.0.0.1:9/down' }]);
    const organization = sim.state.listOrganizations()[0]!;
    await sim.api.patch(`/organizations/${organization.id}`, { description: 'delivered once' });
    await settle();
    const before = await database.db.$count(webhookDeliveries);
    const result = await recoverMissedDeliveries(deps());
    expect(result!.known).toBeGreaterThanOrEqual(1);
    expect(result!.stored).toBe(0);
    expect(await database.db.$count(webhookDeliveries)).toBe(before);
  });

  it('recovers a dropped membership event, and the job wakes the worker', async () => {
    const organization = sim.state.listOrganizations()[1]!;
    const joiner = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    sim.webhooks.dropNext(1);
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [joiner.id] });
    await settle();
    expect((await mirrorState(database.db)).memberships[organization.id]?.[joiner.id]).toBeUndefined();
    let woken = 0;
    const job = startMissedDeliveriesJob(deps(), { intervalMs: 3_600_000, initialDelayMs: 3_600_000, onRecovered: () => ((woken += 1), worker.wake()) });
    const result = await job.runNow();
    await job.stop();
    expect(result?.stored).toBe(1);
    expect(woken).toBe(1);
    await settle();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('checks again every MISSED_DELIVERIES_INTERVAL without being asked', async () => {
    const user = sim.state.listUsers()[3]!;
    sim.webhooks.dropNext(1);
    await sim.api.patch(`/users/${user.id}`, { name: 'Found by the scheduled check' });
    await settle();
    const job = startMissedDeliveriesJob({ ...deps(), config: { ...config, jobs: { ...config.jobs, missedDeliveriesIntervalMs: 100 } } }, { onRecovered: () => worker.wake() });
    try {
      for (let attempt = 0; attempt < 200 && (await mirrorState(database.db)).users[user.id]?.name !== 'Found by the scheduled check'; attempt += 1) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      await job.stop();
    }
    expect((await mirrorState(database.db)).users[user.id]?.name).toBe('Found by the scheduled check');
  });

  it('does nothing without a hook id', async () => {
    const withoutHook = { ...deps(), config: { ...config, logto: { ...config.logto, hookId: undefined } } };
    expect(await recoverMissedDeliveries(withoutHook)).toBeNull();
  });
});
