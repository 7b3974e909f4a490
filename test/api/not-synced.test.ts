import { eq } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncRuns } from '../../db/schema.js';
import { apiRoutes } from '../../src/api/app.js';
import { needsFirstSync } from '../../src/api/not-synced.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, type TestApp } from './harness.js';
import { insertMemberships, insertOrganizations, insertRuns, insertUsers } from './seed.js';

/** Until the first full sync succeeded, "not a member" may only mean "not loaded yet": reads say so instead of answering. */
describe('reads before the first full sync', () => {
  let database: TestDatabase;
  let strict: TestApp;
  let partial: TestApp;
  const access = '/v1/access?userId=alice&organizationId=acme';

  beforeAll(async () => {
    database = await createTestDatabase();
    // The baseline has loaded some of the tenant so far: alice, and acme, but not yet her membership.
    await insertUsers(database.db, [{ id: 'alice' }]);
    await insertOrganizations(database.db, [{ id: 'acme', name: 'Acme' }]);
    strict = await createTestApp(database.db, { app: { freshnessTtlMs: 0 }, env: { SERVE_BEFORE_FIRST_SYNC: 'false' } });
    partial = await createTestApp(database.db, { app: { freshnessTtlMs: 0 }, env: { SERVE_BEFORE_FIRST_SYNC: 'true' } });
  });
  afterAll(async () => {
    await database.drop();
  });

  it('answers 503 not_synced with Retry-After on every access-state read', async () => {
    const [baseline] = await insertRuns(database.db, [{ kind: 'baseline', trigger: 'start', status: 'running' }]);
    for (const path of [access, '/v1/users', '/v1/users/alice', '/v1/users/alice/organizations', '/v1/organizations/acme/members', '/v1/organization-roles', '/v1/changes']) {
      const response = await strict.get(path);
      const problem = expectProblem(response, 503, 'not_synced');
      expect(response.headers['retry-after'], path).toBe('10');
      expect(problem.retryAfterSeconds).toBe(10);
    }
    await database.db.update(syncRuns).set({ status: 'failed', finishedAt: new Date() }).where(eq(syncRuns.id, baseline!.id));
    expectProblem(await strict.get(access), 503, 'not_synced');
  });

  it('still answers the sync routes, dead letters, provisioning and readiness, which reports synced: false', async () => {
    for (const path of ['/v1/sync/status', '/v1/sync/runs', '/v1/webhooks/dead-letters']) {
      expect((await strict.get(path)).status, path).toBe(200);
    }
    const [run] = (await strict.get('/v1/sync/runs')).body.data as { id: number }[];
    expect((await strict.get(`/v1/sync/runs/${run!.id}`)).status).toBe(200);
    expect((await strict.get('/v1/sync/status')).body.accessStateAsOf).toBeNull();
    expect((await request(strict.app).get('/readyz').expect(200)).body).toEqual({ status: 'ready', database: 'connected', synced: false });
    expect((await strict.post('/v1/organizations/acme/members').send({ userIds: ['alice'] })).status).toBe(201);
  });

  it('serves partial answers before the first sync with SERVE_BEFORE_FIRST_SYNC=true', async () => {
    const response = await partial.get(access).expect(200);
    expect(response.body).toMatchObject({ member: false, asOf: null });
    expect(response.headers['x-access-state-as-of']).toBe('never');
  });

  it('answers once a full sync has succeeded, and keeps answering', async () => {
    await insertRuns(database.db, [{ kind: 'baseline', trigger: 'start', status: 'succeeded', finishedAt: new Date() }]);
    await insertMemberships(database.db, [{ organizationId: 'acme', userId: 'alice', since: new Date() }]);
    const response = await strict.get(access).expect(200);
    expect(response.body).toMatchObject({ member: true });
    expect(response.headers['x-access-state-as-of']).not.toBe('never');
    expect((await request(strict.app).get('/readyz').expect(200)).body.synced).toBe(true);
    // A synced database never becomes unsynced: the fact is kept in memory, whatever later runs do.
    await database.db.update(syncRuns).set({ status: 'failed' });
    expect((await strict.get('/v1/users')).status).toBe(200);
  });

  it('declares the 503 in the OpenAPI document of exactly the gated routes', async () => {
    const document = (await request(strict.app).get('/openapi.json').expect(200)).body as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    const gated = apiRoutes().filter(needsFirstSync);
    expect(gated.map((route) => route.path)).toEqual(expect.arrayContaining(['/v1/access', '/v1/users', '/v1/organizations/:id/members']));
    expect(gated.map((route) => route.path)).not.toEqual(expect.arrayContaining(['/v1/sync/status']));
    for (const route of apiRoutes()) {
      const path = route.path.replace(/:(\w+)/g, '{$1}');
      const responses = document.paths[path]?.[route.method]?.responses ?? {};
      expect('503' in responses, `${route.method} ${route.path}`).toBe(needsFirstSync(route) || route.errors?.includes(503) === true);
    }
  });
});
