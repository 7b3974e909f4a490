import { and, eq } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, organizationMemberRoles } from '../../db/schema.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { applyMembers, removeMembers } from '../../src/sync/apply/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import type { DriftItem } from '../../src/sync/report.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { interceptFirstPage, reconcileSuiteHooks, reconcileThrough, sortItems } from '../helpers/reconcile.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/**
 * A reconcile compares member pages with the stored members in its own process (read together for
 * small organizations, at its crawl start for one of over 1,000 members) and applies only the members
 * that differ: each kind of difference must still be found, and what a webhook wrote after that read
 * must stay.
 */
describe('reconciling members compared with the stored state', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let large: string;
  let small: string;

  const reconcile = (logto: LogtoClient = clientFor(sim)) => reconcileThrough(database, logto);

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 33, generate: { users: 2_400, organizations: 4, organizationRoles: 4, largestOrganizationShare: 0.5 } });
    const bySize = [...sim.state.listOrganizations()].sort((a, b) => sim.state.memberCount(b.id) - sim.state.memberCount(a.id));
    large = bySize[0]!.id;
    small = bySize.find((organization) => sim.state.memberCount(organization.id) >= 6 && sim.state.memberCount(organization.id) <= 1_000)!.id;
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
  });
  reconcileSuiteHooks(() => ({ database, sim }));

  it('writes nothing on an unchanged tenant', async () => {
    expect(sim.state.memberCount(large)).toBeGreaterThan(1_000);
    const before = await database.db.$count(accessChanges);
    const { counts, drift } = await reconcile();
    expect(counts.rowsWritten).toBe(0);
    expect(drift.items).toEqual([]);
    expect(await database.db.$count(accessChanges)).toBe(before);
  });

  it.each([
    ['a large organization (its stored members read when its crawl starts)', () => large],
    ['a small organization (its stored members read with others)', () => small],
  ])('finds and repairs each kind of member difference in %s', async (_name, organization) => {
    const organizationId = organization();
    const roles = sim.state.listOrganizationRoles().map((role) => role.id);
    const members = [...sim.state.listMemberIds(organizationId)].sort();
    const withRoles = members.filter((userId) => sim.state.getMemberRoleIds(organizationId, userId).length > 0);
    const [removed, rolesCleared, rolesReplaced, rowDeleted, rowAdded] = withRoles;
    const lastMember = members[members.length - 1]!;
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(organizationId, user.id))!;
    const rolesOf = (userId: string) => sim.state.getMemberRoleIds(organizationId, userId);
    const clearedRoles = rolesOf(rolesCleared!);
    const replacedRoles = rolesOf(rolesReplaced!);
    const replacement = roles.filter((role) => !replacedRoles.includes(role)).slice(0, 1);
    const deletedRole = rolesOf(rowDeleted!)[0]!;
    const addedRole = roles.find((role) => !rolesOf(rowAdded!).includes(role))!;

    // In Logto, without a webhook: a member removed (and the last one, after every page), one added,
    // one member's roles all taken, another's replaced.
    sim.state.removeMember(organizationId, removed!);
    sim.state.removeMember(organizationId, lastMember);
    sim.state.addMembers(organizationId, [outsider.id]);
    sim.state.setMemberRoles(organizationId, rolesCleared!, []);
    sim.state.setMemberRoles(organizationId, rolesReplaced!, replacement);
    // In the database: a member role row lost, another one too many.
    await database.db
      .delete(organizationMemberRoles)
      .where(and(eq(organizationMemberRoles.organizationId, organizationId), eq(organizationMemberRoles.userId, rowDeleted!), eq(organizationMemberRoles.organizationRoleId, deletedRole)));
    const old = new Date('2020-01-01T00:00:00Z');
    await database.db.insert(organizationMemberRoles).values({ organizationId, userId: rowAdded!, organizationRoleId: addedRole, since: old, observedAt: old });

    const { drift } = await reconcile();
    const role = (kind: 'role_missing' | 'role_extra', userId: string, organizationRoleId: string): DriftItem => ({
      kind,
      entity: 'member_role',
      organizationId,
      userId,
      organizationRoleId,
      repair: kind === 'role_missing' ? 'granted' : 'revoked',
    });
    const membership = (kind: 'missing' | 'extra', userId: string): DriftItem => ({ kind, entity: 'membership', organizationId, userId, repair: kind === 'missing' ? 'created' : 'deleted' });
    expect(sortItems(drift.items)).toEqual(
      sortItems([
        membership('extra', removed!),
        membership('extra', lastMember),
        membership('missing', outsider.id),
        ...clearedRoles.map((roleId) => role('role_extra', rolesCleared!, roleId)),
        ...replacedRoles.map((roleId) => role('role_extra', rolesReplaced!, roleId)),
        ...replacement.map((roleId) => role('role_missing', rolesReplaced!, roleId)),
        role('role_missing', rowDeleted!, deletedRole),
        role('role_extra', rowAdded!, addedRole),
      ]),
    );
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('keeps a role change a webhook applied after the stored members were read', async () => {
    const real = clientFor(sim);
    const userId = [...sim.state.listMemberIds(large)].sort()[0]!;
    const roles = sim.state.listOrganizationRoles().map((role) => role.id);
    const changed = roles.filter((role) => !sim.state.getMemberRoleIds(large, userId).includes(role)).slice(0, 2);
    // The first page was read before the change, and the stored members before it too: both still agree.
    const logto: LogtoClient = {
      ...real,
      listOrganizationMembers: (organizationId, options) =>
        organizationId !== large
          ? real.listOrganizationMembers(organizationId, options)
          : interceptFirstPage(real.listOrganizationMembers(organizationId, options), async () => {
              sim.state.setMemberRoles(large, userId, changed);
              await applyMembers(database.db, large, [{ userId, organizationRoleIds: changed }], { source: 'webhook', observedAt: new Date() });
            }),
    };
    const { drift } = await reconcile(logto);
    expect(drift.items.filter((item) => item.userId === userId)).toEqual([]);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  /**
   * A webhook that read Logto before the reconcile began commits its change to the first page's members
   * between the stored members' read and that page's compare (Logto has meanwhile changed back, without
   * an event): the page equals the stored state, which no longer holds.
   */
  const reconcileWithStaleWebhook = (organizationId: string, webhook: () => Promise<unknown>) => {
    const real = clientFor(sim);
    return reconcile({
      ...real,
      listOrganizationMembers: (id, options) =>
        id === organizationId ? interceptFirstPage(real.listOrganizationMembers(id, options), async () => void (await webhook())) : real.listOrganizationMembers(id, options),
    });
  };
  const firstMemberWithRoles = (organizationId: string) =>
    [...sim.state.listMemberIds(organizationId)].sort().find((userId) => sim.state.getMemberRoleIds(organizationId, userId).length > 0)!;

  it.each([
    ['a large organization', () => large],
    ['a small organization', () => small],
  ])('repairs member roles a webhook changed in %s while its first page was compared', async (_name, organization) => {
    const organizationId = organization();
    const userId = firstMemberWithRoles(organizationId);
    const other = sim.state.listOrganizationRoles().map((role) => role.id).filter((role) => !sim.state.getMemberRoleIds(organizationId, userId).includes(role));
    const observedAt = new Date();
    await reconcileWithStaleWebhook(organizationId, () =>
      applyMembers(database.db, organizationId, [{ userId, organizationRoleIds: other.slice(0, 1) }], { source: 'webhook', observedAt }),
    );
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('adds back a member a webhook removed while the first page was compared', async () => {
    const userId = firstMemberWithRoles(large);
    const observedAt = new Date();
    await reconcileWithStaleWebhook(large, () => removeMembers(database.db, large, [userId], { source: 'webhook', observedAt }));
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('removes a member a webhook added while the first page was compared, once Logto confirms it is no member', async () => {
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(large, user.id))!;
    const role = sim.state.listOrganizationRoles()[0]!.id;
    const observedAt = new Date();
    await reconcileWithStaleWebhook(large, () => applyMembers(database.db, large, [{ userId: outsider.id, organizationRoleIds: [role] }], { source: 'webhook', observedAt }));
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('removes a member a webhook added during the crawl that Logto has removed since', async () => {
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(large, user.id))!;
    // Observed after the crawl began: the removal must rest on what Logto says when asked, not at the crawl's start.
    await reconcileWithStaleWebhook(large, () => applyMembers(database.db, large, [{ userId: outsider.id, organizationRoleIds: [] }], { source: 'webhook', observedAt: new Date() }));
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('removes every stored member of an organization Logto lists as empty', async () => {
    const members = [...sim.state.listMemberIds(small)];
    for (const userId of members) sim.state.removeMember(small, userId);
    const { drift } = await reconcile();
    expect(drift.items.filter((item) => item.entity === 'membership').map((item) => item.userId).sort()).toEqual(members.sort());
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
});
