import { and, desc, eq, gt, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, syncRuns, syncState, webhookDeliveries } from '../../db/schema.js';
import { abandonedRunReason } from '../../src/jobs/lock.js';
import { mulberry32, type SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
import { changeLogProblems, eventually, leftovers, unappliedAcknowledged } from '../helpers/invariants.js';
import { serviceEnvironment, spawnService, type ServiceProcess } from '../helpers/service-process.js';
import { startTenant } from '../helpers/tenant.js';
import { randomEventfulChange, randomSilentRoleChange } from '../helpers/tenant-changes.js';
import { startWebhookRelay, type WebhookRelay } from '../helpers/webhook-relay.js';

const apiKey = 'faults-writer-secret-0123456789abcdef';
// Any seed reproduces a run: FAULTS_SEED=<seed> npx vitest run test/e2e/crash-safety.test.ts
const seed = Number(process.env.FAULTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`[crash-safety] seed ${seed}`);
const random = mulberry32(seed);
const between = (min: number, max: number) => Math.floor(min + random() * (max - min));

/**
 * The service as a real child process, killed with SIGKILL at random points of a baseline, a stream of
 * webhook deliveries, a role sweep and a reconcile, then started again. Whatever the kill interrupted,
 * the next process must finish the work: the database equals the tenant, every delivery answered 2xx
 * is applied exactly once, no change is recorded twice, no run stays running and no claim or lock is left.
 */
describe.skipIf(!hasPostgresServer())('crash safety: SIGKILL at random points', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let relay: WebhookRelay;
  let service: ServiceProcess | null = null;
  const environment = (extra: Record<string, string> = {}) =>
    serviceEnvironment(sim, database.url!, { API_KEYS: `faults:write:${apiKey}`, WEBHOOK_LEASE_MS: '1500', ...extra });

  /**
   * Every process here follows a kill, so once a full sync has succeeded a start reconciles at boot (it
   * has no hook logs to recover missed deliveries from): the id of the last run before that start, or null.
   */
  let bootReconcileAfter: number | null = null;
  const start = async (extra: Record<string, string> = {}) => {
    const runs = await database.db.select().from(syncRuns);
    bootReconcileAfter = runs.some((run) => run.kind !== 'sweep' && run.status === 'succeeded') ? Math.max(...runs.map((run) => run.id)) : null;
    service = await spawnService(environment(extra));
    relay.setTargets([`${service.url}/webhooks/logto`]);
    return service;
  };
  const kill = async () => {
    relay.setTargets([]);
    await service?.kill();
    service = null;
  };
  /** Waits until `sim.stats()` counts `requests` more Logto requests than now (or `limitMs` passes). */
  const afterLogtoRequests = async (requests: number, limitMs: number) => {
    const target = sim.stats().total + requests;
    const deadline = Date.now() + limitMs;
    while (sim.stats().total < target && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  };
  const lastRun = async (kind: string) =>
    (await database.db.select().from(syncRuns).where(eq(syncRuns.kind, kind)).orderBy(desc(syncRuns.id)).limit(1))[0];
  /** Waits for the running process's reconcile at boot, if it has one, to end: until then a run is rightly `running`. */
  const caughtUp = async () => {
    const after = bootReconcileAfter;
    if (after === null) return;
    await eventually('the reconcile at start ends', async () => {
      const [found] = await database.db
        .select()
        .from(syncRuns)
        .where(and(gt(syncRuns.id, after), eq(syncRuns.kind, 'reconcile'), eq(syncRuns.trigger, 'start')));
      return found && found.status !== 'running' ? found : undefined;
    });
  };
  const settledInbox = () =>
    eventually('the inbox settles', async () =>
      (await database.db.$count(webhookDeliveries, sql`${webhookDeliveries.status} in ('pending', 'processing')`)) === 0 ? true : undefined,
    );
  const expectConverged = async () => {
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect(await changeLogProblems(database.db)).toEqual([]);
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 14, generate: { users: 150, organizations: 12, organizationRoles: 4 } });
    relay = await startWebhookRelay({ retryDelayMs: 50 });
    sim.setWebhookEndpoints([{ url: relay.url }]);
  });
  afterAll(async () => {
    await service?.kill();
    await relay?.close();
    await sim?.close();
    await database?.drop();
  });

  it('a baseline killed part-way is finished by the next start', async () => {
    // Latency stretches the baseline so the kills land inside it.
    sim.faults.setLatency({ minMs: 10, maxMs: 30 });
    for (let kill_ = 0; kill_ < 2; kill_ += 1) {
      await start();
      await afterLogtoRequests(between(1, 25), 5000);
      await kill();
    }
    sim.faults.setLatency(0);
    await start();
    const run = await eventually('a baseline succeeds', async () => {
      const found = await lastRun('baseline');
      return found?.status === 'succeeded' ? found : undefined;
    });
    expect(run.trigger).toBe('start');
    await caughtUp();
    await expectConverged();
    expect(await leftovers(database.db)).toMatchObject({ running: 0, claimed: 0 });
  }, 120_000);

  it('deliveries acknowledged before a kill are applied exactly once after the restart', async () => {
    service ??= await start();
    const changes = 60;
    const killAt = new Set([between(5, 25), between(30, 55)]);
    for (let serial = 0; serial < changes; serial += 1) {
      await randomEventfulChange(sim, random, serial);
      if (killAt.has(serial)) {
        // Let some deliveries reach the inbox, then kill the process with them in every stage.
        await new Promise((resolve) => setTimeout(resolve, between(0, 40)));
        await kill();
        await start();
      } else {
        await new Promise((resolve) => setTimeout(resolve, between(0, 10)));
      }
    }
    await sim.webhooks.idle();
    await relay.idle();
    await settledInbox();
    expect(relay.deliveries.length).toBeGreaterThan(changes / 2);
    // Answered 2xx means stored: every one of them is applied, once.
    expect(await unappliedAcknowledged(database.db, relay.deliveries)).toEqual([]);
    await caughtUp();
    await expectConverged();
    expect(await leftovers(database.db)).toMatchObject({ running: 0, claimed: 0 });
  }, 120_000);

  it('a role sweep killed part-way leaves no run running, and the next sweep finishes the work', async () => {
    await kill();
    for (let change = 0; change < 15; change += 1) randomSilentRoleChange(sim, random);
    sim.faults.setLatency({ minMs: 20, maxMs: 40 });
    await start({ ROLE_SWEEP_INTERVAL: '1s' });
    const swept = await eventually('a sweep starts', async () => (await lastRun('sweep')) ?? undefined);
    await afterLogtoRequests(between(1, 8), 3000);
    await kill();
    sim.faults.setLatency(0);
    await start({ ROLE_SWEEP_INTERVAL: '1s' });
    await eventually('a later sweep succeeds', async () => {
      const found = await lastRun('sweep');
      return found && found.id > swept.id && found.status === 'succeeded' ? found : undefined;
    });
    await caughtUp();
    await kill();
    await expectConverged();
    expect(await leftovers(database.db)).toEqual({ running: 0, claimed: 0, advisoryLocks: 0 });
  }, 120_000);

  it('a reconcile killed part-way leaves the data intact, and the next reconcile is exact', async () => {
    // Drift Logto sends no webhook for, so only a reconcile can repair it.
    for (let change = 0; change < 10; change += 1) randomSilentRoleChange(sim, random);
    const renamed = sim.state.listUsers()[3]!;
    sim.state.updateUser(renamed.id, { name: 'Renamed without a webhook' });
    /**
     * Starts a reconcile. A process started after a kill reconciles at boot by itself (no hook logs to
     * recover missed deliveries from): while that run goes on the request is answered 409 with its id, so
     * ours waits for it to end and asks again.
     */
    const reconcile = async () => {
      for (;;) {
        const response = await fetch(`${service!.url}/v1/sync/reconcile`, { method: 'POST', headers: { authorization: `Bearer ${apiKey}` } });
        if (response.status !== 409) {
          expect(response.status).toBe(202);
          return ((await response.json()) as { runId: number }).runId;
        }
        const running = (await response.json()) as { code?: string; runId?: number | null };
        expect(running.code).toBe('reconcile_running');
        await eventually('the running full sync ends', async () => {
          const [found] = await database.db
            .select()
            .from(syncRuns)
            .where(running.runId ? eq(syncRuns.id, running.runId) : eq(syncRuns.status, 'running'));
          return running.runId ? (found && found.status !== 'running' ? true : undefined) : found ? undefined : true;
        });
      }
    };
    sim.faults.setLatency({ minMs: 10, maxMs: 30 });
    {
      await start();
      await reconcile();
      await afterLogtoRequests(between(1, 25), 5000);
      await kill();
      // Whatever it wrote before the kill is true: nothing Logto still has was removed.
      const stored = await mirrorState(database.db);
      const tenant = tenantState(sim.state.snapshot());
      expect(Object.keys(stored.users).sort()).toEqual(Object.keys(tenant.users).sort());
    }
    // More silent drift while the service is down: the reconcile before the kill may have repaired the first.
    for (let change = 0; change < 10; change += 1) randomSilentRoleChange(sim, random);
    sim.state.updateUser(sim.state.listUsers()[4]!.id, { name: 'Renamed while the service was down' });
    sim.faults.setLatency(0);
    await start();
    const runId = await reconcile();
    const run = await eventually('the reconcile succeeds', async () => {
      const [found] = await database.db.select().from(syncRuns).where(eq(syncRuns.id, runId));
      return found?.status === 'succeeded' ? found : undefined;
    });
    expect(run.kind).toBe('reconcile');
    await kill();
    await expectConverged();
    expect(await leftovers(database.db)).toEqual({ running: 0, claimed: 0, advisoryLocks: 0 });
  }, 120_000);
});

