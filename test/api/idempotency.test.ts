import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { idempotencyKeys } from '../../db/schema.js';
import { createApp } from '../../src/api/app.js';
import { buildOpenApiDocument } from '../../src/api/openapi.js';
import { apiRoutes } from '../../src/api/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createApiKey } from '../../src/db/api-keys.js';
import type { DatabaseHandle } from '../../src/db/client.js';
import { AppError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { createProvisioning } from '../../src/sync/provisioning.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor, tenantEnvironment } from '../helpers/tenant.js';
import { createTestApp, expectProblem, type TestApp } from './harness.js';

const until = async (check: () => Promise<boolean>, what: string) => {
  for (let attempt = 0; attempt < 400; attempt += 1) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`gave up waiting for ${what}`);
};

describe('Idempotency-Key', () => {
  let database: TestDatabase;
  let t: TestApp;
  beforeAll(async () => {
    database = await createTestDatabase();
    t = await createTestApp(database.db);
  });
  beforeEach(() => {
    t.calls.length = 0;
    t.state.fail = null;
  });
  afterAll(async () => {
    await database.drop();
  });

  it('answers a retry of the same request with the stored answer, without running it again', async () => {
    const body = { username: 'once', name: 'Only Once' };
    const first = await t.post('/v1/users').set('Idempotency-Key', 'create-once').send(body).expect(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    // The same JSON with its keys in another order is the same request.
    const second = await t.post('/v1/users').set('Idempotency-Key', 'create-once').send({ name: 'Only Once', username: 'once' }).expect(201);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(second.headers['content-type']).toBe(first.headers['content-type']);
    expect(second.body).toEqual(first.body);
    expect(t.calls.map((call) => call.name)).toEqual(['createUser']);
    // Kept for 24 hours by default, with the request's hash, in PostgreSQL.
    const [stored] = await database.db
      .select({
        requestHash: idempotencyKeys.requestHash,
        status: idempotencyKeys.responseStatus,
        keptFor: sql<number>`extract(epoch from ${idempotencyKeys.expiresAt} - ${idempotencyKeys.createdAt})::float8`,
      })
      .from(idempotencyKeys)
      .where(sql`${idempotencyKeys.key} = 'create-once'`);
    expect(stored).toMatchObject({ requestHash: expect.stringMatching(/^[0-9a-f]{64}$/), status: 201 });
    expect(Math.round(stored!.keptFor)).toBe(24 * 3600);
  });

  it('refuses the key with another request (body, path or method) with 422, running nothing', async () => {
    await t.post('/v1/organizations/acme/members').set('Idempotency-Key', 'k-mismatch').send({ userIds: ['alice'] }).expect(201);
    expectProblem(await t.post('/v1/organizations/acme/members').set('Idempotency-Key', 'k-mismatch').send({ userIds: ['bob'] }), 422, 'idempotency_key_reused');
    expectProblem(await t.post('/v1/organizations/other/members').set('Idempotency-Key', 'k-mismatch').send({ userIds: ['alice'] }), 422, 'idempotency_key_reused');
    expectProblem(await t.delete('/v1/organizations/acme/members/alice').set('Idempotency-Key', 'k-mismatch'), 422, 'idempotency_key_reused');
    expect(t.calls).toHaveLength(1);
  });

  it('keeps keys apart per API key: another client with the same key runs its own request', async () => {
    const other = await createApiKey(database.db, { name: `other-writer-${process.pid}`, scope: 'write' });
    const mine = await t.post('/v1/users').set('Idempotency-Key', 'shared-key').send({ username: 'mine' }).expect(201);
    const theirs = await t.post('/v1/users', other.secret).set('Idempotency-Key', 'shared-key').send({ username: 'theirs' }).expect(201);
    expect(theirs.headers['idempotent-replayed']).toBeUndefined();
    expect(mine.body.username).toBe('mine');
    expect(theirs.body.username).toBe('theirs');
    expect(t.calls).toHaveLength(2);
  });

  it('stores 4xx answers, but frees the key after a 5xx so that a retry really retries', async () => {
    t.state.fail = new AppError(404, 'user_not_found', 'No such user in Logto: ghost');
    expectProblem(await t.post('/v1/users/ghost/suspend').set('Idempotency-Key', 'k-404'), 404, 'user_not_found');
    t.state.fail = null;
    const replayed = await t.post('/v1/users/ghost/suspend').set('Idempotency-Key', 'k-404');
    expect(replayed.status).toBe(404);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(t.calls).toHaveLength(1);

    t.state.fail = new AppError(502, 'logto_unavailable', 'Logto could not make the change now', {}, { 'Retry-After': '5' });
    const down = await t.delete('/v1/organizations/acme/members/bob').set('Idempotency-Key', 'k-502');
    expectProblem(down, 502, 'logto_unavailable');
    expect(down.headers['retry-after']).toBe('5');
    t.state.fail = null;
    await t.delete('/v1/organizations/acme/members/bob').set('Idempotency-Key', 'k-502').expect(204);
    expect(t.calls).toHaveLength(3);
  });

  it('rejects a malformed key with 400 and leaves reads alone', async () => {
    expectProblem(await t.post('/v1/users').set('Idempotency-Key', 'x'.repeat(256)).send({ username: 'long' }), 400, 'invalid_idempotency_key');
    await t.get('/v1/users').set('Idempotency-Key', 'read-key').expect(200);
    await t.get('/v1/users').set('Idempotency-Key', 'read-key').expect(200);
    expect(await database.db.$count(idempotencyKeys, sql`${idempotencyKeys.key} = 'read-key'`)).toBe(0);
    expect(t.calls).toEqual([]);
  });

  it('forgets answers after their time to live and deletes expired keys', async () => {
    const shortLived = await createTestApp(database.db, { app: { idempotency: { ttlMs: 1, purgeIntervalMs: 0 } } });
    await shortLived.post('/v1/users').set('Idempotency-Key', 'brief').send({ username: 'brief' }).expect(201);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const again = await shortLived.post('/v1/users').set('Idempotency-Key', 'brief').send({ username: 'brief' }).expect(201);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(shortLived.calls).toHaveLength(2);
    await shortLived.post('/v1/users').set('Idempotency-Key', 'another').send({ username: 'another' }).expect(201);
    await until(async () => (await database.db.$count(idempotencyKeys, sql`${idempotencyKeys.key} = 'brief'`)) === 0, 'the purge');
  });

  it('applies to every write route under /v1, as the OpenAPI document says', () => {
    const document = buildOpenApiDocument(apiRoutes()) as { paths: Record<string, Record<string, { parameters: { name: string }[] }>> };
    const writes = Object.entries(document.paths)
      .filter(([path]) => path.startsWith('/v1/'))
      .flatMap(([path, operations]) => Object.entries(operations).filter(([method]) => method !== 'get').map(([method, operation]) => ({ path, method, operation })));
    expect(writes.length).toBeGreaterThan(8);
    for (const { path, method, operation } of writes) {
      expect({ path, method, header: operation.parameters.some((parameter) => parameter.name === 'Idempotency-Key') }).toEqual({ path, method, header: true });
    }
  });
});

/**
 * Two replicas on one database: this test process and a child process, each with its own pool. While one
 * runs a request, the other answers 409 for its key; afterwards it answers the stored result; a replica
 * that dies mid-request frees the key once its lease runs out.
 */
describe('Idempotency-Key across two processes', () => {
  const secret = 'idem-writer-secret-0123456789';
  const auth = { authorization: `Bearer ${secret}` };
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let config: Config;
  let parent: ReturnType<typeof createApp>;
  let child: ChildProcess | undefined;
  let childUrl = '';
  let childDatabase: DatabaseHandle | undefined;

  const startChild = async () => {
    const script = fileURLToPath(new URL('../helpers/provisioning-process.ts', import.meta.url));
    const spawned = spawn(process.execPath, ['--import', 'tsx', script], {
      env: {
        ...process.env,
        DATABASE_URL: database.url,
        ...tenantEnvironment(sim),
        API_KEYS: `idem:write:${secret}`,
        IDEMPOTENCY_LEASE_MS: '600',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child = spawned;
    const port = await new Promise<number>((resolve, reject) => {
      let output = '';
      spawned.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString('utf8');
        const match = /listening (\d+)/.exec(output);
        if (match) resolve(Number(match[1]));
      });
      spawned.once('exit', (code) => reject(new Error(`the second process exited (${code}) before listening`)));
    });
    childUrl = `http://127.0.0.1:${port}`;
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 11, generate: { users: 20, organizations: 2, organizationRoles: 2 } });
    config = loadConfig({
      ...tenantEnvironment(sim),
      API_KEYS: `idem:write:${secret}`,
    });
    const logto = clientFor(sim);
    await runFullSync(syncDepsFor(database, logto), { kind: 'baseline', trigger: 'test' });
    const actions = {
      startReconcile: async () => ({ runId: 0 }),
      retryDeadLetter: async () => false,
      nextReconcileAt: () => null,
      provision: createProvisioning(syncDepsFor(database, logto)),
    };
    parent = createApp({ db: database.db, config, logger: silentLogger, actions }, { idempotency: { leaseMs: 600 } });
    if (database.url) await startChild();
    else {
      // Embedded PGlite (no PostgreSQL in this run): a second app instance stands in for the second process.
      childDatabase = database;
      const second = createApp({ db: database.db, config, logger: silentLogger, actions }, { idempotency: { leaseMs: 600 } });
      const server = second.listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      const address = server.address();
      childUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    }
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    sim.faults.releaseHung();
    await sim.close();
    await database.drop();
  });

  const membershipPath = () => {
    const organizationId = sim.state.listOrganizations()[0]!.id;
    const userId = sim.state.listUsers().find((user) => !sim.state.isMember(organizationId, user.id))!.id;
    return { organizationId, userId, path: `/v1/organizations/${organizationId}/members/${userId}` };
  };
  const addMemberCalls = () => sim.faults.stats().byRoute['POST /api/organizations/:id/users']?.total ?? 0;

  it('runs a request once: the other replica answers 409 while it runs and the stored answer after', async () => {
    const { organizationId, userId, path } = membershipPath();
    const before = addMemberCalls();
    const hold = sim.faults.holdNext({ paths: new RegExp(`^/api/organizations/${organizationId}/users$`) });
    const first = request(childUrl).put(path).set(auth).set('Idempotency-Key', 'two-processes').then((response) => response);
    await hold.held;

    const meanwhile = await request(parent).put(path).set(auth).set('Idempotency-Key', 'two-processes');
    expectProblem(meanwhile, 409, 'idempotency_key_in_use');
    expect(meanwhile.headers['retry-after']).toBe('1');
    expect(sim.state.isMember(organizationId, userId)).toBe(false);

    hold.release();
    const answered = await first;
    expect(answered.status).toBe(201);
    const replayed = await request(parent).put(path).set(auth).set('Idempotency-Key', 'two-processes');
    expect(replayed.status).toBe(201);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.body).toEqual(answered.body);
    expect(addMemberCalls() - before).toBe(1);
    expectProblem(
      await request(parent).delete(path).set(auth).set('Idempotency-Key', 'two-processes'),
      422,
      'idempotency_key_reused',
    );
  });

  it('frees the key of a replica that died mid-request once its lease has run out', async () => {
    if (!child) {
      // Without a second process there is nothing to kill: the lease protocol is covered by the test above.
      expect(childDatabase).toBeDefined();
      return;
    }
    const { organizationId, userId, path } = membershipPath();
    const hold = sim.faults.holdNext({ paths: new RegExp(`^/api/organizations/${organizationId}/users$`) });
    const doomed = request(childUrl).put(path).set(auth).set('Idempotency-Key', 'crashed').then(
      () => 'answered',
      () => 'lost',
    );
    await hold.held;
    child.kill('SIGKILL');
    expect(await doomed).toBe('lost');
    // Whether Logto still applies the held request (the caller is gone) is Logto's business.
    hold.release();

    let status = 409;
    await until(async () => {
      const retry = await request(parent).put(path).set(auth).set('Idempotency-Key', 'crashed');
      status = retry.status;
      return status !== 409;
    }, 'the lease of the dead replica to run out');
    // The retry ran anew (not 409, not a replay): the user is a member now, added by it or by the dead request.
    expect([200, 201]).toContain(status);
    expect(sim.state.isMember(organizationId, userId)).toBe(true);
    child = undefined;
  });
});
