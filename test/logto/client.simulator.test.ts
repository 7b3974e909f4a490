import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { createLogtoClient, defaultUserAgent, LogtoError, type LogtoClientOptions, type Page } from '../../src/logto/index.js';
import { startSimulatedTenant, type SimulatedTenant, type SimulatedTenantOptions } from '../../src/simulator/index.js';

/*
 * The client against the simulated Logto tenant (src/simulator) over HTTP: paging, faults, token
 * expiry and provisioning round trips, checked against the tenant's own state and request counts.
 */

const fast: LogtoClientOptions = { backoff: { baseMs: 5, capMs: 20, maxRetryAfterMs: 5000 } };

const tenants: SimulatedTenant[] = [];
const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(tenants.splice(0).map((tenant) => tenant.close()));
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

const startTenant = async (options: SimulatedTenantOptions = {}) => {
  const tenant = await startSimulatedTenant({ resource: 'self', ...options });
  tenants.push(tenant);
  return tenant;
};

const configFor = (tenant: SimulatedTenant, overrides: Partial<Config['logto']> = {}): Config['logto'] => ({
  baseUrl: tenant.baseUrl,
  tokenUrl: tenant.tokenUrl,
  resource: tenant.resource,
  clientId: tenant.clientId,
  clientSecret: tenant.clientSecret,
  rateLimit: { requests: 1000, intervalMs: 1000 },
  concurrency: 8,
  timeoutMs: 2000,
  maxRetries: 3,
  hookId: tenant.hookId,
  ...overrides,
});

const collect = async <T>(pages: AsyncIterable<Page<T>>): Promise<Page<T>[]> => {
  const seen: Page<T>[] = [];
  for await (const page of pages) seen.push(page);
  return seen;
};

const sorted = (ids: Iterable<string>) => [...ids].sort();

