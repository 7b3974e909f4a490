import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, organizations, syncRuns } from '../../db/schema.js';
import { readSyncState } from '../../src/db/sync-runs.js';
import { lockKey } from '../../src/jobs/lock.js';
import { roleSweepLockName, runScheduledRoleSweep, startRoleSweepJob } from '../../src/jobs/role-sweep-job.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { addMembers } from '../../src/sync/apply/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { planRoleSweep, roleSweepStateKey, runRoleSweep, type RoleSweepState } from '../../src/sync/role-sweep.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';
import { webhookConfig } from '../webhooks/harness.js';

/** Member-role changes emit no webhook: the role sweep finds them. */
describe('the role sweep', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let logto: LogtoClient;
  const deps = () => syncDepsFor(database, logto);
  const organizationIds = () => sim.state.listOrganizations().map((org) => org.id).sort();

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 21, generate: { users: 50, organizations: 8, organizationRoles: 3 } });
    logto = clientFor(sim);
    await runFullSync(deps(), { kind: 'baseline', trigger: 'test' });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  it('catches a member role changed in Logto without a webhook, with source sweep and a sync run', async () => {
    const organization = sim.state.listOrganizations().find((org) => sim.state.memberCount(org.id) > 0)!;
    const member = sim.state.listMemberIds(organization.id)[0]!;
    const roles = sim.state.listOrganizationRoles().map((role) => role.id);
    const before = sim.state.getMemberRoleIds(organization.id, member);
    const after = roles.filter((id) => !before.includes(id)).slice(0, 1);
    sim.state.setMemberRoles(organization.id, member, after);
    expect(await mirrorState(database.db)).not.toEqual(tenantState(sim.state.snapshot()));

    const { run, counts } = await runRoleSweep(deps(), { maxOrganizations: 100, trigger: 'test' });
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect(run).toMatchObject({ kind: 'sweep', trigger: 'test', status: 'succeeded' });
    expect(counts.organizations).toBe(organizationIds().length);
    expect(counts.changes).toBe(before.length + after.length);
    const swept = await database.db
      .select()
      .from(accessChanges)
      .where(and(eq(accessChanges.source, 'sweep'), eq(accessChanges.userId, member)));
    expect(swept.map((change) => [change.kind, change.organizationRoleId, change.syncRunId]).sort()).toEqual(
      [
        ...after.map((id) => ['member_role.granted', id, run.id]),
        ...before.map((id) => ['member_role.revoked', id, run.id]),
      ].sort(),
    );
    const state = await readSyncState<RoleSweepState>(database.db, roleSweepStateKey);
    expect(state).toMatchObject({ organizationsSwept: organizationIds().length, lastRunAt: expect.any(String) });
  });

  it('writes nothing when nothing changed', async () => {
    const before = await database.db.$count(accessChanges);
    const { counts } = await runRoleSweep(deps(), { maxOrganizations: 100 });
    expect(counts.changes).toBe(0);
    expect(await database.db.$count(accessChanges)).toBe(before);
  });

  it('sweeps recently active organizations first, then the rest in a rotation that comes round to every one', async () => {
    const ids = organizationIds();
    const active = ids[5]!;
    const user = sim.state.listUsers().find((candidate) => !sim.state.isMember(active, candidate.id))!;
    // Activity recorded by a webhook (it need not be true in Logto for the plan).
    await addMembers(database.db, active, [user.id], { source: 'webhook', observedAt: new Date(), deliveryId: 1 });
    await database.db.delete(accessChanges).where(eq(accessChanges.source, 'sweep'));
    const plan = await planRoleSweep(database.db, { maxOrganizations: 3, recentWindowMs: 3_600_000, position: null });
    expect(plan.hot[0]).toBe(active);
    expect(plan.hot.length).toBeLessThanOrEqual(2);
    expect(plan.rotation).not.toContain(active);
    expect(plan.rotation).toEqual(ids.filter((id) => !plan.hot.includes(id)).slice(0, 3 - plan.hot.length));

    // Budget 2 per run: the rotation moves on from run to run and reaches every organization.
    await database.db.delete(accessChanges).where(sql`${accessChanges.source} in ('webhook', 'sweep')`);
    const seen = new Set<string>();
    let position: string | null = null;
    for (let run = 0; run < ids.length; run += 1) {
      const next = await planRoleSweep(database.db, { maxOrganizations: 2, recentWindowMs: 3_600_000, position });
      expect(next.hot).toEqual([]);
      for (const id of next.rotation) seen.add(id);
      position = next.nextPosition;
    }
    expect([...seen].sort()).toEqual(ids);
  });

  it('stays within its organization budget per run and continues where the last run stopped', async () => {
    await database.db.delete(accessChanges).where(sql`${accessChanges.source} in ('webhook', 'sweep', 'provision')`);
    const start = await readSyncState<RoleSweepState>(database.db, roleSweepStateKey);
    const ids = organizationIds();
    /** The next `count` organizations after `position`, by id, wrapping round. */
    const after = (position: string | null, count: number) => {
      const later = ids.filter((id) => position === null || id > position);
      return [...later, ...ids.filter((id) => !later.includes(id))].slice(0, count);
    };
    const first = await runRoleSweep(deps(), { maxOrganizations: 3 });
    expect(first.counts.organizations).toBe(3);
    expect(first.plan.hot).toEqual([]);
    expect(first.plan.rotation).toEqual(after(start?.position ?? null, 3));
    const second = await runRoleSweep(deps(), { maxOrganizations: 3 });
    expect(second.plan.rotation).toEqual(after(first.plan.rotation.at(-1)!, 3));
    const state = await readSyncState<RoleSweepState>(database.db, roleSweepStateKey);
    expect(state?.position).toBe(second.plan.rotation.at(-1));
    expect(state?.organizationsSwept).toBe(3);
  });

  it('removes an organization that is gone from Logto when it sweeps it', async () => {
    const doomed = sim.state.listOrganizations().find((org) => sim.state.memberCount(org.id) > 0)!;
    sim.state.deleteOrganization(doomed.id);
    await runRoleSweep(deps(), { maxOrganizations: 100 });
    expect(await database.db.select().from(organizations).where(eq(organizations.id, doomed.id))).toEqual([]);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const removed = await database.db
      .select()
      .from(accessChanges)
      .where(and(eq(accessChanges.kind, 'organization.deleted'), eq(accessChanges.organizationId, doomed.id)));
    expect(removed.map((change) => change.source)).toEqual(['sweep']);
  });

  it('runs once across callers: a sweep under way elsewhere (or just done) makes a scheduled tick skip', async () => {
    const options = { intervalMs: 600_000, maxOrganizations: 2 };
    const [one, two] = await Promise.all([
      runScheduledRoleSweep(deps(), { ...options, force: true }),
      runScheduledRoleSweep(deps(), { ...options, force: true }),
    ]);
    expect([one, two].filter((result) => result !== null)).toHaveLength(1);
    // Just swept: a scheduled tick of any replica skips; a forced one runs.
    expect(await runScheduledRoleSweep(deps(), { ...options, force: false })).toBeNull();
    expect(await runScheduledRoleSweep(deps(), { ...options, force: true })).not.toBeNull();

    if (database.driver === 'postgres') {
      // Another replica holds the advisory lock on its own session.
      const key = lockKey(roleSweepLockName).toString();
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let locked!: () => void;
      const isLocked = new Promise<void>((resolve) => (locked = resolve));
      const replica = database.withSession(async (session) => {
        await session.execute(sql`select pg_advisory_lock(${key}::bigint)`);
        locked();
        await held;
        await session.execute(sql`select pg_advisory_unlock(${key}::bigint)`);
      });
      await isLocked;
      expect(await runScheduledRoleSweep(deps(), { ...options, force: true })).toBeNull();
      release();
      await replica;
      expect(await runScheduledRoleSweep(deps(), { ...options, force: true })).not.toBeNull();
    }
  });

  it('is scheduled by the job, which stops cleanly', async () => {
    const before = await database.db.$count(syncRuns, eq(syncRuns.kind, 'sweep'));
    const job = startRoleSweepJob({ ...deps(), config: webhookConfig({ sim }) }, { intervalMs: 3_600_000, initialDelayMs: 3_600_000, maxOrganizations: 2 });
    const result = await job.runNow();
    await job.stop();
    expect(result?.run.status).toBe('succeeded');
    expect(await database.db.$count(syncRuns, eq(syncRuns.kind, 'sweep'))).toBe(before + 1);
  });
});
