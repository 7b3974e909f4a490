import { and, eq, sql } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncRuns, syncState, users, webhookDeliveries } from '../../db/schema.js';
import { loadConfig, type Config } from '../../src/config.js';
import { writeServiceLifecycle } from '../../src/db/service-state.js';
import { abandonedRunReason } from '../../src/jobs/lock.js';
import { missedDeliveriesStateKey } from '../../src/jobs/missed-deliveries.js';
import { silentLogger } from '../../src/logger.js';
import { startService, type Service } from '../../src/service.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startTenant, tenantEnvironment } from '../helpers/tenant.js';

const apiKey = 'restart-reader-secret-0123456789abcdef';
const dayMs = 24 * 60 * 60 * 1000;

/** The whole service stopped and started again, with the tenant changing while it is down (jobs on, hook logs read). */
describe('fresh again after a restart', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let service: Service | null = null;
  let config: Config;

  const start = async () => {
    service = await startService(config, { logger: silentLogger, database });
    sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);
    return service;
  };
  const stop = async () => {
    await service?.close();
    service = null;
  };
  const api = (path: string) => request(service!.url).get(path).set('authorization', `Bearer ${apiKey}`);
  const asOfHeader = async () => {
    const response = await api('/v1/sync/status').expect(200);
    return new Date(String(response.headers['x-access-state-as-of']));
  };
  const runs = () => database.db.select().from(syncRuns).orderBy(syncRuns.id);
  const waitFor = async (what: string, condition: () => Promise<boolean>, check: () => Promise<void> = async () => {}) => {
    for (let attempt = 0; attempt < 600; attempt += 1) {
      await check();
      if (await condition()) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`gave up waiting: ${what}`);
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 12, generate: { users: 50, organizations: 8, organizationRoles: 3 } });
    config = loadConfig({
      ...tenantEnvironment(sim),
      LOGTO_HOOK_ID: sim.hookId,
      PORT: '0',
      HOST: '127.0.0.1',
      API_KEYS: `restart:read:${apiKey}`,
      // Only the scan at start may find what was missed: the periodic one would come far too late for these tests.
      MISSED_DELIVERIES_INTERVAL: '1h',
      ROLE_SWEEP_INTERVAL: '1h',
      LOG_LEVEL: 'silent',
    });
  });
  afterAll(async () => {
    await stop();
    await sim.close();
    await database.drop();
  });

  it('answers reads 503 not_synced during the first baseline, then 200 once it succeeded', async () => {
    sim.faults.setLatency(60);
    await start();
    await waitFor('the baseline to start', async () => (await runs()).length > 0);
    const during = await api('/v1/users');
    expect(during.status).toBe(503);
    expect(during.body).toMatchObject({ code: 'not_synced' });
    expect(during.headers['retry-after']).toBeDefined();
    expect((await request(service!.url).get('/readyz').expect(200)).body).toMatchObject({ synced: false });
    expect((await api('/v1/sync/status')).status).toBe(200);
    expect((await runs())[0]?.status).toBe('running');
    sim.faults.setLatency(0);

    await waitFor('the baseline to succeed', async () => (await runs())[0]?.status === 'succeeded');
    expect((await api('/v1/users').expect(200)).body.data.length).toBe(sim.state.counts().users);
    expect((await request(service!.url).get('/readyz').expect(200)).body).toMatchObject({ synced: true });
  });

  it('applies within seconds of a start what Logto failed to deliver while stopped, and claims no time after the stop until then', async () => {
    await service!.caughtUp();
    const [renamedLive, renamedWhileDown] = sim.state.listUsers();
    await sim.api.patch(`/users/${renamedLive!.id}`, { name: 'Renamed while running' });
    await sim.webhooks.idle();
    await service!.drainInbox();

    await stop();
    const stoppedAt = Date.now();
    // Logto tries to deliver these to the stopped service, fails, and logs each attempt as an Error.
    const created = await sim.api.post('/users', { username: 'created_while_down', name: 'Created while down' });
    await sim.api.patch(`/users/${renamedWhileDown!.id}`, { name: 'Renamed while down' });
    await sim.webhooks.idle();
    expect(sim.logs.list({ hookId: sim.hookId, startTimeExclusive: stoppedAt - 1 }).map((log) => log.payload.result)).toEqual(['Error', 'Error']);

    await start();
    const applied = async () => {
      const state = await mirrorState(database.db);
      return state.users[created.body.id] !== undefined && state.users[renamedWhileDown!.id]?.name === 'Renamed while down';
    };
    let checks = 0;
    await waitFor('the missed changes to be applied', applied, async () => {
      // Read the header first: if the changes are still missing afterwards, they were missing when it was given.
      const header = await asOfHeader();
      if (await applied()) return;
      checks += 1;
      expect(header.getTime()).toBeLessThanOrEqual(stoppedAt);
    });
    expect(checks).toBeGreaterThan(0);
    await service!.caughtUp();
    expect((await asOfHeader()).getTime()).toBeGreaterThan(stoppedAt);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect((await runs()).filter((run) => run.kind === 'reconcile')).toEqual([]);
    const recovered = await database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.channel, 'recent_logs'));
    expect(recovered.map((delivery) => [delivery.event, delivery.status]).sort()).toEqual([
      ['User.Created', 'applied'],
      ['User.Data.Updated', 'applied'],
    ]);
  });

  it('reconciles at boot after a downtime longer than the hook logs reach, holding the header at the last known-good time until done', async () => {
    await stop();
    // The service was stopped more than a day ago (its crash left no clean-shutdown marker): shift every trace back 25 h.
    const shift = sql`interval '25 hours'`;
    await database.db.update(webhookDeliveries).set({ receivedAt: sql`${webhookDeliveries.receivedAt} - ${shift}` });
    await database.db.update(syncRuns).set({
      startedAt: sql`${syncRuns.startedAt} - ${shift}`,
      finishedAt: sql`${syncRuns.finishedAt} - ${shift}`,
    });
    await database.db
      .update(syncState)
      .set({ value: sql`jsonb_set(${syncState.value}, '{lastCheckedAt}', to_jsonb((${syncState.value}->>'lastCheckedAt')::bigint - ${25 * 3_600_000}))` })
      .where(eq(syncState.key, missedDeliveriesStateKey));
    await writeServiceLifecycle(database.db, { state: 'running', startedAt: new Date(Date.now() - 26 * 3_600_000).toISOString() });
    // A change older than Logto's log window: no log row is left to recover it from, only a reconcile finds it.
    const user = sim.state.listUsers()[5]!;
    sim.state.updateUser(user.id, { name: 'Changed more than a day ago' });

    sim.faults.setLatency(40);
    const startedAt = Date.now();
    await start();
    const reconciled = async () => (await runs()).some((run) => run.kind === 'reconcile' && run.trigger === 'start' && run.status === 'succeeded');
    let checks = 0;
    await waitFor('the boot reconcile to succeed', reconciled, async () => {
      const header = await asOfHeader();
      if (await reconciled()) return;
      checks += 1;
      expect(header.getTime()).toBeLessThan(startedAt - dayMs);
    });
    sim.faults.setLatency(0);
    expect(checks).toBeGreaterThan(0);
    await service!.caughtUp();
    expect((await asOfHeader()).getTime()).toBeGreaterThanOrEqual(startedAt);
    const [stored] = await database.db.select().from(users).where(and(eq(users.id, user.id)));
    expect(stored?.name).toBe('Changed more than a day ago');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('does not reconcile after a clean stop and a short downtime', async () => {
    await stop();
    const before = (await runs()).length;
    await start();
    await service!.caughtUp();
    expect((await runs()).length).toBe(before);
    expect((await asOfHeader()).getTime()).toBeGreaterThan(Date.now() - 60_000);
  });

  it('fails at start the runs a killed process left running, full syncs and role sweeps alike', async () => {
    await stop();
    const left = await database.db
      .insert(syncRuns)
      .values([
        { kind: 'reconcile', trigger: 'cli' },
        { kind: 'sweep', trigger: 'schedule' },
      ])
      .returning();
    await start();
    const after = (await runs()).filter((run) => left.some((row) => row.id === run.id));
    expect(after.map((run) => [run.kind, run.status, run.error])).toEqual([
      ['reconcile', 'failed', abandonedRunReason],
      ['sweep', 'failed', abandonedRunReason],
    ]);
    const status = (await api('/v1/sync/status').expect(200)).body as { lastSweep: { id: number; status: string } | null };
    expect(status.lastSweep).toMatchObject({ id: left[1]!.id, status: 'failed' });
    await service!.caughtUp();
  });
});
