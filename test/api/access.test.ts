import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, type TestApp } from './harness.js';
import { insertRuns, seedTenant } from './seed.js';

describe('GET /v1/access', () => {
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

  it('answers a member with roles and since; asOf is null (and the header "never") before any full sync', async () => {
    const response = await t.get('/v1/access?userId=alice&organizationId=acme').expect(200);
    expect(response.headers['x-access-state-as-of']).toBe('never');
    expect(response.body).toEqual({
      member: true,
      organizationRoles: [
        { id: 'role-admin', name: 'admin' },
        { id: 'role-member', name: 'member' },
      ],
      since: '2024-03-01T00:00:00.000Z',
      isSuspended: false,
      asOf: null,
    });
  });

  it('answers a non-member, and a member without roles', async () => {
    expect((await t.get('/v1/access?userId=bob&organizationId=globex').expect(200)).body).toMatchObject({
      member: false,
      organizationRoles: [],
      since: null,
      isSuspended: false,
    });
    expect((await t.get('/v1/access?userId=erin&organizationId=globex').expect(200)).body).toMatchObject({
      member: true,
      organizationRoles: [],
      since: '2024-04-02T00:00:00.000Z',
    });
  });

  it('answers member: false for an unknown user or organization (no 404)', async () => {
    expect((await t.get('/v1/access?userId=ghost&organizationId=acme').expect(200)).body).toMatchObject({
      member: false,
      organizationRoles: [],
      since: null,
      isSuspended: false,
    });
    expect((await t.get('/v1/access?userId=alice&organizationId=umbrella').expect(200)).body.member).toBe(false);
  });

  it('keeps member as stored for a suspended user but flags isSuspended', async () => {
    expect((await t.get('/v1/access?userId=carol&organizationId=acme').expect(200)).body).toMatchObject({
      member: true,
      isSuspended: true,
      organizationRoles: [{ id: 'role-admin', name: 'admin' }],
    });
  });

  it('adds hasRole only when role is given, matching id or name', async () => {
    expect((await t.get('/v1/access?userId=alice&organizationId=acme').expect(200)).body).not.toHaveProperty('hasRole');
    expect((await t.get('/v1/access?userId=alice&organizationId=acme&role=admin').expect(200)).body.hasRole).toBe(true);
    expect((await t.get('/v1/access?userId=alice&organizationId=acme&role=role-member').expect(200)).body.hasRole).toBe(true);
    expect((await t.get('/v1/access?userId=alice&organizationId=acme&role=viewer').expect(200)).body.hasRole).toBe(false);
    // The role is checked in this organization only: alice is a viewer in globex, not in acme.
    expect((await t.get('/v1/access?userId=alice&organizationId=globex&role=viewer').expect(200)).body.hasRole).toBe(true);
    expect((await t.get('/v1/access?userId=ghost&organizationId=acme&role=admin').expect(200)).body.hasRole).toBe(false);
  });

  it('reports asOf once a full sync succeeded, equal to the header', async () => {
    await insertRuns(database.db, [{ kind: 'baseline', status: 'succeeded', finishedAt: new Date() }]);
    const response = await t.get('/v1/access?userId=alice&organizationId=acme').expect(200);
    const header = response.headers['x-access-state-as-of'] as string;
    expect(header).not.toBe('never');
    expect(new Date(header).toISOString()).toBe(header);
    expect(response.body.asOf).toBe(header);
  });

  it('requires userId and organizationId and checks their form', async () => {
    const missing = await t.get('/v1/access');
    expectProblem(missing, 400, 'invalid_params');
    expect(invalidParamNames(missing).sort()).toEqual(['organizationId', 'userId']);
    expect((missing.body as { invalid_params: { reason: string }[] }).invalid_params.map((param) => param.reason)).toEqual([
      'is required',
      'is required',
    ]);
    expect(invalidParamNames(await t.get('/v1/access?userId=alice'))).toEqual(['organizationId']);
    expect(invalidParamNames(await t.get('/v1/access?userId=al%20ice&organizationId=acme'))).toEqual(['userId']);
    expect(invalidParamNames(await t.get('/v1/access?userId=alice&organizationId=acme&role='))).toEqual(['role']);
    expect(invalidParamNames(await t.get('/v1/access?userId=alice&userId=bob&organizationId=acme'))).toEqual(['userId']);
  });
});
