import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { createLogtoClient, isNotFound, LogtoError, type LogtoClientOptions, type LogtoUser } from '../../src/logto/index.js';
import { closedPort, fakeUser, startFakeLogto, type FakeLogto, type FakeLogtoOptions, type ReceivedRequest } from './fake-logto.js';
import { busiestWindow, startThreadedLogto, type ThreadedLogto } from './threaded-server.js';

/*
 * The client against a real HTTP server (test/logto/fake-logto.ts): nothing in the client is mocked.
 * Backoff is shrunk so retries take milliseconds.
 */

const fast: LogtoClientOptions = { backoff: { baseMs: 5, capMs: 20, maxRetryAfterMs: 5000 } };

const servers: (FakeLogto | ThreadedLogto)[] = [];
const start = async (options: FakeLogtoOptions = {}) => {
  const server = await startFakeLogto(options);
  servers.push(server);
  return server;
};
const startThreaded = async (options: { failEvery?: number } = {}) => {
  const server = await startThreadedLogto(options);
  servers.push(server);
  return server;
};
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

const collect = async <T>(pages: AsyncIterable<{ items: T[]; page: number; total: number | null }>) => {
  const seen: { items: T[]; page: number; total: number | null }[] = [];
  for await (const page of pages) seen.push(page);
  return seen;
};

const userById = (request: ReceivedRequest) => {
  const id = /^\/users\/([^/]+)$/.exec(request.path)?.[1];
  return id ? { status: 200, body: fakeUser(decodeURIComponent(id)) } : { status: 404, body: { code: 'entity.not_found' } };
};

/** Captures everything a pino logger writes, at every level. */
const capturingLogger = () => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: 'trace' }, stream), text: () => lines.join('') };
};

