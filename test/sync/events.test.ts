import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { and, count, eq, gt } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, users } from '../../db/schema.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import type { SyncDeps } from '../../src/sync/context.js';
import { createEventHandlers, type Delivery } from '../../src/sync/events/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { recordedDeliveries } from '../helpers/recordings.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

type Payload = Record<string, unknown> & { event: string };

/**
 * The event handlers, driven directly with the payloads the simulated tenant really sends: each
 * scenario makes a change through the admin API, captures the webhooks it caused and hands them to
 * `handle`; afterwards the database must equal the tenant.
 */
describe('event handlers', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let logto: LogtoClient;
  let deps: SyncDeps;
  let handlers: ReturnType<typeof createEventHandlers>;
  let sink: Server;
  let nextId = 1;

  /** Runs `change`, waits for the webhooks it caused and returns their bodies as sent, in order. */
  const capture = async (change: () => unknown): Promise<Payload[]> => {
    await sim.webhooks.idle();
    sim.webhooks.clearSent();
    await change();
    await sim.webhooks.idle();
    return sim.webhooks.sent.map((sent) => JSON.parse(sent.rawBody) as Payload);
  };
  const handle = (payload: Payload, id = nextId++) => handlers.handle({ id, event: payload.event, payload } satisfies Delivery);
  const handleAll = async (payloads: Payload[]) => {
    const outcomes = [];
    for (const payload of payloads) outcomes.push(await handle(payload));
    return outcomes;
  };
  const expectMirrorEqualsLogto = async () => expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  const changeCount = async () => (await database.db.select({ n: count() }).from(accessChanges))[0]!.n;
  const lastChangeId = async () => (await database.db.select({ id: accessChanges.id }).from(accessChanges)).reduce((max, row) => Math.max(max, row.id), 0);
  const changesAfter = (id: number) => database.db.select().from(accessChanges).where(gt(accessChanges.id, id));
  const routeCount = (pattern: RegExp) =>
    Object.entries(sim.stats().byRoute)
      .filter(([route]) => pattern.test(route))
      .reduce((sum, [, stats]) => sum + stats.total, 0);
  const outsider = (organizationId: string) => sim.state.listUsers().find((user) => !sim.state.isMember(organizationId, user.id))!;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 23, generate: { users: 40, organizations: 5, organizationRoles: 4 } });
    // A receiver that accepts everything, so deliveries succeed and are recorded in `sim.webhooks.sent`.
    sink = createServer((_request, response) => {
      _request.resume();
      _request.on('end', () => response.writeHead(204).end());
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    sim.setWebhookEndpoints([{ url: `http://127.0.0.1:${(sink.address() as AddressInfo).port}/hook` }]);
    logto = clientFor(sim);
    deps = syncDepsFor(database, logto);
    handlers = createEventHandlers(deps);
    await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
  });
  afterAll(async () => {
    await sim.close();
    await new Promise((resolve) => sink.close(resolve));
    await database.drop();
  });
  afterEach(() => {
    sim.faults.reset();
  });

  it('starts from a baseline equal to the tenant', async () => {
    await expectMirrorEqualsLogto();
  });

  it('User.Created, User.Data.Updated (full) and User.SuspensionStatus.Updated apply the payload data', async () => {
    const created = await capture(() => sim.api.post('/users', { username: 'evt_user', name: 'Évènement', primaryEmail: 'evt@example.com' }));
    expect(created.map((payload) => payload.event)).toEqual(['User.Created']);
    const userId = (created[0]!.data as { id: string }).id;
    const updated = await capture(() => sim.api.patch(`/users/${userId}`, { name: 'Renamed' }));
    const suspended = await capture(() => sim.api.patch(`/users/${userId}/is-suspended`, { isSuspended: true }));
    expect(suspended.map((payload) => payload.event)).toEqual(['User.SuspensionStatus.Updated']);
    sim.faults.resetStats();
    const mark = await lastChangeId();
    expect(await handleAll([...created, ...updated, ...suspended])).toEqual(['applied', 'applied', 'applied']);
    await expectMirrorEqualsLogto();
    // Complete data is applied as it is: no user was read back from Logto.
    expect(routeCount(/^GET \/api\/users\/:[^/]+$/)).toBe(0);
    const changes = await changesAfter(mark);
    expect(changes.map((change) => change.kind)).toEqual(expect.arrayContaining(['user.created', 'user.updated', 'user.suspended']));
    for (const change of changes) {
      expect(change).toMatchObject({ source: 'webhook', actor: 'logto-simulator-admin/1.0', userId });
      expect(change.deliveryId).toBeTypeOf('number');
    }
    const [createdChange] = changes.filter((change) => change.kind === 'user.created');
    expect(createdChange?.observedAt.toISOString()).toBe(created[0]!.createdAt);
  });

  it('a partial User.Data.Updated (custom data, profile) reads the user from Logto', async () => {
    const user = sim.state.listUsers()[3]!;
    const payloads = [
      ...(await capture(() => sim.api.patch(`/users/${user.id}/custom-data`, { customData: { plan: 'gold' } }))),
      ...(await capture(() => sim.api.patch(`/users/${user.id}/profile`, { profile: { nickname: 'Nick' } }))),
    ];
    expect(payloads.map((payload) => payload.matchedRoute)).toEqual(['/users/:userId/custom-data', '/users/:userId/profile']);
    sim.faults.resetStats();
    expect(await handleAll(payloads)).toEqual(['applied', 'applied']);
    // Handled one after the other: each delivery arrived before the other's read, so each needs its own.
    expect(routeCount(/^GET \/api\/users$/)).toBe(2);
    await expectMirrorEqualsLogto();
    const [stored] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(stored?.customData).toMatchObject({ plan: 'gold' });
    expect(stored?.profile).toEqual({ nickname: 'Nick' });
  });

  it('a user update for a user Logto no longer has removes it', async () => {
    const user = sim.state.listUsers()[4]!;
    const [payload] = await capture(() => sim.api.patch(`/users/${user.id}/custom-data`, { customData: { gone: true } }));
    sim.state.deleteUser(user.id);
    expect(await handle(payload!)).toBe('applied');
    expect((await database.db.select().from(users).where(eq(users.id, user.id))).length).toBe(0);
    await expectMirrorEqualsLogto();
  });

  it('the same payload handled twice writes no change the second time', async () => {
    const user = sim.state.listUsers()[5]!;
    const [payload] = await capture(() => sim.api.patch(`/users/${user.id}`, { name: 'Twice' }));
    await handle(payload!, 9001);
    const before = await changeCount();
    await handle(payload!, 9001);
    expect(await changeCount()).toBe(before);
    await expectMirrorEqualsLogto();
  });

  it('two User.Data.Updated for one user handled in reverse order leave the newer', async () => {
    const user = sim.state.listUsers()[6]!;
    const [older] = await capture(() => sim.api.patch(`/users/${user.id}`, { name: 'Older name' }));
    const [newer] = await capture(() => sim.api.patch(`/users/${user.id}`, { name: 'Newer name' }));
    expect(await handle(newer!)).toBe('applied');
    expect(await handle(older!)).toBe('applied');
    const [stored] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(stored?.name).toBe('Newer name');
    await expectMirrorEqualsLogto();
  });

  it('User.Deleted removes the user and records member.removed for each membership it took along', async () => {
    const user = sim.state.listUsers().find((candidate) => sim.state.listUserOrganizationIds(candidate.id).length >= 2)!;
    const organizationIds = [...sim.state.listUserOrganizationIds(user.id)].sort();
    const payloads = await capture(() => sim.api.delete(`/users/${user.id}`));
    expect(payloads.map((payload) => payload.event)).toEqual(['User.Deleted']);
    const mark = await lastChangeId();
    expect(await handle(payloads[0]!)).toBe('applied');
    await expectMirrorEqualsLogto();
    const removed = (await changesAfter(mark)).filter((change) => change.kind === 'member.removed');
    expect(removed.map((change) => change.organizationId).sort()).toEqual(organizationIds);
    expect(removed.every((change) => change.userId === user.id && change.source === 'webhook')).toBe(true);
  });

  it('Organization.Created, Organization.Data.Updated and Organization.Deleted', async () => {
    const created = await capture(() => sim.api.post('/organizations', { name: 'Evt Org', description: 'made here' }));
    const organizationId = (created[0]!.data as { id: string }).id;
    const updated = await capture(() => sim.api.patch(`/organizations/${organizationId}`, { name: 'Evt Org 2', description: null }));
    expect(await handleAll([...created, ...updated])).toEqual(['applied', 'applied']);
    await expectMirrorEqualsLogto();
    const doomed = sim.state.listOrganizations().find((organization) => sim.state.memberCount(organization.id) > 0)!;
    const deleted = await capture(() => sim.api.delete(`/organizations/${doomed.id}`));
    expect(deleted.map((payload) => payload.event)).toEqual(['Organization.Deleted']);
    expect(await handle(deleted[0]!)).toBe('applied');
    await expectMirrorEqualsLogto();
  });

  it('an Organization.Data.Updated without data reads the organization', async () => {
    const organization = sim.state.listOrganizations()[0]!;
    sim.state.updateOrganization(organization.id, { name: 'Silently renamed' });
    const outcome = await handle({ event: 'Organization.Data.Updated', createdAt: new Date().toISOString(), params: { id: organization.id } });
    expect(outcome).toBe('applied');
    await expectMirrorEqualsLogto();
  });

  it('OrganizationRole.Created / Data.Updated, and OrganizationRole.Deleted removes the role from members', async () => {
    const created = await capture(() => sim.api.post('/organization-roles', { name: 'evt-role', description: 'x' }));
    const roleId = (created[0]!.data as { id: string }).id;
    const updated = await capture(() => sim.api.patch(`/organization-roles/${roleId}`, { description: 'described' }));
    expect(await handleAll([...created, ...updated])).toEqual(['applied', 'applied']);
    await expectMirrorEqualsLogto();

    const snapshot = sim.state.snapshot();
    const holders = Object.entries(snapshot.memberships).flatMap(([organizationId, members]) =>
      Object.entries(members).flatMap(([userId, roleIds]) => roleIds.map((id) => ({ organizationId, userId, roleId: id }))),
    );
    const usedRoleId = holders[0]!.roleId;
    const holdersOfRole = holders.filter((holder) => holder.roleId === usedRoleId);
    const deleted = await capture(() => sim.api.delete(`/organization-roles/${usedRoleId}`));
    const mark = await lastChangeId();
    expect(await handle(deleted[0]!)).toBe('applied');
    await expectMirrorEqualsLogto();
    const revoked = (await changesAfter(mark)).filter((change) => change.kind === 'member_role.revoked');
    expect(revoked).toHaveLength(holdersOfRole.length);
    expect(revoked.every((change) => change.organizationRoleId === usedRoleId)).toBe(true);
  });

  it('a membership delta applies at once and the re-read picks up roles assigned silently', async () => {
    const organization = sim.state.listOrganizations().find((candidate) => sim.state.memberCount(candidate.id) > 1)!;
    const role = sim.state.listOrganizationRoles()[0]!;
    const newcomer = outsider(organization.id);
    const leaver = sim.state.listMemberIds(organization.id)[0]!;
    const added = await capture(() => sim.api.post(`/organizations/${organization.id}/users`, { userIds: [newcomer.id] }));
    expect(added[0]).toMatchObject({ event: 'Organization.Membership.Updated', organizationId: organization.id, addedUserIds: [newcomer.id] });
    // Role assignments emit nothing.
    expect(await capture(() => sim.api.post(`/organizations/${organization.id}/users/${newcomer.id}/roles`, { organizationRoleIds: [role.id] }))).toEqual([]);
    const removed = await capture(() => sim.api.delete(`/organizations/${organization.id}/users/${leaver}`));
    expect(await handleAll([...added, ...removed])).toEqual(['applied', 'applied']);
    await expectMirrorEqualsLogto();
    expect((await mirrorState(database.db)).memberships[organization.id]?.[newcomer.id]).toEqual([role.id]);
  });

  it('a membership event handled before its user exists fetches the user (JIT registration)', async () => {
    const organization = sim.state.listOrganizations()[1]!;
    const role = sim.state.listOrganizationRoles()[1]!;
    const payloads = await capture(() => sim.registerWithJit({ username: 'jit_user', primaryEmail: 'jit@example.com' }, [organization.id], [role.id]));
    expect(payloads.map((payload) => payload.event)).toEqual(['Organization.Membership.Updated', 'User.Created', 'PostRegister']);
    const userId = (payloads[0]!.addedUserIds as string[])[0]!;
    expect((await database.db.select().from(users).where(eq(users.id, userId))).length).toBe(0);
    expect(await handle(payloads[0]!)).toBe('applied');
    const mirror = await mirrorState(database.db);
    expect(mirror.users[userId]).toBeDefined();
    expect(mirror.memberships[organization.id]?.[userId]).toEqual([role.id]);
    await expectMirrorEqualsLogto();
    expect(await handleAll(payloads.slice(1))).toEqual(['applied', 'applied']);
    await expectMirrorEqualsLogto();
  });

  it('a user added silently and announced only by the membership event is fetched and added', async () => {
    const organization = sim.state.listOrganizations()[2]!;
    const user = sim.state.createUser({ username: 'silent_user' });
    const payloads = await capture(() => sim.api.post(`/organizations/${organization.id}/users`, { userIds: [user.id] }));
    expect(await handleAll(payloads)).toEqual(['applied']);
    expect((await mirrorState(database.db)).memberships[organization.id]?.[user.id]).toEqual([]);
    await expectMirrorEqualsLogto();
  });

  it('a membership event without a delta re-reads the organization', async () => {
    const organization = sim.state.listOrganizations()[0]!;
    const role = sim.state.listOrganizationRoles()[2]!;
    const joiner = outsider(organization.id);
    sim.state.addMembers(organization.id, [joiner.id]);
    sim.state.setMemberRoles(organization.id, joiner.id, [role.id]);
    const member = sim.state.listMemberIds(organization.id).find((id) => id !== joiner.id)!;
    sim.state.removeMember(organization.id, member);
    const outcome = await handle({ event: 'Organization.Membership.Updated', createdAt: new Date().toISOString(), organizationId: organization.id });
    expect(outcome).toBe('applied');
    await expectMirrorEqualsLogto();
  });

  it('a membership event for an organization the database does not know fetches it first', async () => {
    const organization = sim.state.createOrganization({ name: 'Unseen Org' });
    const member = sim.state.listUsers()[10]!;
    sim.state.addMembers(organization.id, [member.id]);
    const outcome = await handle({
      event: 'Organization.Membership.Updated',
      createdAt: new Date().toISOString(),
      organizationId: organization.id,
      addedUserIds: [member.id],
    });
    expect(outcome).toBe('applied');
    await expectMirrorEqualsLogto();
    // Gone from Logto: nothing to do.
    const missing = await handle({ event: 'Organization.Membership.Updated', createdAt: new Date().toISOString(), organizationId: 'no-such-org', addedUserIds: [member.id] });
    expect(missing).toBe('applied');
    await expectMirrorEqualsLogto();
  });

  it('a delta list at the 5,000 cap is not trusted: only the re-read', async () => {
    const organization = sim.state.listOrganizations()[1]!;
    const bogus = Array.from({ length: 5000 }, (_, index) => `not-a-user-${index}`);
    sim.faults.resetStats();
    const outcome = await handle({ event: 'Organization.Membership.Updated', createdAt: new Date().toISOString(), organizationId: organization.id, addedUserIds: bogus });
    expect(outcome).toBe('applied');
    // Had the list been applied, the unknown users would have been searched for.
    expect(routeCount(/^GET \/api\/users$/)).toBe(0);
    expect(routeCount(/^GET \/api\/organizations\/:[^/]+\/users$/)).toBeGreaterThan(0);
    await expectMirrorEqualsLogto();
  });

  it('PostSignIn / PostRegister bring in the user and its organizations with roles (JIT sign-up)', async () => {
    const organization = sim.state.listOrganizations()[2]!;
    const role = sim.state.createOrganizationRole({ name: 'jit-only-role' });
    const user = sim.state.createUser({ username: 'signed_in_user' });
    sim.state.addMembers(organization.id, [user.id]);
    sim.state.setMemberRoles(organization.id, user.id, [role.id]);
    const payloads = await capture(() => sim.emitInteractionEvent('PostSignIn', user.id));
    expect(payloads.map((payload) => payload.event)).toEqual(['PostSignIn']);
    expect(payloads[0]!.userId).toBe(user.id);
    expect(await handle(payloads[0]!)).toBe('applied');
    const mirror = await mirrorState(database.db);
    expect(mirror.organizationRoles[role.id]).toEqual({ name: 'jit-only-role', description: null });
    expect(mirror.memberships[organization.id]?.[user.id]).toEqual([role.id]);
    await expectMirrorEqualsLogto();

    const registered = sim.state.createUser({ username: 'registered_user' });
    const [postRegister] = await capture(() => sim.emitInteractionEvent('PostRegister', registered.id));
    expect(await handle(postRegister!)).toBe('applied');
    await expectMirrorEqualsLogto();
  });

  it('ignores events it does not follow, and application-only membership deltas', async () => {
    const createdAt = new Date().toISOString();
    const before = await changeCount();
    for (const event of ['Role.Created', 'Scope.Data.Updated', 'OrganizationScope.Created', 'OrganizationRole.Scopes.Updated', 'Identifier.Lockout', 'No.Such.Event']) {
      expect(await handle({ event, createdAt, data: { id: 'x' } })).toBe('ignored');
    }
    const organization = sim.state.listOrganizations()[0]!;
    sim.faults.resetStats();
    expect(
      await handle({ event: 'Organization.Membership.Updated', createdAt, organizationId: organization.id, addedApplicationIds: ['app1'] }),
    ).toBe('ignored');
    expect(sim.stats().total).toBe(0);
    expect(await changeCount()).toBe(before);
  });

  it('accepts the payloads recorded from a real Logto as they are', async () => {
    // Against this tenant the ids are unknown: users and organizations are looked up, none found.
    const byEvent = new Map(recordedDeliveries().map((delivery) => {
      const payload = JSON.parse(delivery.rawBody) as Payload;
      return [payload.event, payload] as const;
    }));
    for (const event of ['User.Deleted', 'Organization.Deleted', 'OrganizationRole.Deleted', 'Organization.Membership.Updated', 'User.Data.Updated']) {
      const payload = byEvent.get(event);
      expect(payload, event).toBeDefined();
      expect(await handle(payload!)).toBe('applied');
    }
    await expectMirrorEqualsLogto();
  });

  it('coalesces re-reads of one organization requested together', async () => {
    const organization = sim.state.listOrganizations().find((candidate) => sim.state.memberCount(candidate.id) > 0)!;
    const joiner = outsider(organization.id);
    sim.state.addMembers(organization.id, [joiner.id]);
    sim.faults.resetStats();
    const createdAt = new Date().toISOString();
    const outcomes = await Promise.all(
      Array.from({ length: 5 }, () => handle({ event: 'Organization.Membership.Updated', createdAt, organizationId: organization.id })),
    );
    expect(outcomes).toEqual(Array(5).fill('applied'));
    const crawls = routeCount(/^GET \/api\/organizations\/:[^/]+\/users$/);
    expect(crawls).toBeGreaterThanOrEqual(1);
    expect(crawls).toBeLessThanOrEqual(2);
    await expectMirrorEqualsLogto();
    const added = await database.db
      .select()
      .from(accessChanges)
      .where(and(eq(accessChanges.kind, 'member.added'), eq(accessChanges.userId, joiner.id), eq(accessChanges.organizationId, organization.id)));
    expect(added).toHaveLength(1);
  });

  it('throws when Logto cannot be reached, so the worker retries', async () => {
    const user = sim.state.listUsers()[12]!;
    const unreachable = createEventHandlers(syncDepsFor(database, clientFor(sim, { baseUrl: 'http://127.0.0.1:1', maxRetries: 0 })));
    await expect(
      unreachable.handle({ id: nextId++, event: 'User.Data.Updated', payload: { event: 'User.Data.Updated', createdAt: new Date().toISOString(), params: { userId: user.id } } }),
    ).rejects.toThrow();
  });
});
