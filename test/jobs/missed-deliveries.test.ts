import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { webhookDeliveries } from '../../db/schema.js';
import { loadConfig, type Config } from '../../src/config.js';
import { readSyncState } from '../../src/db/sync-runs.js';
import { missedDeliveriesStateKey, startMissedDeliveriesJob, type MissedDeliveriesState } from '../../src/jobs/missed-deliveries.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import type { SyncDeps } from '../../src/sync/context.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, logtoConfigFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

describe('missed deliveries job', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let deps: SyncDeps & { config: Config };
  let sink: Server;
  /** The status the receiver answers with. */
  let answer = 204;

  const recovered = () => database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.channel, 'recent_logs'));
  const job = (overrides: Partial<Config['logto']> = {}) =>
    startMissedDeliveriesJob({ ...deps, config: { ...deps.config, logto: { ...deps.config.logto, ...overrides } } }, { initialDelayMs: 3_600_000 });

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 5, generate: { users: 10, organizations: 2, organizationRoles: 2 } });
    sink = createServer((request, response) => {
      request.resume();
      request.on('end', () => response.writeHead(answer).end());
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    sim.setWebhookEndpoints([{ url: `http://127.0.0.1:${(sink.address() as AddressInfo).port}/hook` }]);
    const config: Config = {
      ...loadConfig({
        LOGTO_BASE_URL: sim.baseUrl,
        LOGTO_CLIENT_ID: sim.clientId,
        LOGTO_CLIENT_SECRET: sim.clientSecret,
        LOGTO_WEBHOOK_SIGNING_KEYS: sim.signingKey,
      }),
      logto: logtoConfigFor(sim),
    };
    deps = { ...syncDepsFor(database, clientFor(sim)), config };
  });
  afterAll(async () => {
    await sim.close();
    await new Promise((resolve) => sink.close(resolve));
    await database.drop();
  });

  it('stores a delivery Logto failed to send, once', async () => {
    const user = sim.state.listUsers()[0]!;
    sim.webhooks.dropNext(1);
    await sim.api.patch(`/users/${user.id}`, { name: 'Missed rename' });
    // A delivery that succeeded is not recovered.
    await sim.api.patch(`/users/${sim.state.listUsers()[1]!.id}`, { name: 'Delivered rename' });
    await sim.webhooks.idle();
    expect(sim.webhooks.sent.filter((sent) => sent.dropped)).toHaveLength(1);

    const missed = job();
    try {
      const first = await missed.runNow();
      expect(first?.stored).toBe(1);
      const rows = await recovered();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ event: 'User.Data.Updated', status: 'pending' });
      expect(rows[0]!.dedupKey).toMatch(/^log:/);
      expect(rows[0]!.payload).toMatchObject({ event: 'User.Data.Updated', params: { userId: user.id }, data: { name: 'Missed rename' } });

      const second = await missed.runNow();
      expect(second?.stored).toBe(0);
      expect(await recovered()).toHaveLength(1);
    } finally {
      await missed.stop();
    }
    const state = await readSyncState<MissedDeliveriesState>(database.db, missedDeliveriesStateKey);
    expect(state?.lastCheckedAt).toBeTypeOf('number');
  });

  it('recovers a delivery the receiver refused as well', async () => {
    const organization = sim.state.listOrganizations()[0]!;
    answer = 500;
    try {
      await sim.api.patch(`/organizations/${organization.id}`, { name: 'Refused rename' });
      await sim.webhooks.idle();
    } finally {
      answer = 204;
    }
    const missed = job();
    try {
      expect((await missed.runNow())?.stored).toBe(1);
      expect((await missed.runNow())?.stored).toBe(0);
    } finally {
      await missed.stop();
    }
    const events = (await recovered()).map((row) => row.event).sort();
    expect(events).toEqual(['Organization.Data.Updated', 'User.Data.Updated']);
  });

  it('does nothing without a hook id', async () => {
    sim.webhooks.dropNext(1);
    await sim.api.patch(`/users/${sim.state.listUsers()[2]!.id}`, { name: 'Unwatched' });
    await sim.webhooks.idle();
    const missed = job({ hookId: undefined });
    try {
      expect(await missed.runNow()).toBeNull();
    } finally {
      await missed.stop();
    }
    expect(await recovered()).toHaveLength(2);
  });
});
