import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, syncRuns } from '../../db/schema.js';
import { loadConfig, type Config } from '../../src/config.js';
import { readSyncState } from '../../src/db/sync-runs.js';
import { roleSweepBudget, startRoleSweepJob } from '../../src/jobs/role-sweep-job.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import type { SyncDeps } from '../../src/sync/context.js';
import { createEventHandlers } from '../../src/sync/events/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { roleSweepStateKey, runRoleSweep, type RoleSweepState } from '../../src/sync/role-sweep.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, logtoConfigFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

describe('role sweep', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let deps: SyncDeps;
  let config: Config;

  const sweepState = () => readSyncState<RoleSweepState>(database.db, roleSweepStateKey);
  const sortedOrganizationIds = () => sim.state.listOrganizations().map((organization) => organization.id).sort();
  /** A member of an organization and a role it does not hold. */
  const memberAndOtherRole = (organizationId: string) => {
    const userId = sim.state.listMemberIds(organizationId)[0]!;
    const held = sim.state.getMemberRoleIds(organizationId, userId);
    const role = sim.state.listOrganizationRoles().find((candidate) => !held.includes(candidate.id))!;
    return { userId, roleId: role.id };
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 31, generate: { users: 50, organizations: 6, organizationRoles: 4 } });
    deps = syncDepsFor(database, clientFor(sim));
    config = {
      ...loadConfig({
        LOGTO_BASE_URL: sim.baseUrl,
        LOGTO_CLIENT_ID: sim.clientId,
        LOGTO_CLIENT_SECRET: sim.clientSecret,
        LOGTO_WEBHOOK_SIGNING_KEYS: sim.signingKey,
      }),
      logto: logtoConfigFor(sim),
    };
    await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  it('catches a silent member-role change, records it as a sweep under a sync run and advances its position', async () => {
    const organization = sim.state.listOrganizations().find((candidate) => sim.state.memberCount(candidate.id) > 0)!;
    const { userId, roleId } = memberAndOtherRole(organization.id);
    sim.state.setMemberRoles(organization.id, userId, [roleId]);
    expect(await mirrorState(database.db)).not.toEqual(tenantState(sim.state.snapshot()));

    const result = await runRoleSweep(deps, { maxOrganizations: 100, trigger: 'test' });
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect(result.organizationsSwept).toBe(sim.state.listOrganizations().length);
    expect(result.changes).toBeGreaterThan(0);

    const granted = await database.db
      .select()
      .from(accessChanges)
      .where(
        and(
          eq(accessChanges.kind, 'member_role.granted'),
          eq(accessChanges.userId, userId),
          eq(accessChanges.organizationId, organization.id),
          eq(accessChanges.organizationRoleId, roleId),
          eq(accessChanges.source, 'sweep'),
        ),
      );
    expect(granted).toHaveLength(1);
    expect(granted[0]).toMatchObject({ source: 'sweep', syncRunId: result.runId, organizationId: organization.id });

    const [run] = await database.db.select().from(syncRuns).where(eq(syncRuns.id, result.runId));
    expect(run).toMatchObject({ kind: 'sweep', trigger: 'test', status: 'succeeded' });
    expect(run!.counts).toMatchObject({ organizations: result.organizationsSwept, changes: result.changes });
    expect(run!.counts.rowsWritten).toBeGreaterThan(0);
    expect((run!.report as { changesByKind: Record<string, number> }).changesByKind['member_role.granted']).toBeGreaterThanOrEqual(1);

    const state = await sweepState();
    expect(state?.organizationsSwept).toBe(result.organizationsSwept);
    expect(state?.position).toBe(sortedOrganizationIds().at(-1));
    expect(state?.lastRunAt).toBeTypeOf('string');
  });

  it('a second sweep of an unchanged tenant writes nothing', async () => {
    const result = await runRoleSweep(deps, { maxOrganizations: 100, trigger: 'test' });
    expect(result.changes).toBe(0);
    const [run] = await database.db.select().from(syncRuns).where(eq(syncRuns.id, result.runId));
    expect(run!.counts.rowsWritten).toBe(0);
  });

  it('sweeps recently active organizations first, then rotates through the rest, and counts cycles', async () => {
    const ids = sortedOrganizationIds();
    // Older activity is within 24 h too: the sweep of the first test made changes in one organization.
    await database.db.delete(accessChanges).where(eq(accessChanges.source, 'sweep'));
    const hot = ids.at(-1)!;
    // Activity through a webhook on the last organization by id.
    const joiner = sim.state.listUsers().find((user) => !sim.state.isMember(hot, user.id))!;
    sim.state.addMembers(hot, [joiner.id]);
    await createEventHandlers(deps).handle({
      id: 1,
      event: 'Organization.Membership.Updated',
      payload: { event: 'Organization.Membership.Updated', createdAt: new Date().toISOString(), organizationId: hot, addedUserIds: [joiner.id] },
    });
    await database.db.delete(accessChanges).where(eq(accessChanges.source, 'sweep'));
    const { userId, roleId } = memberAndOtherRole(ids[0]!);
    sim.state.setMemberRoles(ids[0]!, userId, [roleId]);
    const before = (await sweepState())!;

    const first = await runRoleSweep(deps, { maxOrganizations: 3, trigger: 'test' });
    expect(first.plan.hot).toEqual([hot]);
    // The rotation continues after the previous position (the last id), wrapping round to the first.
    expect(first.plan.rotation).toEqual(ids.slice(0, 2));
    expect(first.organizationsSwept).toBe(3);
    const afterFirst = (await sweepState())!;
    expect(afterFirst.position).toBe(ids[1]);
    expect(afterFirst.cycle).toBe(before.cycle + 1);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));

    const second = await runRoleSweep(deps, { maxOrganizations: 3, trigger: 'test' });
    // Changes made by sweeps count as activity too: the first organization is now recent as well.
    expect(second.plan.hot).toEqual(expect.arrayContaining([hot, ids[0]]));
    expect(second.plan.rotation).toEqual([ids[2]]);
    expect((await sweepState())!.position).toBe(second.plan.rotation.at(-1));
    expect((await sweepState())!.cycle).toBe(afterFirst.cycle);
  });

  it('the scheduled job runs a sweep under its lock on runNow, sized from the rate budget', async () => {
    expect(roleSweepBudget({ requests: 10, intervalMs: 1000 }, 600_000)).toBe(1500);
    expect(roleSweepBudget({ requests: 1, intervalMs: 60_000 }, 60_000)).toBe(10);
    const organization = sim.state.listOrganizations().filter((candidate) => sim.state.memberCount(candidate.id) > 0).at(-1)!;
    const { userId, roleId } = memberAndOtherRole(organization.id);
    sim.state.addMemberRoles(organization.id, userId, [roleId]);
    const job = startRoleSweepJob({ ...deps, config });
    try {
      const result = (await job.runNow()) as { runId: number } | null;
      expect(result?.runId).toBeTypeOf('number');
    } finally {
      await job.stop();
    }
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
});
