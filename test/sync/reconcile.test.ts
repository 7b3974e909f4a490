import { and, eq } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, organizationMemberRoles, organizationMembers, organizations, users } from '../../db/schema.js';
import { openDatabase } from '../../src/db/client.js';
import { startFullSync } from '../../src/jobs/full-sync-runner.js';
import type { LogtoClient, LogtoUser } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { applyUsers, removeMembers } from '../../src/sync/apply/index.js';
import { comparedDigest, toUserRow } from '../../src/sync/apply/users.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import type { DriftItem } from '../../src/sync/report.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { interceptFirstPage, reconcileSuiteHooks, reconcileThrough, sortItems } from '../helpers/reconcile.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

describe('reconciliation', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;

  const reconcile = (logto: LogtoClient = clientFor(sim)) => reconcileThrough(database, logto);

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 21, generate: { users: 150, organizations: 12, organizationRoles: 4 } });
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
  });
  reconcileSuiteHooks(() => ({ database, sim }));

  const member = (index = 0) => {
    const entries = Object.entries(sim.state.snapshot().memberships).flatMap(([organizationId, members]) =>
      Object.entries(members).map(([userId, roleIds]) => ({ organizationId, userId, roleIds })),
    );
    return entries[index % entries.length]!;
  };

  it('on an unchanged tenant writes no row and reports no drift', async () => {
    const before = await database.db.$count(accessChanges);
    const { counts, drift } = await reconcile();
    expect(counts.rowsWritten).toBe(0);
    expect(drift.totals).toEqual({ missing: 0, extra: 0, stale: 0, role_missing: 0, role_extra: 0 });
    expect(drift.items).toEqual([]);
    expect(await database.db.$count(accessChanges)).toBe(before);
  });

  it('repairs users created, updated, suspended and deleted whose webhooks were lost', async () => {
    const created = sim.state.createUser({ username: 'lost_webhook', name: 'Lost Webhook' });
    const [updated, suspended, deleted] = sim.state.listUsers().slice(3, 6);
    sim.state.updateUser(updated!.id, { name: 'Updated Silently', primaryEmail: 'silent@example.com' });
    sim.state.setUserSuspended(suspended!.id, !suspended!.isSuspended);
    sim.state.deleteUser(deleted!.id);
    const { drift } = await reconcile();
    expect(sortItems(drift.items.filter((item) => item.entity === 'user'))).toEqual(
      sortItems([
        { kind: 'missing', entity: 'user', userId: created.id, repair: 'created' },
        { kind: 'stale', entity: 'user', userId: updated!.id, fields: ['primaryEmail', 'name'], repair: 'updated' },
        { kind: 'stale', entity: 'user', userId: suspended!.id, fields: ['isSuspended'], repair: 'updated' },
        { kind: 'extra', entity: 'user', userId: deleted!.id, repair: 'deleted' },
      ]),
    );
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('repairs memberships added and removed without a webhook, and member roles changed (no webhook exists)', async () => {
    const removed = member(1);
    const organizationId = removed.organizationId;
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(organizationId, user.id))!;
    const roleChange = member(7);
    const roles = sim.state.listOrganizationRoles().map((role) => role.id);
    const newRoles = roles.filter((role) => !roleChange.roleIds.includes(role)).slice(0, 1);
    sim.state.removeMember(organizationId, removed.userId);
    sim.state.addMembers(organizationId, [outsider.id]);
    sim.state.setMemberRoles(roleChange.organizationId, roleChange.userId, newRoles);
    const { drift } = await reconcile();
    const expected: DriftItem[] = [
      { kind: 'extra', entity: 'membership', organizationId, userId: removed.userId, repair: 'deleted' },
      { kind: 'missing', entity: 'membership', organizationId, userId: outsider.id, repair: 'created' },
      ...newRoles.map((roleId): DriftItem => ({ kind: 'role_missing', entity: 'member_role', organizationId: roleChange.organizationId, userId: roleChange.userId, organizationRoleId: roleId, repair: 'granted' })),
      ...roleChange.roleIds.map((roleId): DriftItem => ({ kind: 'role_extra', entity: 'member_role', organizationId: roleChange.organizationId, userId: roleChange.userId, organizationRoleId: roleId, repair: 'revoked' })),
    ];
    expect(sortItems(drift.items)).toEqual(sortItems(expected));
    expect(drift.totals.role_extra).toBe(roleChange.roleIds.length);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('repairs an organization role deleted in Logto, with every member losing it', async () => {
    const role = sim.state.listOrganizationRoles()[1]!;
    const holders = await database.db.$count(organizationMemberRoles, eq(organizationMemberRoles.organizationRoleId, role.id));
    sim.state.deleteOrganizationRole(role.id);
    const { drift } = await reconcile();
    expect(drift.items).toEqual([{ kind: 'extra', entity: 'organization_role', organizationRoleId: role.id, repair: 'deleted' }]);
    expect(drift.cascaded).toBe(holders);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('repairs rows deleted, added and altered directly in the database', async () => {
    const deletedMembership = member(2);
    // With its roles, as every deletion of a membership does.
    await database.db
      .delete(organizationMemberRoles)
      .where(and(eq(organizationMemberRoles.organizationId, deletedMembership.organizationId), eq(organizationMemberRoles.userId, deletedMembership.userId)));
    await database.db
      .delete(organizationMembers)
      .where(and(eq(organizationMembers.organizationId, deletedMembership.organizationId), eq(organizationMembers.userId, deletedMembership.userId)));
    const old = new Date('2020-01-01T00:00:00Z');
    await database.db.insert(users).values({ id: 'injected0001', name: 'Injected', createdAt: old, updatedAt: old, raw: {}, observedAt: old });
    const altered = sim.state.listOrganizations()[2]!;
    await database.db.update(organizations).set({ name: 'Tampered' }).where(eq(organizations.id, altered.id));
    const alteredUser = sim.state.listUsers()[9]!;
    await database.db.update(users).set({ isSuspended: !alteredUser.isSuspended }).where(eq(users.id, alteredUser.id));
    const { drift } = await reconcile();
    expect(sortItems(drift.items)).toEqual(
      sortItems([
        { kind: 'missing', entity: 'membership', organizationId: deletedMembership.organizationId, userId: deletedMembership.userId, repair: 'created' },
        ...deletedMembership.roleIds.map((roleId): DriftItem => ({ kind: 'role_missing', entity: 'member_role', organizationId: deletedMembership.organizationId, userId: deletedMembership.userId, organizationRoleId: roleId, repair: 'granted' })),
        { kind: 'extra', entity: 'user', userId: 'injected0001', repair: 'deleted' },
        { kind: 'stale', entity: 'organization', organizationId: altered.id, fields: ['name'], repair: 'updated' },
        { kind: 'stale', entity: 'user', userId: alteredUser.id, fields: ['isSuspended'], repair: 'updated' },
      ]),
    );
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('stores a digest of each user\'s compared columns, and compares a user whose digest is missing or was cleared column by column', async () => {
    const digestsOf = async () =>
      new Map((await database.db.select({ id: users.id, digest: users.comparedDigest }).from(users)).map((row) => [row.id, row.digest]));
    const tenantDigests = async () =>
      new Map((await clientFor(sim).findUsersByIds(sim.state.listUsers().map((user) => user.id))).map((user) => [user.id, comparedDigest(toUserRow(user, new Date()))]));
    expect(await digestsOf()).toEqual(await tenantDigests());
    const [withoutDigest, handEdited] = sim.state.listUsers().slice(11, 13);
    // A row an older version wrote (no digest), drifted since.
    await database.db.update(users).set({ name: 'Drifted', comparedDigest: null }).where(eq(users.id, withoutDigest!.id));
    // A compared column changed without a new digest: the trigger clears the old one, which vouches for other content.
    await database.db.update(users).set({ primaryPhone: '+10000000000' }).where(eq(users.id, handEdited!.id));
    expect((await digestsOf()).get(handEdited!.id)).toBeNull();
    const { drift } = await reconcile();
    expect(sortItems(drift.items)).toEqual(
      sortItems([
        { kind: 'stale', entity: 'user', userId: withoutDigest!.id, fields: ['name'], repair: 'updated' },
        { kind: 'stale', entity: 'user', userId: handEdited!.id, fields: ['primaryPhone'], repair: 'updated' },
      ]),
    );
    expect(await digestsOf()).toEqual(await tenantDigests());
  });

  it('does not revert webhooks applied while it runs', async () => {
    const real = clientFor(sim);
    const target = member(3);
    const renamed = sim.state.listUsers()[0]!;
    // Between reading a page and applying it, a webhook lands: the page is now older than the database.
    const logto: LogtoClient = {
      ...real,
      listUsers: () =>
        interceptFirstPage(real.listUsers(), async () => {
          const user = sim.state.updateUser(renamed.id, { name: 'Renamed by webhook' });
          await applyUsers(database.db, [user as LogtoUser], { source: 'webhook', observedAt: new Date() });
        }),
      listOrganizationMembers: (organizationId: string) =>
        organizationId !== target.organizationId
          ? real.listOrganizationMembers(organizationId)
          : interceptFirstPage(real.listOrganizationMembers(organizationId), async () => {
              sim.state.removeMember(target.organizationId, target.userId);
              await removeMembers(database.db, target.organizationId, [target.userId], { source: 'webhook', observedAt: new Date() });
            }),
    };
    const { drift } = await reconcile(logto);
    expect(drift.items.filter((item) => item.userId === target.userId && item.organizationId === target.organizationId)).toEqual([]);
    expect(drift.items.filter((item) => item.userId === renamed.id)).toEqual([]);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('runs once when two replicas are asked to reconcile at once', async () => {
    // A second replica is a second connection pool on PostgreSQL; on PGlite (one process) the same handle.
    const other = database.url ? await openDatabase({ url: database.url, dataDir: '' }) : database;
    try {
      const results = await Promise.allSettled([
        startFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'reconcile', trigger: 'test' }),
        startFullSync(syncDepsFor(other, clientFor(sim)), { kind: 'reconcile', trigger: 'test' }),
      ]);
      const started = results.filter((result) => result.status === 'fulfilled');
      const refused = results.filter((result) => result.status === 'rejected');
      expect(started).toHaveLength(1);
      expect(refused).toHaveLength(1);
      const error = (refused[0] as PromiseRejectedResult).reason as { status: number; details: { runId: number } };
      const runId = (started[0] as PromiseFulfilledResult<{ runId: number }>).value.runId;
      expect(error.status).toBe(409);
      expect(error.details.runId).toBe(runId);
      await (started[0] as PromiseFulfilledResult<{ done: Promise<unknown> }>).value.done;
    } finally {
      if (other !== database) await other.close();
    }
  });
});
