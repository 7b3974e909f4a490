import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openPostgres, type DatabaseHandle } from '../../src/db/client.js';
import { claimOrganizationResync, requestOrganizationResync } from '../../src/db/organization-resyncs.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { createEventHandlers, type EventHandlers } from '../../src/sync/events/index.js';
import { refreshAcrossReplicas } from '../../src/sync/events/organization-resync.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/**
 * Membership re-reads of one organization coalesced across replicas: each replica is its own pool and its
 * own handlers (its own in-process coalescer); only PostgreSQL is shared.
 */
describe('organization member re-reads shared by replicas', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  const pools: DatabaseHandle[] = [];
  let nextId = 1;

  /** A replica: a pool of its own on the same database (PGlite, single-process, shares its one handle). */
  const replica = (): EventHandlers => {
    const handle = database.url ? openPostgres(database.url, { max: 4 }) : database;
    if (database.url) pools.push(handle);
    return createEventHandlers(syncDepsFor(handle, clientFor(sim)));
  };
  /** Pages of members read (each organization here has fewer than 100 members: one page per re-read). */
  const crawls = () =>
    Object.entries(sim.stats().byRoute)
      .filter(([route]) => /^GET \/api\/organizations\/:[^/]+\/users$/.test(route))
      .reduce((sum, [, stats]) => sum + stats.total, 0);
  const membershipEvent = (organizationId: string) => ({
    id: nextId++,
    event: 'Organization.Membership.Updated',
    payload: { event: 'Organization.Membership.Updated', createdAt: new Date().toISOString(), organizationId },
  });

  beforeAll(async () => {
    sim = await startTenant({ seed: 57, generate: { users: 40, organizations: 3, organizationRoles: 3 } });
  });
  afterAll(async () => {
    await sim.close();
  });
  beforeEach(async () => {
    database = await createTestDatabase();
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
    sim.faults.resetStats();
  });
  afterEach(async () => {
    sim.faults.reset();
    for (const pool of pools.splice(0)) await pool.close();
    await database.drop();
  });

  it('four replicas handling twelve membership events of one organization re-read it at most twice', async () => {
    const organization = sim.state.listOrganizations()[0]!;
    const joiner = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    const role = sim.state.listOrganizationRoles()[0]!;
    // Changed silently: only a re-read finds the new member and role.
    sim.state.addMembers(organization.id, [joiner.id]);
    sim.state.setMemberRoles(organization.id, joiner.id, [role.id]);
    // Slow answers, so the replicas' requests overlap a re-read in flight.
    sim.faults.setLatency(40);
    const replicas = Array.from({ length: 4 }, replica);
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, (_, index) => replicas[index % replicas.length]!.handle(membershipEvent(organization.id))),
    );
    expect(outcomes).toEqual(Array(12).fill('applied'));
    // Without sharing, each replica would re-read once and once more for the requests made meanwhile.
    expect(crawls()).toBeGreaterThanOrEqual(1);
    expect(crawls()).toBeLessThanOrEqual(2);
    sim.faults.reset();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('a request made after a re-read started gets a re-read of its own', async () => {
    const organization = sim.state.listOrganizations()[1]!;
    const deps = syncDepsFor(database, clientFor(sim));
    await refreshAcrossReplicas(deps, organization.id, { source: 'webhook', deliveryId: null, actor: null });
    const joiner = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    sim.state.addMembers(organization.id, [joiner.id]);
    await replica().handle(membershipEvent(organization.id));
    expect(crawls()).toBe(2);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('takes over the re-read of a replica that died holding it, once its lease has run out', async () => {
    const organization = sim.state.listOrganizations()[2]!;
    const joiner = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    sim.state.addMembers(organization.id, [joiner.id]);
    // The dead replica's claim: requested, claimed for 300 ms, never finished.
    await requestOrganizationResync(database.db, organization.id);
    expect(await claimOrganizationResync(database.db, organization.id, 'dead-replica', 300)).toBe(true);
    const deps = syncDepsFor(database, clientFor(sim));
    const result = await refreshAcrossReplicas(deps, organization.id, { source: 'webhook', deliveryId: null, actor: null }, { pollMs: 20 });
    expect(result.servedElsewhere).toBeUndefined();
    expect(crawls()).toBe(1);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
});
