import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { webhookDeliveries } from '../../db/schema.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { createProvisioning } from '../../src/sync/provisioning.js';
import { runRoleSweep } from '../../src/sync/role-sweep.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { changeLogProblems, eventually } from '../helpers/invariants.js';
import { syncDepsFor } from '../helpers/tenant.js';
import { randomSilentRoleChange } from '../helpers/tenant-changes.js';
import { mulberry32 } from '../../src/simulator/index.js';
import { startPipeline, type Pipeline } from '../webhooks/harness.js';

/**
 * The simulated tenant times out, answers 5xx and throttles with 429 + Retry-After during a full sync,
 * the re-reads webhook deliveries need, a role sweep and provisioning. Each is retried within the
 * budget, never in a tight loop (the requests are counted), and ends with the database equal to Logto.
 */
describe('Logto outage and throttling', () => {
  let pipeline: Pipeline;
  const random = mulberry32(1414);
  const exact = async () => {
    expect(await mirrorState(pipeline.database.db)).toEqual(tenantState(pipeline.sim.state.snapshot()));
    expect(await changeLogProblems(pipeline.database.db)).toEqual([]);
  };
  /** Requests the code under test made to Logto's Management API and token endpoint. */
  const requests = () => pipeline.sim.stats().total;

  beforeAll(async () => {
    pipeline = await startPipeline({ seed: 18, generate: { users: 80, organizations: 8, organizationRoles: 3 } });
  }, 60_000);
  afterAll(async () => {
    pipeline.sim.faults.reset();
    pipeline.sim.faults.releaseHung();
    await pipeline?.close();
  });

  it('a reconcile rides out 5xx, a timeout and a 429 burst, with one retry per failure', async () => {
    const { sim, database, logto } = pipeline;
    for (let change = 0; change < 8; change += 1) randomSilentRoleChange(sim, random);
    const clean = requests();
    await runFullSync(syncDepsFor(database, logto), { kind: 'reconcile', trigger: 'test' });
    const perRun = requests() - clean;
    for (let change = 0; change < 8; change += 1) randomSilentRoleChange(sim, random);

    // Six failures in a row: within the client's retries (LOGTO_MAX_RETRIES, 6 here) for whichever request meets them.
    sim.faults.failNext(2, { status: 503 });
    sim.faults.failNext(1, { status: 502 });
    sim.faults.failNext(2, { status: 429, retryAfterSeconds: 1 });
    sim.faults.hangNext(1);
    const before = requests();
    const result = await runFullSync(syncDepsFor(database, logto), { kind: 'reconcile', trigger: 'test' });
    expect(result.run.status).toBe('succeeded');
    // Each injected failure costs one retried request; a tight loop would cost hundreds.
    expect(requests() - before).toBeLessThanOrEqual(perRun + 6 + 2);
    await exact();
  }, 60_000);

  it('deliveries that need a Logto read wait while Logto is down and are applied when it returns', async () => {
    const { sim, database, worker } = pipeline;
    const firstDelivery = (await database.db.select({ id: webhookDeliveries.id }).from(webhookDeliveries)).length;
    const outageStart = requests();
    sim.faults.failNext(1_000_000, { status: 503, paths: /^\/api\// });
    const organization = sim.state.listOrganizations()[2]!;
    const outsiders = sim.state.listUsers().filter((user) => !sim.state.isMember(organization.id, user.id)).slice(0, 3);
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: outsiders.map((user) => user.id) });
    await sim.api.patch(`/users/${outsiders[0]!.id}/custom-data`, { customData: { during: 'outage' } });
    await sim.webhooks.idle();
    await eventually('a delivery has failed an attempt', async () =>
      (await database.db.$count(webhookDeliveries, sql`${webhookDeliveries.lastError} is not null and ${webhookDeliveries.status} = 'pending'`)) > 0
        ? true
        : undefined,
    );
    // Give the worker time for a few attempts against the dead Logto.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const duringOutage = requests() - outageStart;
    const attempts = await database.db
      .select({ attempts: webhookDeliveries.attempts })
      .from(webhookDeliveries)
      .where(sql`${webhookDeliveries.id} > ${firstDelivery}`);
    sim.faults.reset();
    // Every request is part of an attempt, each attempt makes a few reads, each retried at most
    // LOGTO_MAX_RETRIES times (6): anything more would be a loop hammering a dead Logto.
    const attemptCount = attempts.reduce((sum, row) => sum + row.attempts, 0);
    expect(duringOutage).toBeLessThanOrEqual(attemptCount * 3 * 7);
    await worker.drain({ includeDelayed: true });
    expect(await database.db.$count(webhookDeliveries, sql`${webhookDeliveries.status} = 'dead'`)).toBe(0);
    await exact();
  }, 60_000);

  it('a role sweep under a 429 burst retries and finds every silent role change', async () => {
    const { sim, database, logto } = pipeline;
    for (let change = 0; change < 10; change += 1) randomSilentRoleChange(sim, random);
    sim.faults.failNext(5, { status: 429, retryAfterSeconds: 1 });
    sim.faults.failNext(2, { status: 500 });
    const before = requests();
    const result = await runRoleSweep(syncDepsFor(database, logto), { maxOrganizations: 100 });
    expect(result.run.status).toBe('succeeded');
    expect(requests() - before).toBeLessThanOrEqual(sim.state.listOrganizations().length * 2 + 7);
    await exact();
  }, 60_000);

  it('provisioning retries a throttled or unavailable Logto and writes through once', async () => {
    const { sim, database, logto } = pipeline;
    const provisioning = createProvisioning(syncDepsFor(database, logto));
    const organization = sim.state.listOrganizations()[4]!;
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    sim.faults.failNext(2, { status: 429, retryAfterSeconds: 1 });
    sim.faults.failNext(1, { status: 503 });
    await provisioning.addMembers(organization.id, [outsider.id], [], { actor: 'faults' });
    expect(sim.state.isMember(organization.id, outsider.id)).toBe(true);
    await sim.webhooks.idle();
    await pipeline.worker.drain();
    await exact();
  }, 60_000);
});