describe('reads against the simulated tenant', () => {
  it('crawls users, organizations, roles and members completely', async () => {
    const tenant = await startTenant({ generate: { users: 250, organizations: 6, organizationRoles: 4 } });
    const client = createLogtoClient(configFor(tenant), fast);

    const users = await collect(client.listUsers());
    expect(users.map((page) => [page.page, page.items.length, page.total])).toEqual([
      [1, 100, 250],
      [2, 100, 250],
      [3, 50, 250],
    ]);
    expect(sorted(users.flatMap((page) => page.items.map((user) => user.id)))).toEqual(sorted(tenant.state.listUsers().map((user) => user.id)));

    const organizations = (await collect(client.listOrganizations())).flatMap((page) => page.items);
    expect(sorted(organizations.map((organization) => organization.id))).toEqual(
      sorted(tenant.state.listOrganizations().map((organization) => organization.id)),
    );
    const roles = (await collect(client.listOrganizationRoles())).flatMap((page) => page.items);
    expect(sorted(roles.map((role) => role.id))).toEqual(sorted(tenant.state.listOrganizationRoles().map((role) => role.id)));

    for (const organization of organizations) {
      const members = (await collect(client.listOrganizationMembers(organization.id))).flatMap((page) => page.items);
      expect(sorted(members.map((member) => member.id))).toEqual(sorted(tenant.state.listMemberIds(organization.id)));
      for (const member of members) {
        expect(sorted(member.organizationRoles.map((role) => role.id))).toEqual(sorted(tenant.state.getMemberRoleIds(organization.id, member.id)));
      }
    }
    // Every crawl request asked for 100 items and none followed a Link header (they would lack /api).
    const routes = Object.keys(tenant.stats().byRoute);
    expect(routes.every((route) => route.includes(' /api/') || route.includes(' /oidc/'))).toBe(true);
  });

  it('dedupes the item a creation pushes onto the next page and reports the moved Total-Number', async () => {
    const tenant = await startTenant({ generate: { users: 230, organizations: 1 } });
    const client = createLogtoClient(configFor(tenant), fast);
    const pages: Page<{ id: string }>[] = [];
    for await (const page of client.listUsers()) {
      pages.push(page);
      // Users are newest first: a creation after page 1 shifts every user down by one place.
      if (page.page === 1) tenant.state.createUser({ username: 'created_mid_crawl' });
    }
    expect(pages.map((page) => [page.page, page.items.length, page.total])).toEqual([
      [1, 100, 230],
      [2, 99, 231],
      [3, 31, 231],
    ]);
    const ids = pages.flatMap((page) => page.items.map((item) => item.id));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(230);
  });

  it('never yields an organization twice when the listing order is unstable', async () => {
    const tenant = await startTenant({ generate: { users: 50, organizations: 260 }, unstableOrganizationOrder: true });
    const pages = await collect(createLogtoClient(configFor(tenant), fast).listOrganizations());
    const ids = pages.flatMap((page) => page.items.map((organization) => organization.id));
    expect(pages.length).toBe(3);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => tenant.state.getOrganization(id) !== undefined)).toBe(true);
  });

  it('looks up single entities, with null for missing ones, and batches users by id', async () => {
    const tenant = await startTenant({ generate: { users: 150, organizations: 3 } });
    const client = createLogtoClient(configFor(tenant), fast);
    const [someUser] = tenant.state.listUsers();
    const [someOrganization] = tenant.state.listOrganizations();
    const [someRole] = tenant.state.listOrganizationRoles();

    expect((await client.getUser(someUser!.id))?.username).toBe(someUser!.username);
    expect(await client.getUser('no-such-user')).toBeNull();
    expect((await client.getOrganization(someOrganization!.id))?.name).toBe(someOrganization!.name);
    expect(await client.getOrganization('no-such-org')).toBeNull();
    expect((await client.getOrganizationRole(someRole!.id))?.name).toBe(someRole!.name);
    expect(await client.getOrganizationRole('no-such-role')).toBeNull();
    expect(await client.getUserOrganizations('no-such-user')).toBeNull();
    const userOrganizations = await client.getUserOrganizations(someUser!.id);
    expect(sorted(userOrganizations!.map((organization) => organization.id))).toEqual(sorted(tenant.state.listUserOrganizationIds(someUser!.id)));

    const ids = tenant.state.listUsers().map((user) => user.id);
    tenant.faults.resetStats();
    const found = await client.findUsersByIds([...ids, 'no-such-user']);
    expect(sorted(found.map((user) => user.id))).toEqual(sorted(ids));
    expect(tenant.stats().byRoute['GET /api/users']?.total).toBe(2);
  });

  it('reads failed deliveries from the hook log, and our User-Agent identifies our writes there', async () => {
    const receiver = createServer((_request, response) => {
      response.writeHead(500).end();
    });
    servers.push(receiver);
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const tenant = await startTenant();
    tenant.setWebhookEndpoints([{ url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook` }]);
    const client = createLogtoClient(configFor(tenant), fast);
    const startTime = Date.now() - 1;

    const user = await client.createUser({ username: 'echoed', primaryEmail: 'echoed@example.com' });
    await tenant.webhooks.idle();
    const logs = (await collect(client.listHookLogs(tenant.hookId, { startTime, result: 'Error' }))).flatMap((page) => page.items);

    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatchObject({ key: 'TriggerHook.User.Created', payload: { result: 'Error', hookId: tenant.hookId } });
    expect(logs[0]?.payload.hookRequest?.body).toMatchObject({ userAgent: defaultUserAgent, data: { id: user.id } });
    expect(await collect(client.listHookLogs(tenant.hookId, { startTime: Date.now() + 60_000 }))).toEqual([]);
  });
});

describe('faults', () => {
  it('waits out a 429 with Retry-After, then succeeds', async () => {
    const tenant = await startTenant({ generate: { users: 5, organizations: 1 } });
    const client = createLogtoClient(configFor(tenant), fast);
    tenant.faults.failNext(1, { status: 429, retryAfterSeconds: 1, paths: /^\/api\// });
    const started = performance.now();
    const pages = await collect(client.listUsers());
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(pages[0]?.items).toHaveLength(5);
    expect(tenant.stats().byRoute['GET /api/users']?.byStatus).toEqual({ '429': 1, '200': 1 });
    expect(client.stats().retries).toBe(1);
  });

  it('retries 5xx, then succeeds', async () => {
    const tenant = await startTenant({ generate: { users: 5, organizations: 1 } });
    const client = createLogtoClient(configFor(tenant), fast);
    await client.getUser('warm-up-token');
    tenant.faults.failNext(1, { status: 500 });
    tenant.faults.failNext(1, { status: 502 });
    const [user] = tenant.state.listUsers();
    expect((await client.getUser(user!.id))?.id).toBe(user!.id);
    expect(tenant.stats().byRoute['GET /api/users/:userId']?.byStatus).toEqual({ '404': 1, '500': 1, '502': 1, '200': 1 });
  });

  it('gives up after maxRetries with an error naming the status and path', async () => {
    const tenant = await startTenant();
    const client = createLogtoClient(configFor(tenant, { maxRetries: 2 }), fast);
    await client.probeOrganizations();
    tenant.faults.failNext(10, { status: 503 });
    const error = await client.getOrganization('abc').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LogtoError);
    expect(error).toMatchObject({ kind: 'api', status: 503, path: '/organizations/abc' });
    expect((error as Error).message).toContain('GET /api/organizations/abc');
    expect(tenant.stats().byRoute['GET /api/organizations/:id']?.total).toBe(3);
  });

  it('times out a hung request and retries it', async () => {
    const tenant = await startTenant({ generate: { users: 3, organizations: 1 } });
    const client = createLogtoClient(configFor(tenant, { timeoutMs: 500 }), fast);
    await client.getUser('warm-up-token');
    tenant.faults.hangNext(1);
    const [user] = tenant.state.listUsers();
    expect((await client.getUser(user!.id))?.id).toBe(user!.id);
    expect(client.stats().byStatus.timeout).toBe(1);
  });

  it('stays inside a sliding-window rate limit it was configured for: no 429', async () => {
    const tenant = await startTenant({ generate: { users: 30, organizations: 1 } });
    const client = createLogtoClient(configFor(tenant, { rateLimit: { requests: 5, intervalMs: 600 }, concurrency: 20 }), fast);
    // The token request is outside the budget (once an hour in production): fetch it before the limit applies.
    await client.probeOrganizations();
    // The tenant allows 5 per 300 ms; the client budget is stricter, because the simulator shares this
    // test's event loop and a stalled loop can hand it two batches at once.
    tenant.faults.rateLimit({ requests: 5, perMs: 300 });
    const before = client.stats().requests;
    const ids = tenant.state.listUsers().slice(0, 11).map((user) => user.id);
    const users = await Promise.all(ids.map((id) => client.getUser(id)));
    expect(users.every((user) => user !== null)).toBe(true);
    expect(tenant.stats().byStatus['429']).toBeUndefined();
    expect(client.stats().requests - before).toBe(11);
  });
});

describe('token against the simulated tenant', () => {
  it('fetches one token for many calls and refreshes once after the tenant expires it', async () => {
    const tenant = await startTenant({ generate: { users: 20, organizations: 2 } });
    const client = createLogtoClient(configFor(tenant), fast);
    const ids = tenant.state.listUsers().map((user) => user.id);
    await Promise.all(ids.map((id) => client.getUser(id)));
    expect(tenant.tokens.issuedCount).toBe(1);

    tenant.expireAllTokens();
    await Promise.all(ids.slice(0, 5).map((id) => client.getUser(id)));
    expect(tenant.tokens.issuedCount).toBe(2);
    expect(client.stats().tokenFetches).toBe(2);
    expect(tenant.stats().byRoute['GET /api/users/:userId']?.byStatus['401']).toBe(5);
  });

  it('fails fast on a wrong secret without leaking it', async () => {
    const tenant = await startTenant();
    const secret = 'definitely-wrong-secret-771';
    const client = createLogtoClient(configFor(tenant, { clientSecret: secret }), fast);
    const error = await client.listUsers()[Symbol.asyncIterator]().next().catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'credentials', code: 'invalid_client' });
    expect((error as Error).message).toContain('Logto rejected the client id or secret (invalid_client)');
    expect(JSON.stringify(error)).not.toContain(secret);
    expect((error as Error).message).not.toContain(secret);
    expect(tenant.stats().byRoute['POST /oidc/token']?.total).toBe(1);
    expect(tenant.tokens.issuedCount).toBe(0);
  });

  it("stops with a 'scope' error when the app lacks the Management API role", async () => {
    const tenant = await startTenant({ grantAllScope: false });
    const error = await createLogtoClient(configFor(tenant), fast).getUser('u1').catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'scope' });
    expect((error as Error).message).toContain('"Logto Management API access" role');
    expect(tenant.stats().byRoute['GET /api/users/:userId']).toBeUndefined();
  });

  it('names LOGTO_MANAGEMENT_API_RESOURCE when the resource is wrong', async () => {
    const tenant = await startTenant();
    const client = createLogtoClient(configFor(tenant, { resource: 'https://default.logto.app/api' }), fast);
    await expect(client.getUser('u1')).rejects.toThrow(/LOGTO_MANAGEMENT_API_RESOURCE/);
  });
});

describe('organizations probe', () => {
  it('reports organizations unavailable with the status and code', async () => {
    const tenant = await startTenant({ organizationsEnabled: false });
    const client = createLogtoClient(configFor(tenant), fast);
    expect(await client.probeOrganizations()).toEqual({ available: false, reason: '403 auth.forbidden' });
    tenant.faults.organizationsEnabled = true;
    expect(await client.probeOrganizations()).toEqual({ available: true });
  });
});

describe('provisioning round trip', () => {
  it('creates, adds, assigns, reads, revokes, removes and suspends, as the tenant sees it', async () => {
    const tenant = await startTenant({ generate: { users: 5, organizations: 2, organizationRoles: 3 } });
    const client = createLogtoClient(configFor(tenant), fast);
    const [organization] = tenant.state.listOrganizations();
    const [admin, viewer] = tenant.state.listOrganizationRoles().filter((role) => role.type === 'User');
    const orgId = organization!.id;

    const user = await client.createUser({ username: 'provisioned', name: 'Pro Visioned', customData: { source: 'test' } });
    expect(tenant.state.getUser(user.id)?.username).toBe('provisioned');
    expect(user.customData).toEqual({ source: 'test' });

    await client.addOrganizationMembers(orgId, [user.id, user.id]);
    expect(tenant.state.isMember(orgId, user.id)).toBe(true);
    await client.assignOrganizationMemberRoles(orgId, user.id, [admin!.id, viewer!.id]);
    expect(sorted((await client.getOrganizationMemberRoles(orgId, user.id)).map((role) => role.id))).toEqual(sorted([admin!.id, viewer!.id]));

    await client.removeOrganizationMemberRole(orgId, user.id, viewer!.id);
    expect(tenant.state.getMemberRoleIds(orgId, user.id)).toEqual([admin!.id]);
    await client.removeOrganizationMember(orgId, user.id);
    expect(tenant.state.isMember(orgId, user.id)).toBe(false);
    await expect(client.getOrganizationMemberRoles(orgId, user.id)).rejects.toMatchObject({
      status: 422,
      code: 'organization.require_membership',
    });

    expect((await client.setUserSuspended(user.id, true)).isSuspended).toBe(true);
    expect(tenant.state.getUser(user.id)?.isSuspended).toBe(true);
    expect(client.stats().retries).toBe(0);
  });

  it('does not resend a user creation that failed with 500, but does after 503', async () => {
    const tenant = await startTenant();
    const client = createLogtoClient(configFor(tenant), fast);
    await client.probeOrganizations();
    tenant.faults.failNext(1, { status: 500, paths: /^\/api\/users$/ });
    await expect(client.createUser({ username: 'once' })).rejects.toMatchObject({ kind: 'api', status: 500 });
    expect(tenant.stats().byRoute['POST /api/users']?.total).toBe(1);

    tenant.faults.failNext(1, { status: 503, paths: /^\/api\/users$/ });
    const user = await client.createUser({ username: 'twice' });
    expect(tenant.state.getUser(user.id)?.username).toBe('twice');
    expect(tenant.stats().byRoute['POST /api/users']?.byStatus).toEqual({ '500': 1, '503': 1, '200': 1 });
  });
});
