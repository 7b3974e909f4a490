import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, organizationMembers } from '../../db/schema.js';
import { rows } from '../../src/db/client.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { applyMembers, applyOrganizations, readStoredMembers, removeMembers } from '../../src/sync/apply/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { syncOrganizationMembers, syncOrganizationsMembersTogether } from '../../src/sync/organization-members.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/** An organization of several member pages, whose pages are applied several at a time. */
describe('the members of a large organization', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let organizationId: string;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 11, generate: { users: 900, organizations: 3, organizationRoles: 4, largestOrganizationShare: 0.8 } });
    organizationId = [...sim.state.listOrganizations()].sort((a, b) => sim.state.memberCount(b.id) - sim.state.memberCount(a.id))[0]!.id;
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  const deps = () => syncDepsFor(database, clientFor(sim));
  const changesOf = (kind: string) =>
    database.db
      .select({ userId: accessChanges.userId, source: accessChanges.source })
      .from(accessChanges)
      .where(and(eq(accessChanges.organizationId, organizationId), eq(accessChanges.kind, kind)))
      // In the order recorded: without it the rows came in the plan's order (once a reconcile's before a baseline's).
      .orderBy(accessChanges.id);
  const storedMembers = async () =>
    new Set(
      (await database.db.select({ userId: organizationMembers.userId }).from(organizationMembers).where(eq(organizationMembers.organizationId, organizationId))).map(
        (row) => row.userId,
      ),
    );

  it('lands exactly, with one change per membership and member role', async () => {
    expect(sim.state.memberCount(organizationId)).toBeGreaterThan(500);
    const { run } = await runFullSync(deps(), { kind: 'baseline', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const memberIds = sim.state.listMemberIds(organizationId);
    const added = await changesOf('member.added');
    expect(added.map((change) => change.userId).sort()).toEqual([...memberIds].sort());
    const roles = memberIds.reduce((sum, userId) => sum + sim.state.getMemberRoleIds(organizationId, userId).length, 0);
    expect(await changesOf('member_role.granted')).toHaveLength(roles);
    // Its pages were written a few at a time: each transaction's change rows share one time (`at`).
    const pages = Math.ceil(memberIds.length / 100);
    const [written] = await rows<{ transactions: number }>(
      database.db,
      sql`select count(distinct at)::int as transactions from access_changes where organization_id = ${organizationId} and kind = 'member.added'`,
    );
    expect(pages).toBeGreaterThan(4);
    expect(written!.transactions).toBeLessThanOrEqual(Math.ceil(pages / 4));
  });

  it('stopped after a few pages, keeps what those pages applied and removes nothing', async () => {
    const memberIds = [...sim.state.listMemberIds(organizationId)].sort();
    // Gone from every part of the list, including the pages never applied.
    const leaving = [memberIds[3]!, memberIds[Math.floor(memberIds.length / 2)]!, memberIds[memberIds.length - 2]!];
    for (const userId of leaving) sim.state.removeMember(organizationId, userId);
    const joining = sim.state.createUser({ username: 'joins-a-large-organization' });
    sim.state.addMembers(organizationId, [joining.id]);
    let pages = 0;
    const stopped = await syncOrganizationMembers(deps(), organizationId, { source: 'reconcile', actor: 'test' }, {
      ahead: 4,
      expectedTotal: sim.state.memberCount(organizationId),
      shouldStop: () => (pages += 1) > 3,
    }).catch((error: unknown) => error);
    expect(stopped).toBeInstanceOf(Error);
    const stored = await storedMembers();
    for (const userId of leaving) expect(stored.has(userId)).toBe(true);
    expect(await changesOf('member.removed')).toEqual([]);

    const result = await syncOrganizationMembers(deps(), organizationId, { source: 'reconcile', actor: 'test' }, { ahead: 4 });
    expect(result.membersChecked).toBe(sim.state.memberCount(organizationId));
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect((await changesOf('member.removed')).map((change) => change.userId).sort()).toEqual([...leaving].sort());
    expect((await changesOf('member.added')).filter((change) => change.userId === joining.id)).toHaveLength(1);
  });

  it('changes of roles spread over every page are recorded once each, and an unchanged re-run writes nothing', async () => {
    const memberIds = [...sim.state.listMemberIds(organizationId)].sort();
    const roleIds = sim.state.listOrganizationRoles().map((role) => role.id);
    const changed = memberIds.filter((_, index) => index % 97 === 5);
    for (const userId of changed) sim.state.setMemberRoles(organizationId, userId, [roleIds[0]!]);
    const before = (await database.db.select().from(accessChanges)).length;
    const { run } = await runFullSync(deps(), { kind: 'reconcile', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect((await database.db.select().from(accessChanges)).length).toBeGreaterThan(before);

    const again = await runFullSync(deps(), { kind: 'reconcile', trigger: 'test' });
    expect(again.counts.rowsWritten).toBe(0);
  });

  it('compared with stored members read before a webhook changed them, repairs what the webhook changed', async () => {
    const memberIds = [...sim.state.listMemberIds(organizationId)].sort();
    const [removed, regranted] = [memberIds[150]!, memberIds.find((userId) => sim.state.getMemberRoleIds(organizationId, userId).length > 0)!];
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(organizationId, user.id))!;
    const storedMembers = (await readStoredMembers(database.db, [organizationId])).get(organizationId)!;
    // Webhooks that read Logto before this crawl commit after the stored members were read; Logto has changed back since.
    const webhook = { source: 'webhook' as const, observedAt: new Date() };
    await removeMembers(database.db, organizationId, [removed], webhook);
    await applyMembers(database.db, organizationId, [{ userId: regranted, organizationRoleIds: [] }, { userId: outsider.id, organizationRoleIds: [] }], webhook);

    await syncOrganizationMembers(deps(), organizationId, { source: 'reconcile', actor: 'test' }, { ahead: 4, storedMembers });
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    expect((await changesOf('member.added')).filter((change) => change.userId === removed).map((change) => change.source)).toEqual(['baseline', 'reconcile']);
  });
});

/** Small organizations crawled together (`syncOrganizationsMembersTogether`), as a baseline crawls most of a tenant. */
describe('the members of small organizations crawled together', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 12, generate: { users: 60, organizations: 4, organizationRoles: 2 } });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  it('a role created after the roles crawl is fetched, and the group is written with its grants', async () => {
    const deps = syncDepsFor(database, clientFor(sim));
    const { run } = await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    // Created in Logto after the roles were crawled: the database knows neither the role nor the new organizations' members.
    const role = sim.state.createOrganizationRole({ name: 'created-mid-crawl' });
    const userIds = sim.state.listUsers().map((user) => user.id).sort();
    const organizationIds = ['first', 'second'].map((name, index) => {
      const id = sim.state.createOrganization({ name: `together-${name}` }).id;
      const members = userIds.slice(index * 3, index * 3 + 3);
      sim.state.addMembers(id, members);
      sim.state.addRolesToMembers(id, members.slice(0, 2), [role.id]);
      return id;
    });
    const base = { source: 'reconcile' as const, actor: 'test' };
    const listed = await Promise.all(organizationIds.map((id) => deps.logto.getOrganization(id)));
    await applyOrganizations(database.db, listed.filter((organization) => organization !== null), { ...base, observedAt: new Date() });

    const results = await syncOrganizationsMembersTogether(deps, organizationIds.map((id) => ({ id, expectedTotal: 3 })), base);
    expect([...results.keys()].sort()).toEqual([...organizationIds].sort());
    for (const id of organizationIds) expect(results.get(id)!.membersChecked).toBe(3);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const grants = await database.db
      .select({ organizationId: accessChanges.organizationId })
      .from(accessChanges)
      .where(and(eq(accessChanges.kind, 'member_role.granted'), eq(accessChanges.organizationRoleId, role.id)));
    expect(grants.map((grant) => grant.organizationId).sort()).toEqual([...organizationIds, ...organizationIds].sort());
  });

  it('removes a member another writer stored that no page of the group listed, and keeps the listed ones it stored too', async () => {
    const deps = syncDepsFor(database, clientFor(sim));
    const userIds = sim.state.listUsers().map((user) => user.id).sort();
    const organizationIds = ['third', 'fourth'].map((name, index) => {
      const id = sim.state.createOrganization({ name: `together-${name}` }).id;
      sim.state.addMembers(id, userIds.slice(10 + index * 3, 13 + index * 3));
      return id;
    });
    const base = { source: 'reconcile' as const, actor: 'test' };
    const listed = await Promise.all(organizationIds.map((id) => deps.logto.getOrganization(id)));
    await applyOrganizations(database.db, listed.filter((organization) => organization !== null), { ...base, observedAt: new Date() });
    // A webhook that read Logto earlier stored one member the pages list and one they do not (since removed in Logto).
    const [listedMember, outsider] = [userIds[13]!, userIds[40]!];
    await applyMembers(database.db, organizationIds[1]!, [{ userId: listedMember, organizationRoleIds: [] }, { userId: outsider, organizationRoleIds: [] }], {
      source: 'webhook',
      observedAt: new Date(Date.now() - 60_000),
    });

    await syncOrganizationsMembersTogether(deps, organizationIds.map((id) => ({ id, expectedTotal: 3 })), base);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const removed = await database.db
      .select({ organizationId: accessChanges.organizationId, userId: accessChanges.userId })
      .from(accessChanges)
      .where(and(eq(accessChanges.kind, 'member.removed'), eq(accessChanges.organizationId, organizationIds[1]!)));
    expect(removed).toEqual([{ organizationId: organizationIds[1], userId: outsider }]);
  });
});