describe('pagination', () => {
  it('walks pages with page/page_size, dedupes a repeated item and reports a moving Total-Number', async () => {
    // 230 users, newest first. After page 1 is served a user is created: everything shifts down by
    // one, so page 2 starts with the last item of page 1 and Total-Number becomes 231.
    const original = Array.from({ length: 230 }, (_, index) => fakeUser(`u${String(index).padStart(3, '0')}`));
    let list = original;
    const server = await start({
      api: (request) => {
        const page = Number(request.query.get('page'));
        const size = Number(request.query.get('page_size'));
        const slice = list.slice((page - 1) * size, page * size);
        const total = list.length;
        if (page === 1) list = [fakeUser('new-user'), ...original];
        return {
          status: 200,
          body: slice,
          headers: {
            'Total-Number': String(total),
            // Logto's Link lacks /api: following it would hit the fake server's 404.
            Link: `<${server.baseUrl}/users?page_size=${size}&page=${page + 1}>; rel="next"`,
          },
        };
      },
    });
    const client = createLogtoClient(server.config(), fast);

    const pages = await collect(client.listUsers());

    expect(server.requests.map((r) => `${r.method} ${r.path}?${r.query.toString()}`)).toEqual([
      'GET /users?page=1&page_size=100',
      'GET /users?page=2&page_size=100',
      'GET /users?page=3&page_size=100',
    ]);
    expect(pages.map((page) => [page.page, page.items.length, page.total])).toEqual([
      [1, 100, 230],
      [2, 99, 231],
      [3, 31, 231],
    ]);
    const ids = pages.flatMap((page) => page.items.map((user) => user.id));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(230);
    expect(ids).toContain('u099');
    expect(ids).toContain('u229');
  });

  it('stops after the pages Total-Number asks for, even when the last one comes back short', async () => {
    const member = (id: string) => ({ ...fakeUser(id), organizationRoles: [{ id: 'r1', name: 'admin' }] });
    const server = await start({
      api: (request) => {
        // Claims 150 members but has 120 (members left mid-crawl): page 3 is empty.
        const page = Number(request.query.get('page'));
        const count = page === 1 ? 100 : page === 2 ? 20 : 0;
        return { status: 200, body: Array.from({ length: count }, (_, index) => member(`p${page}-${index}`)), headers: { 'Total-Number': '150' } };
      },
    });
    const pages = await collect(createLogtoClient(server.config(), fast).listOrganizationMembers('org 1'));
    expect(pages.map((page) => [page.page, page.items.length, page.total])).toEqual([
      [1, 100, 150],
      [2, 20, 150],
    ]);
    // Two requests: a third page would start past Total-Number. The organization id is URL-encoded.
    expect(server.requests.map((r) => r.path)).toEqual(Array(2).fill('/organizations/org%201/users'));
    expect(pages[0]?.items[0]?.organizationRoles).toEqual([{ id: 'r1', name: 'admin' }]);
  });

  it('stops at a short page when Total-Number is absent', async () => {
    const role = (id: string) => ({ id, name: id, description: null, type: 'User', scopes: [] });
    const server = await start({
      api: (request) =>
        request.query.get('page') === '1'
          ? { status: 200, body: Array.from({ length: 100 }, (_, index) => role(`r${index}`)) }
          : { status: 200, body: [role('last')] },
    });
    const pages = await collect(createLogtoClient(server.config(), fast).listOrganizationRoles());
    expect(pages.map((page) => [page.page, page.items.length, page.total])).toEqual([
      [1, 100, null],
      [2, 1, null],
    ]);
    expect(server.requests).toHaveLength(2);
  });

  it('fails with invalid_response naming the path, not the body, when an item is malformed', async () => {
    const server = await start({
      api: () => ({
        status: 200,
        body: [fakeUser('ok'), { ...fakeUser('bad'), createdAt: 'private-value-xyz' }],
        headers: { 'Total-Number': '2' },
      }),
    });
    const error = await collect(createLogtoClient(server.config(), fast).listUsers()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LogtoError);
    expect(error).toMatchObject({ kind: 'invalid_response', path: '/users?page=1&page_size=100' });
    expect((error as Error).message).toContain('/api/users');
    expect((error as Error).message).toContain('1.createdAt');
    expect(JSON.stringify(error)).not.toContain('private-value-xyz');
  });

  it('filters hook logs to failures and the time window, sending start_time/end_time', async () => {
    const log = (id: string, result: 'Success' | 'Error', createdAt: number) => ({
      id,
      key: 'TriggerHook.User.Created',
      createdAt,
      payload: { key: 'TriggerHook.User.Created', result, hookId: 'hook1', hookRequest: { body: { event: 'User.Created' } } },
    });
    const server = await start({
      api: () => ({
        status: 200,
        body: [log('a', 'Error', 1500), log('b', 'Success', 1600), log('c', 'Error', 900), log('d', 'Error', 1999)],
        headers: { 'Total-Number': '4' },
      }),
    });
    const client = createLogtoClient(server.config(), fast);
    const pages = await collect(client.listHookLogs('hook1', { startTime: 1000, endTime: 2000, result: 'Error' }));
    expect(pages.flatMap((page) => page.items.map((item) => item.id))).toEqual(['a', 'd']);
    expect(pages[0]?.total).toBe(4);
    expect(server.requests[0]?.path).toBe('/hooks/hook1/recent-logs');
    expect(Object.fromEntries(server.requests[0]!.query)).toEqual({
      start_time: '1000',
      end_time: '2000',
      page: '1',
      page_size: '100',
    });
  });
});

describe('reads', () => {
  it('returns null for 404 and sends the User-Agent', async () => {
    const server = await start({ api: userById });
    const client = createLogtoClient(server.config(), fast);
    expect(await client.getOrganization('gone')).toBeNull();
    expect((await client.getUser('u1'))?.id).toBe('u1');
    expect(server.requests.every((r) => r.headers['user-agent'] === 'logto-access-sync/0.1 (+provisioning)')).toBe(true);

    const custom = createLogtoClient(server.config(), { ...fast, userAgent: 'custom-agent/1' });
    await custom.getUser('u2');
    expect(server.requests.at(-1)?.headers['user-agent']).toBe('custom-agent/1');
  });

  it('batches findUsersByIds at 100 ids per exact, case-sensitive search', async () => {
    const server = await start({
      api: (request) => ({ status: 200, body: request.query.getAll('search.id').filter((id) => !id.startsWith('missing')).map((id) => fakeUser(id)) }),
    });
    const ids = [...Array.from({ length: 230 }, (_, index) => `id${index}`), 'id0', 'missing-1'];
    const users = await createLogtoClient(server.config(), fast).findUsersByIds(ids);

    expect(users.map((user) => user.id).sort()).toEqual(Array.from({ length: 230 }, (_, index) => `id${index}`).sort());
    expect(server.requests).toHaveLength(3);
    for (const request of server.requests) {
      expect(request.path).toBe('/users');
      expect(request.query.getAll('search.id').length).toBeLessThanOrEqual(100);
      expect(request.query.get('mode.id')).toBe('exact');
      expect(request.query.get('isCaseSensitive')).toBe('true');
      expect(request.query.get('page_size')).toBe('100');
    }
    expect(server.requests.flatMap((r) => r.query.getAll('search.id'))).toHaveLength(231);
    expect(await createLogtoClient(server.config(), fast).findUsersByIds([])).toEqual([]);
    expect(server.requests).toHaveLength(3);
  });

  it('probes organizations: 403/404 mean unavailable, other errors throw', async () => {
    const server = await start({ api: () => ({ status: 404, body: { code: 'route.not_found', message: 'nope' } }) });
    const client = createLogtoClient(server.config(), fast);
    expect(await client.probeOrganizations()).toEqual({ available: false, reason: '404 route.not_found' });
    expect(server.requests[0]?.path).toBe('/organization-roles');
    expect(server.requests[0]?.query.toString()).toBe('page=1&page_size=1');

    server.setApi(() => ({ status: 403, body: { code: 'auth.forbidden', message: 'Forbidden' } }));
    expect(await client.probeOrganizations()).toEqual({ available: false, reason: '403 auth.forbidden' });

    server.setApi(() => ({ status: 400, body: { code: 'guard.invalid_input', message: 'bad' } }));
    await expect(client.probeOrganizations()).rejects.toMatchObject({ kind: 'api', status: 400 });

    server.setApi(() => ({ status: 200, body: [], headers: { 'Total-Number': '0' } }));
    expect(await client.probeOrganizations()).toEqual({ available: true });
  });
});

