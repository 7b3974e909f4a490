import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatedTenant, startSimulatedTenant } from '../../src/simulator/index.js';
import { accessToken, apiGet, capturedHeaders, loadApiCapture } from './helpers.js';

const keysOf = (value: unknown) => Object.keys(value as Record<string, unknown>);

describe('simulated Management API: pagination and headers', () => {
  let sim: SimulatedTenant;
  let token: string;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
    for (let index = 0; index < 45; index += 1) sim.state.createUser({ username: `user_${index}` });
    token = await accessToken(sim);
  });
  afterAll(() => sim.close());

  it('answers page 1 of 20 when no pagination is given, with Total-Number', async () => {
    const response = await apiGet(sim, token, '/users');
    expect(response.status).toBe(200);
    expect(response.headers.get('total-number')).toBe('45');
    expect(((await response.json()) as unknown[]).length).toBe(20);
  });

  it('accepts page_size 100 and rejects 101, 1000, 0, -1 and non-numbers with the captured 400', async () => {
    const captured = loadApiCapture('api-users-list-page_size-101');
    expect((await apiGet(sim, token, '/users?page_size=100')).status).toBe(200);
    for (const pageSize of ['101', '1000', '0', '-1', 'abc']) {
      const response = await apiGet(sim, token, `/users?page_size=${pageSize}`);
      expect(response.status).toBe(captured.status);
      expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(await response.text()).toBe(JSON.stringify(captured.body));
    }
    expect((await apiGet(sim, token, '/organizations?page_size=1000')).status).toBe(400);
    expect((await apiGet(sim, token, '/organization-roles?page_size=1000')).status).toBe(400);
    expect((await apiGet(sim, token, '/organizations/x/users?page_size=1000')).status).toBe(400);
  });

  it('sends Link headers without the /api prefix, in the captured order', async () => {
    const host = new URL(sim.baseUrl).host;
    const expectLinks = async (path: string, captureName: string) => {
      const response = await apiGet(sim, token, path);
      const captured = capturedHeaders(loadApiCapture(captureName), 'Link');
      const relations = captured.map((link) => /rel="(\w+)"/.exec(link)?.[1]);
      const links = (response.headers.get('link') ?? '').split(', ');
      expect(links.map((link) => /rel="(\w+)"/.exec(link)?.[1])).toEqual(relations);
      for (const link of links) expect(link).toMatch(new RegExp(`^<http://${host}/users\\?`));
      return links;
    };
    // Two users in the capture and page_size 1 there; here 45 users and page_size 22 give 3 pages.
    const first = await expectLinks('/users?page_size=22', 'api-users-list-page_size-1');
    expect(first).toEqual([
      `<http://${host}/users?page_size=22&page=1>; rel="first"`,
      `<http://${host}/users?page_size=22&page=3>; rel="last"`,
      `<http://${host}/users?page_size=22&page=2>; rel="next"`,
    ]);
    const last = await expectLinks('/users?page_size=22&page=3', 'api-users-list-page_size-1-page-2');
    expect(last[1]).toBe(`<http://${host}/users?page_size=22&page=2>; rel="prev"`);
  });

  it('gives every response a request id and the JSON content type', async () => {
    const response = await apiGet(sim, token, '/users?page_size=1');
    expect(response.headers.get('logto-core-request-id')).toMatch(/^[\w-]{16}$/);
    expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
  });
});

