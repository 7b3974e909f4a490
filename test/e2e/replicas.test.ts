import { asc, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncRuns, webhookDeliveries } from '../../db/schema.js';
import { rows } from '../../src/db/client.js';
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
const seed = Number(process.env.FAULTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`[replicas] seed ${seed}`);
const random = mulberry32(seed);
const reconcileEverySeconds = 4;
const sweepEveryMs = 2000;

/**
 * Three service processes on one database, no load balancer: the test spreads deliveries and API calls
 * (reads and provisioning writes) over them in turn and kills one mid-stream. Every delivery is applied
 * once, each scheduled reconcile and sweep runs once per schedule across the three, and PostgreSQL
 * reports no deadlock.
 */
describe.skipIf(!hasPostgresServer())('three replicas on one database', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let relay: WebhookRelay;
  let replicas: ServiceProcess[] = [];

  const deadlocks = async () => {
    const [row] = await rows<{ deadlocks: number }>(
      database.db,
      sql`select deadlocks::int as deadlocks from pg_stat_database where datname = current_database()`,
    );
    return Number(row?.deadlocks ?? 0);
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 17, generate: { users: 120, organizations: 10, organizationRoles: 4 } });
    relay = await startWebhookRelay({ retryDelayMs: 20 });
    sim.setWebhookEndpoints([{ url: relay.url }]);
  });
  afterAll(async () => {
    await Promise.all(replicas.map((replica) => replica.kill()));
    await relay?.close();
    await sim?.close();
    await database?.drop();
  });

  it('apply every delivery once, run each schedule once, never deadlock, and lose nothing when one dies', async () => {
    const deadlocksBefore = await deadlocks();
    const environment = serviceEnvironment(sim, database.url!, {
      API_KEYS: `faults:write:${apiKey}`,
      WEBHOOK_LEASE_MS: '1500',
      RECONCILE_CRON: `*/${reconcileEverySeconds} * * * * *`,
      ROLE_SWEEP_INTERVAL: `${sweepEveryMs}ms`,
    });
    replicas = await Promise.all([0, 1, 2].map(() => spawnService(environment)));
    relay.setTargets(replicas.map((replica) => `${replica.url}/webhooks/logto`));
    // The first full sync is the start's baseline, or a scheduled reconcile when its tick took the job
    // lock first (the reconcile runs every few seconds here): either one syncs the empty database.
    await eventually('the first full sync succeeds', async () => {
      const [run] = await database.db
        .select()
        .from(syncRuns)
        .where(sql`${syncRuns.kind} in ('baseline', 'reconcile') and ${syncRuns.status} = 'succeeded'`);
      return run ?? undefined;
    }, 60_000);

    let reads = 0;
    let readFailures = 0;
    const reading = (async () => {
      for (let index = 0; index < 60; index += 1) {
        // A request cut off by the kill is sent to the next replica, as a load balancer would.
        let response: Response | null = null;
        for (let attempt = 0; !response && attempt < 3; attempt += 1) {
          const replica = replicas[(index + attempt) % replicas.length]!;
          response = await fetch(`${replica.url}/v1/users?limit=50`, { headers: { authorization: `Bearer ${apiKey}` } }).catch(() => null);
        }
        reads += 1;
        if (response?.status !== 200) readFailures += 1;
        await response?.arrayBuffer();
      }
    })();

    // Provisioning through the replicas in turn: write-through applies racing the deliveries of the same
    // memberships on the other replicas.
    const writeStatuses: (number | string | null)[] = [];
    const writing = (async () => {
      for (let index = 0; index < 15; index += 1) {
        const organization = sim.state.listOrganizations()[Math.floor(random() * sim.state.listOrganizations().length)]!;
        const user = sim.state.listUsers()[Math.floor(random() * sim.state.listUsers().length)]!;
        const role = sim.state.listOrganizationRoles()[Math.floor(random() * sim.state.listOrganizationRoles().length)]!;
        // A PUT is idempotent: one cut off by the kill is sent again to the next replica.
        let response: Response | null = null;
        for (let attempt = 0; !response && attempt < 3; attempt += 1) {
          const replica = replicas[(index + attempt) % replicas.length]!;
          response = await fetch(`${replica.url}/v1/organizations/${organization.id}/members/${user.id}/roles/${role.id}?addMember=true`, {
            method: 'PUT',
            headers: { authorization: `Bearer ${apiKey}` },
          }).catch(() => null);
        }
        // The stream of changes deletes users and removes members beside these writes: a 404 is the right
        // answer for a user (or organization, or role) that is gone by then, and only for one that is gone;
        // a 409 saying the member left again, or vanished before it could be copied, only for a membership
        // that is gone by then.
        const gone = !sim.state.getUser(user.id) || !sim.state.getOrganization(organization.id) || !sim.state.getOrganizationRole(role.id);
        const left = gone || !sim.state.isMember(organization.id, user.id);
        const body = response ? await response.text() : '';
        const code = response?.status === 409 ? (JSON.parse(body) as { code?: string }).code : undefined;
        writeStatuses.push(
          (response?.status === 404 && gone) || ((code === 'conflict' || code === 'not_synced') && left)
            ? 'gone'
            : response?.status === 409
              ? `409 ${body}`
              : (response?.status ?? null),
        );
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
    })();

    const changes = 60;
    const killAt = Math.floor(changes / 3 + random() * (changes / 3));
    for (let serial = 0; serial < changes; serial += 1) {
      await randomEventfulChange(sim, random, serial);
      if (serial % 10 === 0) randomSilentRoleChange(sim, random);
      if (serial === killAt) {
        // The relay goes on to the two that are left; what the dead one held is claimed again after its lease.
        const victim = replicas.splice(Math.floor(random() * replicas.length), 1)[0]!;
        relay.setTargets(replicas.map((replica) => `${replica.url}/webhooks/logto`));
        await victim.kill();
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await reading;
    await writing;
    await sim.webhooks.idle();
    await relay.idle();
    await eventually('the inbox settles', async () =>
      (await database.db.$count(webhookDeliveries, sql`${webhookDeliveries.status} in ('pending', 'processing')`)) === 0 ? true : undefined,
    );
    // Let the schedules run a few more times on the two survivors, then check what the database says.
    const sweepsSoFar = await database.db.$count(syncRuns, sql`${syncRuns.kind} = 'sweep' and ${syncRuns.status} = 'succeeded'`);
    await eventually('another sweep succeeds', async () =>
      (await database.db.$count(syncRuns, sql`${syncRuns.kind} = 'sweep' and ${syncRuns.status} = 'succeeded'`)) > sweepsSoFar ? true : undefined,
    30_000);
    const scheduledReconciles = () =>
      database.db.$count(syncRuns, sql`${syncRuns.kind} = 'reconcile' and ${syncRuns.trigger} = 'cron' and ${syncRuns.status} = 'succeeded'`);
    const reconcilesSoFar = await scheduledReconciles();
    await eventually('a scheduled reconcile succeeds after the stream', async () =>
      (await scheduledReconciles()) > reconcilesSoFar ? true : undefined,
    30_000);
    await Promise.all(replicas.map(async (replica) => {
      replica.signal('SIGTERM');
      expect((await replica.exited).code).toBe(0);
    }));

    expect(readFailures).toBe(0);
    expect(reads).toBe(60);
    expect(writeStatuses.filter((status) => status !== 200 && status !== 201 && status !== 'gone')).toEqual([]);
    expect(writeStatuses).toHaveLength(15);
    expect(await unappliedAcknowledged(database.db, relay.deliveries)).toEqual([]);
    expect(await changeLogProblems(database.db)).toEqual([]);
    // The silent role changes are the sweep's and the reconcile's to find; the rest came by webhook.
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));

    const runs = await database.db.select().from(syncRuns).orderBy(asc(syncRuns.id));
    const cronSlots = runs
      .filter((run) => run.kind === 'reconcile' && run.trigger === 'cron')
      .map((run) => Math.floor(run.startedAt.getTime() / 1000 / reconcileEverySeconds));
    expect(cronSlots.length).toBeGreaterThan(0);
    expect(cronSlots.length).toBe(new Set(cronSlots).size);
    // A sweep the kill cut short (failed by the next holder of a job lock) is rightly followed by a survivor's at its next tick.
    const sweeps = runs.filter((run) => run.kind === 'sweep' && run.error !== abandonedRunReason);
    const tooClose = sweeps
      .slice(1)
      .map((run, index) => ({ id: run.id, status: run.status, afterMs: run.startedAt.getTime() - sweeps[index]!.startedAt.getTime() }))
      .filter((gap) => gap.afterMs < sweepEveryMs / 2);
    expect(tooClose).toEqual([]);
    expect(await leftovers(database.db)).toEqual({ running: 0, claimed: 0, advisoryLocks: 0 });
    expect(await deadlocks()).toBe(deadlocksBefore);
  }, 180_000);
});