describe('retries', () => {
  it('honours Retry-After on 429, then succeeds', async () => {
    let calls = 0;
    const server = await start({
      api: (request) => (++calls === 1 ? { status: 429, headers: { 'Retry-After': '1' } } : userById(request)),
    });
    const client = createLogtoClient(server.config(), fast);
    const user = await client.getUser('u1');

    expect(user?.id).toBe('u1');
    expect(server.requests).toHaveLength(2);
    // Backoff alone would have waited ≤ 20 ms; the server asked for 1 s.
    expect(server.requests[1]!.receivedAt - server.requests[0]!.receivedAt).toBeGreaterThanOrEqual(950);
    expect(client.stats()).toMatchObject({ requests: 2, retries: 1, byStatus: { '429': 1, '200': 1 } });
  });

  it('retries 5xx, then succeeds', async () => {
    let calls = 0;
    const server = await start({ api: (request) => (++calls <= 2 ? { status: calls === 1 ? 500 : 502 } : userById(request)) });
    const client = createLogtoClient(server.config(), fast);
    expect((await client.getUser('u1'))?.id).toBe('u1');
    expect(client.stats()).toMatchObject({ requests: 3, retries: 2, byStatus: { '500': 1, '502': 1, '200': 1 } });
  });

  it('gives up after maxRetries with a clear error', async () => {
    const server = await start({ api: () => ({ status: 503, body: { code: 'unavailable', message: 'maintenance' } }) });
    const client = createLogtoClient(server.config({ maxRetries: 2 }), fast);
    const error = await client.getUser('u1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LogtoError);
    expect(error).toMatchObject({ kind: 'api', status: 503, code: 'unavailable', path: '/users/u1' });
    expect((error as Error).message).toBe('Logto answered 503 unavailable to GET /api/users/u1: maintenance');
    expect(server.requests).toHaveLength(3);
  });

  it('reports rate_limited when 429 outlasts the retries', async () => {
    const server = await start({ api: () => ({ status: 429 }) });
    const client = createLogtoClient(server.config({ maxRetries: 1 }), fast);
    await expect(client.getUser('u1')).rejects.toMatchObject({ kind: 'rate_limited', status: 429 });
    expect(server.requests).toHaveLength(2);
  });

  it('never retries other 4xx', async () => {
    const server = await start({ api: () => ({ status: 422, body: { code: 'organization.require_membership', message: 'not a member' } }) });
    const client = createLogtoClient(server.config(), fast);
    await expect(client.assignOrganizationMemberRoles('o1', 'u1', ['r1'])).rejects.toMatchObject({
      kind: 'api',
      status: 422,
      code: 'organization.require_membership',
    });
    expect(server.requests).toHaveLength(1);
  });

  it('times out a hung request and retries it', async () => {
    let calls = 0;
    const server = await start({ api: (request) => (++calls === 1 ? { status: 200, hang: true } : userById(request)) });
    const client = createLogtoClient(server.config({ timeoutMs: 500 }), fast);
    expect((await client.getUser('u1'))?.id).toBe('u1');
    expect(client.stats().byStatus).toMatchObject({ timeout: 1, '200': 1 });
  });

  it('does not resend a user creation whose outcome is unknown (500 or timeout), but does after 503', async () => {
    const server = await start({ api: () => ({ status: 500 }) });
    const client = createLogtoClient(server.config(), fast);
    await expect(client.createUser({ username: 'alice' })).rejects.toMatchObject({ kind: 'api', status: 500 });
    expect(server.requests).toHaveLength(1);

    server.setApi(() => ({ status: 200, hang: true }));
    const impatient = createLogtoClient(server.config({ timeoutMs: 300 }), fast);
    const timeout = await impatient.createUser({ username: 'alice' }).catch((e: unknown) => e);
    expect(timeout).toMatchObject({ kind: 'timeout' });
    expect((timeout as Error).message).toContain('may have been applied');
    expect(server.requests).toHaveLength(2);

    let calls = 0;
    server.setApi((request) => (++calls === 1 ? { status: 503 } : { status: 200, body: fakeUser('new', request.body as Record<string, unknown>) }));
    const created = await client.createUser({ username: 'alice', customData: { team: 'a' } });
    expect(created).toMatchObject({ id: 'new', username: 'alice', customData: { team: 'a' } });
    expect(server.requests.slice(2).map((r) => [r.method, r.path])).toEqual([
      ['POST', '/users'],
      ['POST', '/users'],
    ]);
  });

  it('treats a 404 on a retried DELETE as done, and a first-attempt 404 as an error', async () => {
    let calls = 0;
    const server = await start({ api: () => (++calls === 1 ? { status: 502 } : { status: 404, body: { code: 'entity.not_found' } }) });
    const client = createLogtoClient(server.config(), fast);
    await expect(client.removeOrganizationMember('o1', 'u1')).resolves.toBeUndefined();
    expect(server.requests.map((r) => [r.method, r.path])).toEqual([
      ['DELETE', '/organizations/o1/users/u1'],
      ['DELETE', '/organizations/o1/users/u1'],
    ]);
    const error = await client.removeOrganizationMemberRole('o1', 'u1', 'r1').catch((e: unknown) => e);
    expect(isNotFound(error)).toBe(true);
  });
});

describe('token', () => {
  it('fetches one token for many calls, including concurrent first calls', async () => {
    const server = await start({ api: userById });
    const client = createLogtoClient(server.config(), fast);
    await Promise.all(Array.from({ length: 10 }, (_, index) => client.getUser(`u${index}`)));
    for (let index = 0; index < 10; index += 1) await client.getUser(`v${index}`);

    expect(server.tokenRequests).toHaveLength(1);
    expect(client.stats().tokenFetches).toBe(1);
    expect(new Set(server.requests.map((r) => r.token))).toEqual(new Set([server.issuedTokens[0]]));
    const form = server.tokenRequests[0]!.form;
    expect(Object.fromEntries(form)).toEqual({ grant_type: 'client_credentials', resource: server.resource, scope: 'all' });
  });

  it('refreshes once on a 401 from the API and retries the request', async () => {
    const server = await start({ api: userById });
    const client = createLogtoClient(server.config(), fast);
    await client.getUser('u1');
    server.revokeAllTokens();
    expect((await client.getUser('u2'))?.id).toBe('u2');

    expect(server.tokenRequests).toHaveLength(2);
    expect(server.requests.map((r) => r.token)).toEqual([server.issuedTokens[0], server.issuedTokens[0], server.issuedTokens[1]]);
  });

  it('refreshes before expiry without waiting for a 401', async () => {
    const server = await start({ api: userById, expiresIn: 1 });
    const client = createLogtoClient(server.config(), fast);
    await client.getUser('u1');
    await new Promise((resolve) => setTimeout(resolve, 600));
    await client.getUser('u2');
    expect(server.tokenRequests).toHaveLength(2);
    expect(server.requests.map((r) => r.token)).toEqual(server.issuedTokens);
  });

  it('gives up after one refresh when the API keeps refusing the token', async () => {
    const server = await start({ api: () => ({ status: 401, body: { code: 'auth.unauthorized', message: 'Unauthorized' } }) });
    const client = createLogtoClient(server.config(), fast);
    const error = await client.getUser('u1').catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'credentials', status: 401 });
    expect((error as Error).message).toContain('LOGTO_MANAGEMENT_API_RESOURCE');
    expect(server.tokenRequests).toHaveLength(2);
    expect(server.requests).toHaveLength(2);
  });

  it('fails fast on a wrong secret, without leaking it or the token anywhere', async () => {
    const server = await start({ api: userById });
    const wrongSecret = 'wrong-SECRET-4f9a8b7c6d';
    const { logger, text } = capturingLogger();
    const client = createLogtoClient(server.config({ clientSecret: wrongSecret }), { ...fast, logger });

    const error = await client.getUser('u1').catch((e: unknown) => e);

    expect(error).toBeInstanceOf(LogtoError);
    expect(error).toMatchObject({ kind: 'credentials', status: 401, code: 'invalid_client' });
    expect((error as Error).message).toContain('Logto rejected the client id or secret (invalid_client)');
    expect(server.tokenRequests).toHaveLength(1);
    expect(server.requests).toHaveLength(0);
    const basic = server.tokenRequests[0]!.authorization!;
    for (const leak of [wrongSecret, basic, basic.slice('Basic '.length)]) {
      expect((error as Error).message).not.toContain(leak);
      expect(JSON.stringify(error)).not.toContain(leak);
      expect(String((error as Error).stack)).not.toContain(leak);
      expect(JSON.stringify(Object.getOwnPropertyDescriptors(error))).not.toContain(leak);
      expect(text()).not.toContain(leak);
    }
  });

  it('never logs the access token or secret while retrying', async () => {
    let calls = 0;
    const server = await start({ api: (request) => (++calls <= 2 ? { status: 503 } : userById(request)) });
    const { logger, text } = capturingLogger();
    const client = createLogtoClient(server.config(), { ...fast, logger });
    await client.getUser('u1');
    expect(text()).toContain('retrying');
    expect(text()).not.toContain(server.issuedTokens[0]!);
    expect(text()).not.toContain(server.clientSecret);
  });

  it('retries a token endpoint that is briefly down', async () => {
    const server = await start({ api: userById, tokenFaults: [{ status: 503 }, { status: 502 }] });
    const client = createLogtoClient(server.config(), fast);
    expect((await client.getUser('u1'))?.id).toBe('u1');
    expect(server.tokenRequests).toHaveLength(3);
    expect(client.stats().tokenFetches).toBe(3);
  });

  it("rejects a token without the 'all' scope, telling the admin which role to assign", async () => {
    const server = await start({ api: userById, scope: 'read:users' });
    const error = await createLogtoClient(server.config(), fast).getUser('u1').catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'scope' });
    expect((error as Error).message).toContain('Logto Management API access');
    expect(server.requests).toHaveLength(0);
  });

  it('maps 403 auth.forbidden from the API to a scope error', async () => {
    const server = await start({ api: () => ({ status: 403, body: { code: 'auth.forbidden', message: 'Forbidden' } }) });
    const error = await createLogtoClient(server.config(), fast).getUser('u1').catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'scope', status: 403, code: 'auth.forbidden' });
    expect((error as Error).message).toContain('Logto Management API access');
  });

  it('names LOGTO_MANAGEMENT_API_RESOURCE on invalid_target', async () => {
    const server = await start({ api: userById });
    const client = createLogtoClient(server.config({ resource: 'https://default.logto.app/api' }), fast);
    const error = await client.getUser('u1').catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'credentials', code: 'invalid_target' });
    expect((error as Error).message).toContain('LOGTO_MANAGEMENT_API_RESOURCE');
    expect(server.tokenRequests).toHaveLength(1);
  });

  it('form-urlencodes the client id and secret in Basic auth', async () => {
    const server = await start({ api: userById, clientId: 'app id+1', clientSecret: 'p@ss:wörd/=' });
    expect((await createLogtoClient(server.config(), fast).getUser('u1'))?.id).toBe('u1');
  });
});

