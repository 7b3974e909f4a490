import { sql } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiRoutes, beginDraining, createApp } from '../../src/api/app.js';
import { openPglite, openPostgres, rows, runMigrations, type Database, type DatabaseHandle } from '../../src/db/client.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { capturingLogger, createTestApp, expectProblem, stubActions, testConfig, type TestApp } from './harness.js';
import { insertDeliveries, insertRuns, seedTenant } from './seed.js';

/** A Database whose every call goes to the handle currently plugged in, so a test can pull it and plug another. */
const switchableDatabase = (initial: Database) => {
  let current = initial;
  const db = new Proxy({} as Database, {
    get: (_target, property) => {
      const value = Reflect.get(current as object, property, current) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(current) : value;
    },
  });
  return { db, plug: (next: Database) => (current = next) };
};

describe('operational routes and cross-cutting behaviour', () => {
  let database: TestDatabase;
  let t: TestApp;
  beforeAll(async () => {
    database = await createTestDatabase();
    await seedTenant(database.db);
    t = await createTestApp(database.db, { app: { freshnessTtlMs: 0 } });
  });
  afterAll(async () => {
    await database.drop();
  });

  it('GET /healthz answers 200 without a key', async () => {
    expect((await request(t.app).get('/healthz').expect(200)).body).toEqual({ status: 'ok' });
  });

  describe('GET /readyz', () => {
    const secondHandle = async (): Promise<DatabaseHandle> => {
      if (database.url) return openPostgres(database.url, { max: 2 });
      const handle = await openPglite(undefined);
      await runMigrations(handle);
      return handle;
    };

    it('answers 200 when the database answers and is migrated, 503 when it goes away, and 200 again when it is back', async () => {
      let handle = await secondHandle();
      const switchable = switchableDatabase(handle.db);
      const app = createApp({ db: switchable.db, config: testConfig(), logger: capturingLogger().logger, actions: stubActions().actions });
      expect((await request(app).get('/readyz').expect(200)).body).toEqual({ status: 'ready', database: 'connected', synced: false });

      await handle.close();
      const down = expectProblem(await request(app).get('/readyz'), 503, 'database_unreachable');
      expect(down.detail).toBe('The database does not answer');

      handle = await secondHandle();
      switchable.plug(handle.db);
      await request(app).get('/readyz').expect(200);
      await handle.close();
    });

    it('answers 503 when migrations are not applied', async () => {
      const journal = await rows<Record<string, unknown>>(database.db, sql`select * from drizzle.__drizzle_migrations order by id`);
      expect(journal.length).toBeGreaterThan(0);
      await database.db.execute(sql`delete from drizzle.__drizzle_migrations where id = (select max(id) from drizzle.__drizzle_migrations)`);
      try {
        expectProblem(await request(t.app).get('/readyz'), 503, 'migrations_pending');
        await request(t.app).get('/healthz').expect(200);
      } finally {
        const last = journal.at(-1)!;
        await database.db.execute(
          sql`insert into drizzle.__drizzle_migrations (id, hash, created_at) values (${last.id}, ${last.hash}, ${last.created_at})`,
        );
      }
      await request(t.app).get('/readyz').expect(200);
    });

    it('answers 503 once the app drains for shutdown, and asks clients to close connections', async () => {
      const draining = await createTestApp(database.db);
      await request(draining.app).get('/readyz').expect(200);
      beginDraining(draining.app);
      expectProblem(await request(draining.app).get('/readyz'), 503, 'shutting_down');
      const response = await draining.get('/v1/users').expect(200);
      expect(response.headers.connection).toBe('close');
    });
  });

  it('GET /metrics serves the prom-client registry, with latency by route template', async () => {
    await t.get('/v1/users/alice').expect(200);
    await t.get('/v1/users/bob').expect(200);
    const response = await request(t.app).get('/metrics').expect(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    expect(response.text).toMatch(/http_request_duration_seconds_count\{method="GET",route="\/v1\/users\/:id",status="200"\} \d+/);
    expect(response.text).not.toContain('route="/v1/users/alice"');
    expect(response.text).toContain('process_cpu_user_seconds_total');
  });

  it('takes a sane X-Request-Id, or makes one, and echoes it', async () => {
    const given = await request(t.app).get('/healthz').set('X-Request-Id', 'trace-123.abc').expect(200);
    expect(given.headers['x-request-id']).toBe('trace-123.abc');
    const made = await request(t.app).get('/healthz').expect(200);
    expect(made.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const replaced = await request(t.app).get('/healthz').set('X-Request-Id', 'bad id\twith spaces').expect(200);
    expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const problem = expectProblem(await t.get('/v1/users/ghost').set('X-Request-Id', 'req-404'), 404, 'not_found');
    expect(problem.requestId).toBe('req-404');
  });

  it('logs one structured line per request with request id, method, route, status and duration', async () => {
    const { log } = t;
    log.lines.length = 0;
    await t.get('/v1/organizations/acme').set('X-Request-Id', 'log-line-test').expect(200);
    await request(t.app).get('/no/such/route').set('X-Request-Id', 'log-line-404').expect(404);
    const requests = log.entries().filter((entry) => entry.msg === 'request');
    expect(requests).toHaveLength(2);
    expect(requests[0]).toMatchObject({
      requestId: 'log-line-test',
      method: 'GET',
      route: '/v1/organizations/:id',
      path: '/v1/organizations/acme',
      status: 200,
      apiKey: t.keys.read.name,
    });
    expect(typeof requests[0]!.durationMs).toBe('number');
    expect(requests[1]).toMatchObject({ requestId: 'log-line-404', route: 'unmatched', status: 404 });
  });

  it('answers unknown routes with a 404 problem', async () => {
    const problem = expectProblem(await request(t.app).get('/nope'), 404, 'route_not_found');
    expect(problem).toMatchObject({ title: 'Not Found', status: 404, instance: '/nope', type: 'urn:logto-access-sync:problem:route_not_found' });
  });

  it('hides the cause of an unexpected read failure behind a generic 500, logged with the request id', async () => {
    const handle = database.url ? openPostgres(database.url, { max: 1 }) : null;
    if (!handle) {
      // PGlite has one connection per database: break a read instead by handing the app a closed one.
      const closed = await openPglite(undefined);
      await closed.close();
      const log = capturingLogger();
      const app = createApp({ db: closed.db, config: testConfig(`robot:read:${'k'.repeat(20)}`), logger: log.logger, actions: stubActions().actions });
      const problem = expectProblem(await request(app).get('/v1/users').set('Authorization', `Bearer ${'k'.repeat(20)}`), 500, 'internal_error');
      expect(log.entries().some((entry) => entry.msg === 'unhandled error' && entry.requestId === problem.requestId)).toBe(true);
      return;
    }
    const log = capturingLogger();
    const app = createApp({ db: handle.db, config: testConfig(`robot:read:${'k'.repeat(20)}`), logger: log.logger, actions: stubActions().actions });
    await handle.close();
    const response = await request(app).get('/v1/users').set('Authorization', `Bearer ${'k'.repeat(20)}`);
    const problem = expectProblem(response, 500, 'internal_error');
    expect(problem.detail).not.toMatch(/pool|postgres|select/i);
    const logged = log.entries().find((entry) => entry.msg === 'unhandled error');
    expect(logged).toMatchObject({ requestId: problem.requestId });
    expect((logged!.err as { stack?: string }).stack).toBeTruthy();
  });

  it('puts X-Access-State-As-Of on every read route: never, then the oldest pending delivery, then now', async () => {
    const samples: Record<string, string> = {
      '/v1/access': '/v1/access?userId=alice&organizationId=acme',
      '/v1/users/:id': '/v1/users/alice',
      '/v1/users/:id/organizations': '/v1/users/alice/organizations',
      '/v1/users/:id/history': '/v1/users/alice/history',
      '/v1/organizations/:id': '/v1/organizations/acme',
      '/v1/organizations/:id/members': '/v1/organizations/acme/members',
      '/v1/organization-roles/:id/members': '/v1/organization-roles/role-admin/members',
    };
    const [run] = await insertRuns(database.db, [{ kind: 'sweep', status: 'succeeded' }]);
    samples['/v1/sync/runs/:id'] = `/v1/sync/runs/${run!.id}`;
    // The live stream never ends (test/api/change-stream.test.ts); a subscription's own routes need one to exist.
    const reads = apiRoutes().filter(
      (route) => route.method === 'get' && route.path !== '/v1/changes/stream' && !route.path.startsWith('/v1/event-subscriptions/:id'),
    );
    expect(reads.length).toBeGreaterThanOrEqual(14);
    const headersOfAllReads = async () => {
      const headers: string[] = [];
      for (const route of reads) {
        const response = await t.get(samples[route.path] ?? route.path).expect(200);
        headers.push(response.headers['x-access-state-as-of'] as string);
      }
      return headers;
    };
    // A sweep alone is not a full sync.
    expect(new Set(await headersOfAllReads())).toEqual(new Set(['never']));
    await insertRuns(database.db, [{ kind: 'reconcile', status: 'failed' }]);
    expect(new Set(await headersOfAllReads())).toEqual(new Set(['never']));

    await insertRuns(database.db, [{ kind: 'reconcile', status: 'succeeded' }]);
    const before = Date.now();
    for (const header of await headersOfAllReads()) {
      expect(Date.parse(header)).toBeGreaterThanOrEqual(before - 1000);
    }
    await insertDeliveries(database.db, [
      { event: 'User.Created', status: 'pending', receivedAt: new Date('2024-09-01T10:00:00Z') },
      { event: 'User.Created', status: 'dead', receivedAt: new Date('2024-08-01T10:00:00Z') },
    ]);
    expect(new Set(await headersOfAllReads())).toEqual(new Set(['2024-09-01T10:00:00.000Z']));
  });
});