/**
 * The crawl position of a full sync is kept in the database, so a baseline whose process is SIGKILLed
 * part-way is continued by the next one from the last page it applied, not started over.
 */
describe.skipIf(!hasPostgresServer())('crash safety: a killed baseline is continued from its last applied page', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let service: ServiceProcess | null = null;
  const users = 3000;
  const userPages = users / 100;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 114, generate: { users, organizations: 4, organizationRoles: 2 } });
  });
  afterAll(async () => {
    await service?.kill();
    await sim?.close();
    await database?.drop();
  });

  const crawledUserPages = async () => {
    const [row] = await database.db.select().from(syncState).where(eq(syncState.key, 'full-sync:crawl'));
    return row ? ((row.value as { crawlId: number; lists: { user?: { pages: number } } }).lists.user?.pages ?? 0) : null;
  };

  it('the next start asks Logto only for the user pages the killed one had not applied, and logs each user once', async () => {
    // One request at a time, each slow: the kill lands with some user pages applied and many to go.
    sim.faults.setLatency({ minMs: 60, maxMs: 90 });
    service = await spawnService(serviceEnvironment(sim, database.url!, { LOGTO_CONCURRENCY: '1' }));
    await eventually('some user pages are applied', async () => ((await crawledUserPages()) ?? 0) >= 3 ? true : undefined, 60_000, 10);
    await service.kill();
    service = null;
    const [killed] = await database.db.select().from(syncRuns);
    expect(killed).toMatchObject({ kind: 'baseline', status: 'running' });
    const applied = (await crawledUserPages())!;
    expect(applied).toBeGreaterThanOrEqual(3);
    expect(applied).toBeLessThan(userPages);

    sim.faults.setLatency(0);
    sim.faults.resetStats();
    service = await spawnService(serviceEnvironment(sim, database.url!));
    const run = await eventually('the next baseline succeeds', async () => {
      const [found] = await database.db.select().from(syncRuns).where(gt(syncRuns.id, killed!.id));
      return found?.status === 'succeeded' ? found : undefined;
    }, 60_000);
    await service.kill();
    service = null;
    expect(run.report).toMatchObject({ resumedFrom: killed!.id });
    // Pages 1..applied are not asked for again (an empty database has no removals to confirm).
    expect(sim.stats().byRoute['GET /api/users']?.total).toBe(userPages - applied);
    const [left] = await database.db.select().from(syncRuns).where(eq(syncRuns.id, killed!.id));
    expect(left).toMatchObject({ status: 'failed', error: abandonedRunReason });
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect(await database.db.$count(accessChanges, eq(accessChanges.kind, 'user.created'))).toBe(users);
    expect(await changeLogProblems(database.db)).toEqual([]);
    expect(await leftovers(database.db)).toEqual({ running: 0, claimed: 0, advisoryLocks: 0 });
  }, 180_000);
});