describe('unreachable', () => {
  it('reports an API host with a closed port as unreachable, naming the base URL', async () => {
    const server = await start({ api: userById });
    const port = await closedPort();
    const config: Config['logto'] = { ...server.config(), baseUrl: `http://127.0.0.1:${port}`, maxRetries: 2 };
    const client = createLogtoClient(config, fast);
    const error = await client.getUser('u1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LogtoError);
    expect(error).toMatchObject({ kind: 'unreachable', code: 'ECONNREFUSED' });
    expect((error as Error).message).toContain(`http://127.0.0.1:${port}`);
    expect((error as Error).message).toContain('after 3 attempts');
    expect(client.stats()).toMatchObject({ requests: 3, retries: 2, byStatus: { network: 3 } });
  });

  it('reports a token endpoint with a closed port as unreachable', async () => {
    const port = await closedPort();
    const base = `http://127.0.0.1:${port}`;
    const client = createLogtoClient(
      {
        baseUrl: base,
        tokenUrl: `${base}/oidc/token`,
        resource: `${base}/api`,
        clientId: 'id',
        clientSecret: 'secret-never-shown',
        rateLimit: { requests: 100, intervalMs: 1000 },
        concurrency: 2,
        timeoutMs: 500,
        maxRetries: 1,
        hookId: undefined,
      },
      fast,
    );
    const error = await client.getUser('u1').catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'unreachable', code: 'ECONNREFUSED' });
    expect((error as Error).message).toContain(`${base}/oidc/token`);
    expect(JSON.stringify(error)).not.toContain('secret-never-shown');
    expect(client.stats().tokenFetches).toBe(2);
  });
});

