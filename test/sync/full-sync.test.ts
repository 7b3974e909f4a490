import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { accessChanges, syncRuns, users } from '../../db/schema.js';
import { LogtoError } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { maxReportItems, type DriftReport } from '../../src/sync/report.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

describe('full sync against the simulated tenant', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 7, generate: { users: 400, organizations: 25, organizationRoles: 5, largestOrganizationShare: 0.4 } });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });
  afterEach(() => {
    sim.faults.reset();
  });

  const sync = (kind: 'baseline' | 'reconcile' = 'baseline', logto = clientFor(sim)) =>
    runFullSync(syncDepsFor(database, logto), { kind, trigger: 'test' });

  it('lands every user, organization, role, membership and member role, across several pages', async () => {
    const sizes = [...Object.values(sim.state.snapshot().memberships)].map((members) => Object.keys(members).length);
    expect(Math.max(...sizes)).toBeGreaterThan(100);
    const { counts, run } = await sync();
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const tenant = sim.state.counts();
    expect(counts).toMatchObject({
      users: tenant.users,
      organizations: tenant.organizations,
      organizationRoles: tenant.organizationRoles,
      memberships: tenant.memberships,
      memberRoles: tenant.memberRoles,
    });
    const baseline = await database.db.select().from(accessChanges).where(eq(accessChanges.source, 'baseline'));
    expect(baseline.filter((change) => change.kind === 'member.added')).toHaveLength(tenant.memberships);
    // The report counts every change, although past its last item the member pages only counted theirs.
    expect(baseline.length).toBeGreaterThan(maxReportItems);
    expect(counts.changes).toBe(baseline.length);
    const drift = (run.report as { drift: DriftReport }).drift;
    expect(drift.totals).toEqual({
      missing: tenant.users + tenant.organizations + tenant.organizationRoles + tenant.memberships,
      extra: 0,
      stale: 0,
      role_missing: tenant.memberRoles,
      role_extra: 0,
    });
    expect(drift.byEntity).toMatchObject({ 'missing:membership': tenant.memberships, 'role_missing:member_role': tenant.memberRoles });
    expect(drift.items).toHaveLength(maxReportItems);
    expect(drift.truncated).toBe(counts.drift - maxReportItems);
  });

  it('keeps Unicode names exactly', async () => {
    const unicode = sim.state.listUsers().find((user) => user.name && /[^\x00-\x7f]/.test(user.name));
    expect(unicode).toBeDefined();
    const [stored] = await database.db.select().from(users).where(eq(users.id, unicode!.id));
    expect(stored?.name).toBe(unicode!.name);
  });

  it('writes nothing when run again on an unchanged tenant', async () => {
    const before = (await database.db.select().from(accessChanges)).length;
    const { counts } = await sync('reconcile');
    expect(counts.rowsWritten).toBe(0);
    expect(counts.drift).toBe(0);
    expect((await database.db.select().from(accessChanges)).length).toBe(before);
  });

  it('removes what Logto deleted and picks up what changed silently', async () => {
    const [doomedUser, renamedUser] = sim.state.listUsers();
    const doomedOrganization = sim.state.listOrganizations()[3]!;
    const doomedRole = sim.state.listOrganizationRoles()[0]!;
    sim.state.deleteUser(doomedUser!.id);
    sim.state.updateUser(renamedUser!.id, { name: 'Renamed 名前' });
    sim.state.deleteOrganization(doomedOrganization.id);
    sim.state.deleteOrganizationRole(doomedRole.id);
    const { counts, run } = await sync('reconcile');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect(counts.drift).toBeGreaterThan(0);
    const drift = (run.report as { drift: { items: { kind: string; entity: string; userId?: string; organizationId?: string; organizationRoleId?: string }[] } }).drift;
    expect(drift.items).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'extra', entity: 'user', userId: doomedUser!.id }),
        expect.objectContaining({ kind: 'stale', entity: 'user', userId: renamedUser!.id, fields: ['name'] }),
        expect.objectContaining({ kind: 'extra', entity: 'organization', organizationId: doomedOrganization.id }),
        expect.objectContaining({ kind: 'extra', entity: 'organization_role', organizationRoleId: doomedRole.id }),
      ]),
    );
  });

  it('retries 429 and 5xx mid-sync and still lands the exact state', async () => {
    sim.state.setMemberRoles(...firstMemberWithNewRoles(sim));
    sim.faults.resetStats();
    sim.faults.failNext(3, { status: 503 });
    sim.faults.failNext(2, { status: 429, retryAfterSeconds: 0 });
    sim.faults.failNext(2, { status: 500, paths: /\/organizations\/[^/]+\/users/ });
    const logto = clientFor(sim);
    const { run } = await sync('reconcile', logto);
    expect(run.status).toBe('succeeded');
    const served = sim.stats().byStatus;
    expect([served['503'], served['429'], served['500']]).toEqual([3, 2, 2]);
    // The two 500s can only hit member pages, which the client retries itself (token retries are not counted there).
    expect(logto.stats().retries).toBeGreaterThanOrEqual(2);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('renews a token that expires mid-sync', async () => {
    const logto = clientFor(sim);
    await logto.getUser(sim.state.listUsers()[0]!.id);
    expect(logto.stats().tokenFetches).toBe(1);
    sim.expireAllTokens();
    const { run } = await sync('reconcile', logto);
    expect(run.status).toBe('succeeded');
    expect(logto.stats().tokenFetches).toBe(2);
  });

  it('fails fast on wrong credentials, says so clearly, and changes nothing', async () => {
    const before = await mirrorState(database.db);
    const logto = clientFor(sim, { clientSecret: 'definitely-wrong-secret' });
    const error = await sync('reconcile', logto).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(LogtoError);
    expect((error as LogtoError).kind).toBe('credentials');
    expect((error as Error).message).not.toContain('definitely-wrong-secret');
    expect(logto.stats().requests).toBe(0);
    expect(await mirrorState(database.db)).toEqual(before);
    const [last] = await database.db.select().from(syncRuns).orderBy(syncRuns.id).then((runs) => runs.slice(-1));
    expect(last?.status).toBe('failed');
    expect(last?.error).toMatch(/client id or secret/i);
  });

  it('crawls users while the organization lists are still being read', async () => {
    sim.faults.resetStats();
    const hold = sim.faults.holdNext({ paths: /^\/api\/organizations(\?.*)?$/ });
    // A client that waits for the held request rather than timing out and retrying it.
    const running = sync('reconcile', clientFor(sim, { timeoutMs: 60_000 }));
    try {
      await hold.held;
      // The organizations list has not answered: users pages are requested all the same.
      await vi.waitFor(() => expect(sim.stats().byRoute['GET /api/users']?.total ?? 0).toBeGreaterThan(0), { timeout: 5000 });
    } finally {
      hold.release();
    }
    const { run } = await running;
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('leaves the previous state intact when Logto goes down part-way', async () => {
    sim.state.updateUser(sim.state.listUsers()[5]!.id, { name: 'Changed before the outage' });
    const before = await mirrorState(database.db);
    const doomed = sim.state.listUsers()[6]!;
    sim.state.deleteUser(doomed.id);
    // Every users page fails for good: the crawl dies before any removal could run.
    sim.faults.failNext(10_000, { status: 503, paths: /^\/api\/users(\?.*)?$/ });
    const error = await sync('reconcile', clientFor(sim, { maxRetries: 1 })).catch((caught: unknown) => caught);
    sim.faults.reset();
    expect(error).toBeInstanceOf(LogtoError);
    const after = await mirrorState(database.db);
    // The deleted user is still there (removal needs a complete crawl), and nothing else was lost.
    expect(after.users[doomed.id]).toEqual(before.users[doomed.id]);
    expect(after.memberships).toEqual(before.memberships);
    const { run } = await sync('reconcile');
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
});

describe('a tenant without organizations', () => {
  it('syncs users only and records why', async () => {
    const database = await createTestDatabase();
    const sim = await startTenant({ organizationsEnabled: false, seed: 3, generate: { users: 30, organizations: 0 } });
    try {
      const { run, organizationsAvailable, counts } = await runFullSync(syncDepsFor(database, clientFor(sim)), {
        kind: 'baseline',
        trigger: 'test',
      });
      expect(organizationsAvailable).toBe(false);
      expect(run.status).toBe('succeeded');
      expect(run.notes).toMatch(/users only/);
      expect(counts.users).toBe(30);
      expect(Object.keys((await mirrorState(database.db)).users)).toHaveLength(30);
    } finally {
      await sim.close();
      await database.drop();
    }
  });
});

/** A member and a set of roles different from the ones it holds: a silent role change. */
const firstMemberWithNewRoles = (sim: SimulatedTenant): [string, string, string[]] => {
  const roles = sim.state.listOrganizationRoles().map((role) => role.id);
  for (const [organizationId, members] of Object.entries(sim.state.snapshot().memberships)) {
    for (const [userId, held] of Object.entries(members)) {
      const next = roles.filter((role) => !held.includes(role)).slice(0, 1);
      if (next.length > 0) return [organizationId, userId, next];
    }
  }
  throw new Error('no member to change');
};
