import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, users } from '../../db/schema.js';
import type { InboxWorker } from '../../src/jobs/inbox-worker.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import type { TestDatabase } from '../helpers/database.js';
import { changesFrom, deliveries, startPipeline, type Pipeline, type Receiver } from '../webhooks/harness.js';

/**
 * The simulated tenant delivers its own signed webhooks over HTTP to the receiver; the worker applies
 * them. After each scenario the database must equal the tenant's state.
 */
describe('webhooks from the simulated tenant', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let logto: LogtoClient;
  let worker: InboxWorker;
  let receiver: Receiver;

  const settle = async () => {
    await sim.webhooks.idle();
    await worker.drain();
  };
  const expectMirrorEqualsLogto = async () => expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  const webhookKinds = async () => (await changesFrom(database.db, 'webhook')).map((change) => change.kind);
  /** A user of the tenant that is a member of no organization yet. */
  const outsider = () => sim.state.listUsers().find((user) => sim.state.listUserOrganizationIds(user.id).length === 0)!;

  let pipeline: Pipeline;
  beforeAll(async () => {
    pipeline = await startPipeline({ seed: 11, generate: { users: 60, organizations: 6, organizationRoles: 4 } });
    ({ database, sim, logto, worker, receiver } = pipeline);
  });
  afterAll(async () => {
    await pipeline.close();
  });
  afterEach(async () => {
    sim.setWebhookEndpoints([{ url: receiver.url }]);
    sim.webhooks.resume();
    sim.faults.reset();
  });

  it('starts from a baseline equal to the tenant', async () => {
    await expectMirrorEqualsLogto();
  });

  it('follows user creation, updates (full and partial), suspension and deletion', async () => {
    const created = (await sim.api.post('/users', { username: 'webhook_user', name: 'Wébhook User', primaryEmail: 'wh@example.com' })).body;
    const [renamed, partial, profiled, suspended] = sim.state.listUsers().slice(5, 9);
    const touched = new Set([renamed!.id, partial!.id, profiled!.id, suspended!.id]);
    const doomed = sim.state
      .listUsers()
      .find((user) => !touched.has(user.id) && sim.state.listUserOrganizationIds(user.id).some((id) => sim.state.getMemberRoleIds(id, user.id).length > 0))!;
    expect((await sim.api.patch(`/users/${renamed!.id}`, { name: 'Renamed by admin' })).status).toBe(200);
    expect((await sim.api.patch(`/users/${partial!.id}/custom-data`, { customData: { plan: 'gold' } })).status).toBe(200);
    expect((await sim.api.patch(`/users/${profiled!.id}/profile`, { profile: { nickname: 'Nick' } })).status).toBe(200);
    expect((await sim.api.patch(`/users/${suspended!.id}/is-suspended`, { isSuspended: true })).status).toBe(200);
    expect((await sim.api.delete(`/users/${doomed.id}`)).status).toBe(204);
    await settle();
    await expectMirrorEqualsLogto();
    const [stored] = await database.db.select().from(users).where(eq(users.id, profiled!.id));
    expect(stored?.profile).toEqual({ nickname: 'Nick' });
    expect(await webhookKinds()).toEqual(expect.arrayContaining(['user.created', 'user.updated', 'user.suspended', 'user.deleted', 'member.removed', 'member_role.revoked']));
    const revoked = (await changesFrom(database.db, 'webhook')).filter((change) => change.kind === 'member_role.revoked' && change.userId === doomed.id);
    expect(revoked.length).toBeGreaterThan(0);
    expect(revoked.every((change) => change.details?.reason === 'user.deleted')).toBe(true);
    expect(created.id).toBeTypeOf('string');
  });

  it('follows organizations and organization roles: creation, update and deletion with their cascades', async () => {
    const organization = (await sim.api.post('/organizations', { name: 'Webhook Org', description: 'made by a test' })).body;
    const role = (await sim.api.post('/organization-roles', { name: 'webhook-role', description: 'x' })).body;
    const [kept, doomed] = sim.state.listOrganizations().filter((org) => sim.state.memberCount(org.id) > 0);
    await sim.api.patch(`/organizations/${kept!.id}`, { name: 'Renamed Org', description: 'new words' });
    await sim.api.patch(`/organization-roles/${role.id}`, { description: 'described' });
    const usedRole = sim.state
      .listOrganizationRoles()
      .find((candidate) => sim.state.listOrganizations().some((org) => sim.state.listMemberIds(org.id).some((userId) => sim.state.getMemberRoleIds(org.id, userId).includes(candidate.id))))!;
    expect((await sim.api.delete(`/organization-roles/${usedRole.id}`)).status).toBe(204);
    expect((await sim.api.delete(`/organizations/${doomed!.id}`)).status).toBe(204);
    await settle();
    await expectMirrorEqualsLogto();
    const changes = await changesFrom(database.db, 'webhook');
    expect(changes.some((change) => change.kind === 'organization.created' && change.organizationId === organization.id)).toBe(true);
    expect(changes.some((change) => change.kind === 'organization.deleted' && change.organizationId === doomed!.id)).toBe(true);
    expect(changes.some((change) => change.kind === 'member_role.revoked' && change.organizationRoleId === usedRole.id && change.details?.reason === 'organization_role.deleted')).toBe(true);
  });

  it('follows membership deltas (POST, PUT, DELETE) and picks up the roles assigned with them', async () => {
    const organization = sim.state.listOrganizations()[0]!;
    const role = sim.state.listOrganizationRoles()[0]!;
    const newcomer = outsider();
    // Roles are assigned right after the member is added and emit nothing; the re-read after the membership event finds them.
    sim.webhooks.pause();
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [newcomer.id] });
    expect((await sim.api.post(`/organizations/${organization.id}/users/${newcomer.id}/roles`, { organizationRoleIds: [role.id] })).status).toBe(201);
    sim.webhooks.resume();
    await settle();
    await expectMirrorEqualsLogto();
    expect((await mirrorState(database.db)).memberships[organization.id]?.[newcomer.id]).toEqual([role.id]);

    const other = sim.state.listOrganizations()[1]!;
    const members = sim.state.listMemberIds(other.id);
    const incoming = sim.state.listUsers().filter((user) => !sim.state.isMember(other.id, user.id)).slice(0, 2).map((user) => user.id);
    expect((await sim.api.put(`/organizations/${other.id}/users`, { userIds: [...members.slice(1), ...incoming] })).status).toBe(204);
    expect((await sim.api.delete(`/organizations/${organization.id}/users/${newcomer.id}`)).status).toBe(204);
    await settle();
    await expectMirrorEqualsLogto();
  });

  it('adds a member the database does not know yet by fetching the user', async () => {
    const organization = sim.state.listOrganizations()[2]!;
    const silent = sim.state.createUser({ username: 'not_announced', name: 'Not Announced' });
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [silent.id] });
    await settle();
    await expectMirrorEqualsLogto();
    expect((await mirrorState(database.db)).memberships[organization.id]?.[silent.id]).toEqual([]);
  });

  it('re-reads an organization when the membership event carries no delta', async () => {
    const organization = sim.state.listOrganizations()[3]!;
    const role = sim.state.listOrganizationRoles()[1]!;
    const [existing] = sim.state.listMemberIds(organization.id);
    const joiner = outsider();
    // Changed silently in Logto (as an invitation or JIT would), then an event with only organizationId:
    // re-adding an existing member is a no-op POST whose event has no delta.
    sim.state.addMembers(organization.id, [joiner.id]);
    sim.state.addMemberRoles(organization.id, joiner.id, [role.id]);
    sim.state.setMemberRoles(organization.id, existing!, [role.id]);
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [existing!] });
    const sent = sim.webhooks.sent.at(-1)!;
    expect(sent.payload).not.toHaveProperty('addedUserIds');
    await settle();
    await expectMirrorEqualsLogto();
    expect((await mirrorState(database.db)).memberships[organization.id]?.[joiner.id]).toEqual([role.id]);
  });

  it('applies a registration with JIT although its membership events come before User.Created', async () => {
    const [first, second] = sim.state.listOrganizations();
    const role = sim.state.listOrganizationRoles()[2]!;
    // Only the membership events reach us: the user must be fetched to apply them.
    sim.setWebhookEndpoints([{ url: receiver.url, events: ['Organization.Membership.Updated'] }]);
    const registered = sim.registerWithJit({ username: 'jit_user', primaryEmail: 'jit@corp.example' }, [first!.id, second!.id], [role.id]);
    await settle();
    await expectMirrorEqualsLogto();
    const state = await mirrorState(database.db);
    expect(state.users[registered.id]).toBeDefined();
    expect(state.memberships[first!.id]?.[registered.id]).toEqual([role.id]);

    // Everything, delivered concurrently as Logto does.
    sim.setWebhookEndpoints([{ url: receiver.url }]);
    const again = sim.registerWithJit({ username: 'jit_user_2' }, [second!.id], [role.id]);
    await settle();
    await expectMirrorEqualsLogto();
    expect((await mirrorState(database.db)).memberships[second!.id]?.[again.id]).toEqual([role.id]);
  });

  it('re-reads the user on PostSignIn, and a known user\'s organizations only through membership events', async () => {
    const user = outsider();
    const organization = sim.state.listOrganizations()[4]!;
    // Memberships a sign-in brings (SSO just-in-time) come with their own event.
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [user.id] });
    await settle();
    sim.faults.resetStats();
    sim.emitInteractionEvent('PostSignIn', user.id);
    await settle();
    await expectMirrorEqualsLogto();
    const [stored] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(stored?.lastSignInAt?.getTime()).toBe(sim.state.getUser(user.id)!.lastSignInAt);
    const routes = Object.keys(sim.stats().byRoute);
    expect(routes).toContain('GET /api/users');
    expect(routes.filter((route) => /organizations/.test(route))).toEqual([]);
    const rows = await deliveries(database.db);
    expect(rows.at(-1)).toMatchObject({ event: 'PostSignIn', status: 'applied' });
  });

  it('leaves exactly Logto\'s state after many concurrent deliveries for one organization', async () => {
    const organization = sim.state.listOrganizations()[0]!;
    const roles = sim.state.listOrganizationRoles().map((role) => role.id);
    const candidates = sim.state.listUsers().filter((user) => !sim.state.isMember(organization.id, user.id)).slice(0, 12);
    const current = sim.state.listMemberIds(organization.id).slice(0, 4);
    await Promise.all([
      ...candidates.map(async (user, index) => {
        await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [user.id] });
        await sim.api.post(`/organizations/${organization.id}/users/${user.id}/roles`, { organizationRoleIds: [roles[index % roles.length]!] });
        if (index % 3 === 0) await sim.api.delete(`/organizations/${organization.id}/users/${user.id}`);
      }),
      ...current.map((userId) => sim.api.delete(`/organizations/${organization.id}/users/${userId}`)),
    ]);
    // A last event after the role assignments, so that a re-read follows every silent change.
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [candidates[1]!.id] });
    await settle();
    await expectMirrorEqualsLogto();
    const memberships = await changesFrom(database.db, 'webhook');
    expect(memberships.filter((change) => change.organizationId === organization.id && change.kind === 'member.added').length).toBeGreaterThanOrEqual(8);
  });

  it('marks an event it does not follow ignored and changes nothing', async () => {
    const before = await database.db.$count(accessChanges);
    sim.emitInteractionEvent('PostResetPassword', sim.state.listUsers()[0]!.id);
    await settle();
    const rows = await deliveries(database.db);
    expect(rows.at(-1)).toMatchObject({ event: 'PostResetPassword', status: 'ignored' });
    expect(await database.db.$count(accessChanges)).toBe(before);
  });
});
