import { sql } from 'drizzle-orm';
import { Agent, get } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncRuns, webhookDeliveries } from '../../db/schema.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
import { changeLogProblems, eventually, leftovers } from '../helpers/invariants.js';
import { serviceEnvironment, spawnService, type ServiceProcess } from '../helpers/service-process.js';
import { startTenant } from '../helpers/tenant.js';

const apiKey = 'faults-writer-secret-0123456789abcdef';
const auth = { authorization: `Bearer ${apiKey}` };

/**
 * SIGTERM while requests and deliveries are under way: readiness turns 503, requests in flight finish,
 * the process exits 0 without waiting past its grace period, and nothing is left half-applied, whether it
 * stopped cleanly, ran out of grace, or was told twice.
 */
describe.skipIf(!hasPostgresServer())('graceful shutdown', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let service: ServiceProcess;
  // One keep-alive connection, opened before the signal: the one a load balancer would still be using.
  const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
  const statusOver = (url: string) =>
    new Promise<number | null>((resolve) => {
      const request = get(url, { agent: keepAlive }, (response) => {
        response.resume();
        resolve(response.statusCode ?? null);
      });
      request.on('error', () => resolve(null));
    });

  const start = async (extra: Record<string, string> = {}) => {
    service = await spawnService(
      serviceEnvironment(sim, database.url!, { API_KEYS: `faults:write:${apiKey}`, WEBHOOK_LEASE_MS: '1500', SHUTDOWN_TIMEOUT_MS: '3000', ...extra }),
    );
    sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);
  };
  const settle = async () => {
    await eventually('the inbox settles', async () =>
      (await database.db.$count(webhookDeliveries, sql`${webhookDeliveries.status} in ('pending', 'processing')`)) === 0 ? true : undefined,
    );
  };
  const expectNothingHalfApplied = async () => {
    // The next process finishes whatever the stopped one left in the inbox.
    await start();
    await sim.webhooks.idle();
    await settle();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect(await changeLogProblems(database.db)).toEqual([]);
    service.signal('SIGTERM');
    expect((await service.exited).code).toBe(0);
    expect(await leftovers(database.db)).toEqual({ running: 0, claimed: 0, advisoryLocks: 0 });
  };
  /** Membership changes whose deliveries need a Logto read each (the member list), slowed down by latency. */
  const membershipChanges = async (count: number, offset: number) => {
    const organizations = sim.state.listOrganizations();
    const users = sim.state.listUsers();
    for (let index = 0; index < count; index += 1) {
      const organization = organizations[(offset + index) % organizations.length]!;
      const outsider = users.find((user) => !sim.state.isMember(organization.id, user.id));
      if (outsider) await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [outsider.id] });
    }
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 16, generate: { users: 60, organizations: 8, organizationRoles: 3 } });
    await start();
    await eventually('the baseline succeeds', async () => {
      const [run] = await database.db.select().from(syncRuns);
      return run?.status === 'succeeded' ? true : undefined;
    }, 60_000);
  }, 90_000);
  afterAll(async () => {
    await service?.kill();
    keepAlive.destroy();
    await sim?.close();
    await database?.drop();
  });

  it('SIGTERM under load: readiness 503, requests in flight finish, exit 0, nothing lost', async () => {
    expect(await statusOver(`${service.url}/readyz`)).toBe(200);
    sim.faults.setLatency(300);
    const organization = sim.state.listOrganizations()[0]!;
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    // Provisioning goes through Logto (slow now): in flight when the signal comes.
    const inFlight = fetch(`${service.url}/v1/organizations/${organization.id}/members`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ userIds: [outsider.id] }),
    });
    await membershipChanges(6, 1);
    await sim.webhooks.idle();
    service.signal('SIGTERM');
    await service.waitForLog((line) => line.msg === 'signal received');
    // Either the kept-alive connection still answers (503, shutting down) or it was closed: never "ready".
    expect([503, null]).toContain(await statusOver(`${service.url}/readyz`));
    expect((await inFlight).status).toBe(201);
    expect((await service.exited).code).toBe(0);
    sim.faults.setLatency(0);
    expect((await leftovers(database.db)).claimed).toBe(0);
    await expectNothingHalfApplied();
  }, 90_000);

  it('when the grace period runs out, the process still exits and leaves nothing half-applied', async () => {
    // Logto's timeout far beyond the test's: waiting for the hung reads would never end in time.
    await start({ SHUTDOWN_TIMEOUT_MS: '1000', LOGTO_TIMEOUT_MS: '600000' });
    // Every member-list read now hangs: the deliveries in hand cannot finish on their own.
    sim.faults.hangNext(1000, { paths: /\/api\/organizations\/[^/]+\/users/ });
    await membershipChanges(4, 3);
    await sim.webhooks.idle();
    await eventually('a delivery is in hand', async () =>
      (await database.db.$count(webhookDeliveries, sql`${webhookDeliveries.status} = 'processing'`)) > 0 ? true : undefined,
    );
    service.signal('SIGTERM');
    // The hung reads never end by themselves: exiting at all means shutdown did not wait for them.
    const exit = await service.exited;
    expect(exit.code).toBe(0);
    sim.faults.reset();
    sim.faults.releaseHung();
    await expectNothingHalfApplied();
  }, 90_000);

  it('a second SIGTERM ends the process at once, and nothing is half-applied', async () => {
    await start();
    sim.faults.setLatency(200);
    await membershipChanges(6, 5);
    await sim.webhooks.idle();
    service.signal('SIGTERM');
    await service.waitForLog((line) => line.msg === 'signal received');
    service.signal('SIGTERM');
    const exit = await service.exited;
    expect(exit.code).toBe(1);
    expect(service.logs.some((line) => line.msg.startsWith('second signal'))).toBe(true);
    sim.faults.setLatency(0);
    await expectNothingHalfApplied();
  }, 90_000);
});