describe('request budget', () => {
  const threadedConfig = (baseUrl: string, rateLimit: { requests: number; intervalMs: number }): Config['logto'] => ({
    baseUrl,
    tokenUrl: `${baseUrl}/oidc/token`,
    resource: `${baseUrl}/api`,
    clientId: 'id',
    clientSecret: 'secret',
    rateLimit,
    concurrency: 20,
    timeoutMs: 5000,
    maxRetries: 3,
    hookId: undefined,
  });

  it('never lets more than the cap through in any window, retries included', async () => {
    // Every 7th request fails once with 500, so retries compete for the same budget.
    const server = await startThreaded({ failEvery: 7 });
    const interval = 400;
    const cap = 5;
    const client = createLogtoClient(threadedConfig(server.baseUrl, { requests: cap, intervalMs: interval }), fast);

    const users = await Promise.all(Array.from({ length: 17 }, (_, index) => client.getUser(`u${index}`)));

    expect(users.every((user: LogtoUser | null) => user !== null)).toBe(true);
    const times = await server.received();
    expect(times.length).toBeGreaterThanOrEqual(19);
    expect(client.stats().retries).toBe(times.length - 17);
    // Windows 100 ms shorter than the interval absorb network jitter (a new connection under load
    // reaches the server tens of ms later than a reused one). A missing limit puts all 17 in one window.
    expect(busiestWindow(times, interval - 100)).toBeLessThanOrEqual(cap);
    // And the budget is used, not starved: the first window is full.
    const first = Math.min(...times);
    expect(times.filter((t) => t < first + interval - 100).length).toBe(cap);
  });

  it('counts a sliding window, so a burst cannot straddle two fixed windows', async () => {
    const server = await startThreaded();
    const interval = 400;
    const cap = 5;
    const client = createLogtoClient(threadedConfig(server.baseUrl, { requests: cap, intervalMs: interval }), fast);
    await client.getUser('early');
    // Half way through the first window: fixed windows (p-queue alone) would let 4 through now and 5
    // more at the window edge 200 ms later, 9 inside 300 ms.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await Promise.all(Array.from({ length: 9 }, (_, index) => client.getUser(`u${index}`)));

    const times = await server.received();
    expect(times).toHaveLength(10);
    expect(busiestWindow(times, interval - 100)).toBeLessThanOrEqual(cap);
  });

  it('keeps at most `concurrency` requests in flight', async () => {
    const server = await start({ api: (request) => ({ ...userById(request), delayMs: 40 }) });
    const client = createLogtoClient(server.config({ concurrency: 3 }), fast);
    await Promise.all(Array.from({ length: 12 }, (_, index) => client.getUser(`u${index}`)));
    expect(server.maxInFlight()).toBe(3);
    expect(server.requests).toHaveLength(12);
  });

  it('holds every caller back while Logto throttles (429 pauses the shared budget)', async () => {
    let throttled = false;
    const server = await start({
      api: (request) => {
        if (request.path === '/users/first' && !throttled) {
          throttled = true;
          return { status: 429, headers: { 'Retry-After': '1' } };
        }
        return userById(request);
      },
    });
    const client = createLogtoClient(server.config(), fast);
    const first = client.getUser('first');
    // Once `first` got its 429, a second caller starts and must wait out the same pause.
    while (!throttled) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await client.getUser('other');
    expect((await first)?.id).toBe('first');
    const throttledAt = server.requests.find((r) => r.path === '/users/first')!.receivedAt;
    const otherAt = server.requests.find((r) => r.path === '/users/other')!.receivedAt;
    expect(otherAt - throttledAt).toBeGreaterThanOrEqual(950);
  });
});