describe('simulated Management API: shapes, orders and errors', () => {
  let sim: SimulatedTenant;
  let token: string;
  let acme: string;
  let admin: string;
  let viewer: string;
  let alice: string;
  let bob: string;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
    token = await accessToken(sim);
    alice = (await sim.api.post('/users', { username: 'alice', primaryEmail: 'alice@example.com', name: 'Alice A' })).body.id;
    bob = (await sim.api.post('/users', { username: 'bob', primaryEmail: 'bob@example.com', name: 'Zoë Ñúñez' })).body.id;
    acme = (await sim.api.post('/organizations', { name: 'Acme', description: 'org one' })).body.id;
    await sim.api.post('/organizations', { name: 'Initech' });
    viewer = (await sim.api.post('/organization-roles', { name: 'viewer', description: 'read only' })).body.id;
    admin = (await sim.api.post('/organization-roles', { name: 'admin', description: 'org admin' })).body.id;
    await sim.api.post(`/organizations/${acme}/users`, { userIds: [bob, alice] });
    await sim.api.post(`/organizations/${acme}/users/${bob}/roles`, { organizationRoleIds: [viewer, admin] });
    await sim.api.post(`/organizations/${acme}/users/${alice}/roles`, { organizationRoleNames: ['admin'] });
    await sim.webhooks.idle();
  });
  afterAll(() => sim.close());

  it('answers users with the captured fields, newest first', async () => {
    const captured = loadApiCapture('api-users-list');
    const body = (await (await apiGet(sim, token, '/users')).json()) as Array<{ id: string }>;
    expect(body.map((user) => user.id)).toEqual([bob, alice]);
    expect(keysOf(body[0])).toEqual(keysOf((captured.body as unknown[])[0]));
    const single = await (await apiGet(sim, token, `/users/${alice}`)).json();
    expect(keysOf(single)).toEqual(keysOf(loadApiCapture('api-users-get').body));
  });

  it('lists members ordered by id, without hasPassword, with roles sorted by name', async () => {
    const captured = loadApiCapture('api-organization-users-list');
    const body = (await (await apiGet(sim, token, `/organizations/${acme}/users`)).json()) as Array<{
      id: string;
      organizationRoles: Array<{ id: string; name: string }>;
    }>;
    expect(body.map((member) => member.id)).toEqual([alice, bob].sort());
    expect(keysOf(body[0])).toEqual(keysOf((captured.body as unknown[])[0]));
    expect(body[0]).not.toHaveProperty('hasPassword');
    const bobItem = body.find((member) => member.id === bob);
    expect(bobItem?.organizationRoles).toEqual([
      { id: admin, name: 'admin' },
      { id: viewer, name: 'viewer' },
    ]);
  });

  it('filters members by organizationRoleId and q', async () => {
    const byRole = (await (await apiGet(sim, token, `/organizations/${acme}/users?organizationRoleId=${viewer}`)).json()) as Array<{ id: string }>;
    expect(byRole.map((member) => member.id)).toEqual([bob]);
    const byName = (await (await apiGet(sim, token, `/organizations/${acme}/users?q=${encodeURIComponent('ñúñ')}`)).json()) as Array<{ id: string }>;
    expect(byName.map((member) => member.id)).toEqual([bob]);
  });

  it('answers an unknown organization\'s member list with [] and Total-Number 0', async () => {
    const response = await apiGet(sim, token, '/organizations/doesnotexist/users');
    expect(response.status).toBe(200);
    expect(response.headers.get('total-number')).toBe('0');
    expect(await response.json()).toEqual([]);
  });

  it('lists organization roles by name with empty scope lists, and organizations with tenantId', async () => {
    const roles = (await (await apiGet(sim, token, '/organization-roles')).json()) as Array<{ name: string }>;
    expect(roles.map((role) => role.name)).toEqual(['admin', 'viewer']);
    expect(keysOf(roles[0])).toEqual(keysOf((loadApiCapture('api-organization-roles-list').body as unknown[])[0]));
    const organizations = (await (await apiGet(sim, token, '/organizations')).json()) as Array<{ name: string; tenantId: string }>;
    expect(organizations.map((organization) => organization.name)).toEqual(['Acme', 'Initech']);
    expect(keysOf(organizations[0])).toEqual(keysOf((loadApiCapture('api-organizations-list').body as unknown[])[0]));
    expect(organizations[0]?.tenantId).toBe('default');
  });

  it('answers a member\'s roles and a user\'s organizations in the captured shapes', async () => {
    const roles = (await (await apiGet(sim, token, `/organizations/${acme}/users/${bob}/roles`)).json()) as unknown[];
    expect(roles).toHaveLength(2);
    expect(keysOf(roles[0])).toEqual(keysOf((loadApiCapture('api-organization-user-roles').body as unknown[])[0]));
    const response = await apiGet(sim, token, `/users/${alice}/organizations`);
    expect(response.headers.get('total-number')).toBeNull();
    const organizations = (await response.json()) as Array<{ organizationRoles: unknown }>;
    expect(keysOf(organizations[0])).toEqual(keysOf((loadApiCapture('api-users-organizations').body as unknown[])[0]));
    expect(organizations[0]?.organizationRoles).toEqual([{ id: admin, name: 'admin' }]);
  });

  it('supports the batch search by ids and LIKE searches', async () => {
    const ids = await apiGet(sim, token, `/users?search.id=${alice}&search.id=${bob}&search.id=nope&mode.id=exact&isCaseSensitive=true`);
    expect(((await ids.json()) as Array<{ id: string }>).map((user) => user.id).sort()).toEqual([alice, bob].sort());
    const like = (await (await apiGet(sim, token, '/users?search=%25ALI%25')).json()) as Array<{ id: string }>;
    expect(like.map((user) => user.id)).toEqual([alice]);
    // `like` without wildcards is an exact (case-insensitive) match, as in Logto.
    expect(await (await apiGet(sim, token, '/users?search=ali')).json()).toEqual([]);
  });

  it('answers Logto\'s error bodies', async () => {
    const missing = await apiGet(sim, token, '/users/nope');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ code: 'entity.not_found', message: 'The resource does not exist.' });

    const duplicate = await sim.api.post('/users', { username: 'ALICE' });
    expect(duplicate.status).toBe(422);
    expect(duplicate.body.code).toBe('user.username_already_in_use');

    const noName = await sim.api.post('/organizations', {});
    expect(noName.status).toBe(400);
    const broken = await fetch(`${sim.baseUrl}/api/organizations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{"name": ',
    });
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { code: string }).code).toBe('guard.invalid_input');

    const wrongType = await sim.api.post('/organizations', { name: 42 });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body).toMatchObject({ code: 'guard.invalid_input', message: 'The request body is invalid.' });

    const unknown = await apiGet(sim, token, '/no-such-route');
    expect(unknown.status).toBe(404);
  });

  it('refuses member-role calls for a non-member with the captured 422', async () => {
    const carol = (await sim.api.post('/users', { username: 'carol' })).body.id as string;
    const response = await sim.api.post(`/organizations/${acme}/users/${carol}/roles`, { organizationRoleIds: [admin] });
    expect(response.status).toBe(422);
    expect(response.body).toEqual({
      code: 'organization.require_membership',
      message: 'The user must be a member of the organization to proceed.',
    });
    expect((await sim.api.delete(`/organizations/${acme}/users/${carol}`)).status).toBe(404);
    const unknownUser = await sim.api.post(`/organizations/${acme}/users`, { userIds: ['nobody'] });
    expect(unknownUser.status).toBe(422);
    expect(unknownUser.body.code).toBe('entity.relation_foreign_key_not_found');
  });
});

describe('simulated Management API: membership semantics and cascades', () => {
  let sim: SimulatedTenant;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
  });
  afterAll(() => sim.close());

  it('keeps survivors\' roles on PUT members and drops the leavers\' roles', async () => {
    const { state } = sim;
    const organization = state.createOrganization({ name: 'Org' }).id;
    const role = state.createOrganizationRole({ name: 'r' }).id;
    const [a, b, c] = ['a', 'b', 'c'].map((name) => state.createUser({ username: name }).id) as [string, string, string];
    state.addMembers(organization, [a, b]);
    state.setMemberRoles(organization, a, [role]);
    state.setMemberRoles(organization, b, [role]);
    expect((await sim.api.put(`/organizations/${organization}/users`, { userIds: [a, c] })).status).toBe(204);
    expect(state.getMemberRoleIds(organization, a)).toEqual([role]);
    expect(state.isMember(organization, b)).toBe(false);
    state.addMembers(organization, [b]);
    expect(state.getMemberRoleIds(organization, b)).toEqual([]);
  });

  it('cascades deletions of users, organizations and roles', async () => {
    const { state } = sim;
    const organization = state.createOrganization({ name: 'Cascade' }).id;
    const other = state.createOrganization({ name: 'Other' }).id;
    const role = state.createOrganizationRole({ name: 'cascade-role' }).id;
    const user = state.createUser({ username: 'doomed' }).id;
    const keeper = state.createUser({ username: 'keeper' }).id;
    state.addMembers(organization, [user, keeper]);
    state.addMembers(other, [keeper]);
    state.setMemberRoles(organization, keeper, [role]);

    expect((await sim.api.delete(`/users/${user}`)).status).toBe(204);
    expect(state.listMemberIds(organization)).toEqual([keeper]);

    expect((await sim.api.delete(`/organization-roles/${role}`)).status).toBe(204);
    expect(state.getMemberRoleIds(organization, keeper)).toEqual([]);

    expect((await sim.api.delete(`/organizations/${organization}`)).status).toBe(204);
    expect(state.listUserOrganizationIds(keeper)).toEqual([other]);
  });

  it('answers 403 auth.forbidden on organization routes when the plan lacks Organizations', async () => {
    sim.faults.organizationsEnabled = false;
    try {
      for (const path of ['/organizations', '/organization-roles', `/users/${sim.state.createUser().id}/organizations`]) {
        const response = await sim.api.get(path);
        expect(response.status).toBe(403);
        expect(response.body.code).toBe('auth.forbidden');
      }
      expect((await sim.api.get('/users')).status).toBe(200);
    } finally {
      sim.faults.organizationsEnabled = true;
    }
  });

  it('can shuffle GET /organizations per request', async () => {
    for (let index = 0; index < 20; index += 1) sim.state.createOrganization({ name: `o${index}` });
    const ids = async () => ((await sim.api.get('/organizations', { page_size: 100 })).body as Array<{ id: string }>).map((o) => o.id);
    const stable = await ids();
    expect(await ids()).toEqual(stable);
    sim.faults.unstableOrganizationOrder = true;
    try {
      const orders = new Set<string>();
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const shuffledIds = await ids();
        expect([...shuffledIds].sort()).toEqual([...stable].sort());
        orders.add(shuffledIds.join());
      }
      expect(orders.size).toBeGreaterThan(1);
    } finally {
      sim.faults.unstableOrganizationOrder = false;
    }
  });
});

describe('simulated Management API: repeated and refused member writes, as Logto 1.42 answers them', () => {
  let sim: SimulatedTenant;
  let organization: string;
  let role: string;
  let machineRole: string;
  let member: string;
  let outsider: string;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
    const { state } = sim;
    organization = state.createOrganization({ name: 'Repeat' }).id;
    role = state.createOrganizationRole({ name: 'editor' }).id;
    machineRole = state.createOrganizationRole({ name: 'robot', type: 'MachineToMachine' }).id;
    member = state.createUser({ username: 'member' }).id;
    outsider = state.createUser({ username: 'outsider' }).id;
  });
  afterAll(() => sim.close());

  it('answers 201 to adding a member again and to granting a held role again, changing nothing', async () => {
    for (let round = 0; round < 2; round += 1) {
      expect((await sim.api.post(`/organizations/${organization}/users`, { userIds: [member] })).status).toBe(201);
      expect((await sim.api.post(`/organizations/${organization}/users/${member}/roles`, { organizationRoleIds: [role] })).status).toBe(201);
    }
    expect(sim.state.listMemberIds(organization)).toEqual([member]);
    expect(sim.state.getMemberRoleIds(organization, member)).toEqual([role]);
  });

  it('answers 404 entity.not_found to revoking a role not held and to removing a non-member (also for unknown ids)', async () => {
    const other = sim.state.createOrganizationRole({ name: 'other' }).id;
    const notHeld = await sim.api.delete(`/organizations/${organization}/users/${member}/roles/${other}`);
    expect([notHeld.status, notHeld.body.code]).toEqual([404, 'entity.not_found']);
    for (const path of [`/organizations/${organization}/users/${outsider}`, `/organizations/${organization}/users/nobody`, `/organizations/nowhere/users/${member}`]) {
      const response = await sim.api.delete(path);
      expect([response.status, response.body.code]).toEqual([404, 'entity.not_found']);
    }
  });

  it('answers 422 organization.require_membership to granting to or revoking from a non-member', async () => {
    const calls = [
      sim.api.post(`/organizations/${organization}/users/${outsider}/roles`, { organizationRoleIds: [role] }),
      sim.api.put(`/organizations/${organization}/users/${outsider}/roles`, { organizationRoleIds: [role] }),
      sim.api.delete(`/organizations/${organization}/users/${outsider}/roles/${role}`),
    ];
    for (const response of await Promise.all(calls)) {
      expect([response.status, response.body.code]).toEqual([422, 'organization.require_membership']);
    }
    expect(sim.state.isMember(organization, outsider)).toBe(false);
  });

  it('answers 422 entity.relation_foreign_key_not_found to an unknown user or organization, and changes nothing', async () => {
    const unknownUser = await sim.api.post(`/organizations/${organization}/users`, { userIds: [outsider, 'nobody'] });
    expect([unknownUser.status, unknownUser.body.code]).toEqual([422, 'entity.relation_foreign_key_not_found']);
    expect(sim.state.isMember(organization, outsider)).toBe(false);
    const unknownOrganization = await sim.api.post('/organizations/nowhere/users', { userIds: [outsider] });
    expect(unknownOrganization.status).toBe(422);
    const wrongType = await sim.api.post(`/organizations/${organization}/users/${member}/roles`, { organizationRoleIds: [machineRole] });
    expect([wrongType.status, wrongType.body.code]).toEqual([422, 'entity.db_constraint_violated']);
  });

  it('replaces the whole member list on PUT /organizations/:id/users and the exact role set on PUT …/roles', async () => {
    const third = sim.state.createUser({ username: 'third' }).id;
    expect((await sim.api.put(`/organizations/${organization}/users`, { userIds: [member, third] })).status).toBe(204);
    expect(sim.state.listMemberIds(organization)).toEqual([member, third].sort());
    const second = sim.state.createOrganizationRole({ name: 'second' }).id;
    expect((await sim.api.put(`/organizations/${organization}/users/${member}/roles`, { organizationRoleIds: [second] })).status).toBe(204);
    expect(sim.state.getMemberRoleIds(organization, member)).toEqual([second]);
    expect((await sim.api.put(`/organizations/${organization}/users/${member}/roles`, { organizationRoleIds: [] })).status).toBe(204);
    expect(sim.state.getMemberRoleIds(organization, member)).toEqual([]);
  });

  it('gives many members many roles with POST /organizations/:id/users/roles (held roles kept; a non-member is 422)', async () => {
    const [a, b] = ['bulk-a', 'bulk-b'].map((username) => sim.state.createUser({ username }).id) as [string, string];
    sim.state.addMembers(organization, [a, b]);
    sim.state.setMemberRoles(organization, a, [role]);
    const second = sim.state.createOrganizationRole({ name: 'bulk-second' }).id;
    const response = await sim.api.post(`/organizations/${organization}/users/roles`, { userIds: [a, b], organizationRoleIds: [role, second] });
    expect(response.status).toBe(201);
    expect(sim.state.getMemberRoleIds(organization, a).sort()).toEqual([role, second].sort());
    expect(sim.state.getMemberRoleIds(organization, b).sort()).toEqual([role, second].sort());
    const withOutsider = await sim.api.post(`/organizations/${organization}/users/roles`, { userIds: [outsider], organizationRoleIds: [role] });
    expect(withOutsider.status).toBe(422);
  });

  it('answers 403 subscription.limit_exceeded past the plan quota of members (Logto Cloud), changing nothing', async () => {
    const small = sim.state.createOrganization({ name: 'Small plan' }).id;
    sim.faults.usersPerOrganizationLimit = 1;
    try {
      expect((await sim.api.post(`/organizations/${small}/users`, { userIds: [member] })).status).toBe(201);
      const over = await sim.api.post(`/organizations/${small}/users`, { userIds: [outsider] });
      expect([over.status, over.body.code]).toEqual([403, 'subscription.limit_exceeded']);
      // Re-adding the member already there stays within the quota.
      expect((await sim.api.post(`/organizations/${small}/users`, { userIds: [member] })).status).toBe(201);
      expect(sim.state.listMemberIds(small)).toEqual([member]);
    } finally {
      sim.faults.usersPerOrganizationLimit = undefined;
    }
  });
});

describe('simulated Management API: member pages', () => {
  let sim: SimulatedTenant;
  let token: string;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
    token = await accessToken(sim);
  });
  afterAll(() => sim.close());

  it('pages an organization\'s members as a slice, the same bytes as the filtered list that reads them all', async () => {
    const organization = sim.state.createOrganization({ name: 'Paged' }).id;
    const userIds = Array.from({ length: 45 }, (_, index) => sim.state.createUser({ username: `user_${index}` }).id);
    sim.state.addMembers(organization, userIds);
    const role = sim.state.createOrganizationRole({ name: 'paged-role' }).id;
    for (const userId of userIds.slice(20, 30)) sim.state.setMemberRoles(organization, userId, [role]);
    sim.state.deleteUser(userIds[7]!);
    for (const page of [1, 2, 3, 4]) {
      const sliced = await apiGet(sim, token, `/organizations/${organization}/users?page=${page}&page_size=20`);
      // `q` matching every member takes the path that lists all members and then cuts the page.
      const filtered = await apiGet(sim, token, `/organizations/${organization}/users?page=${page}&page_size=20&q=user_`);
      expect(sliced.headers.get('total-number')).toBe('44');
      expect(filtered.headers.get('total-number')).toBe('44');
      expect(await sliced.text()).toBe(await filtered.text());
    }
  });
});
