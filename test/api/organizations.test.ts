import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, type TestApp } from './harness.js';
import { seedTenant } from './seed.js';

describe('organizations', () => {
  let database: TestDatabase;
  let t: TestApp;
  beforeAll(async () => {
    database = await createTestDatabase();
    await seedTenant(database.db);
    t = await createTestApp(database.db);
  });
  afterAll(async () => {
    await database.drop();
  });

  const ids = (body: { data: { id: string }[] }) => body.data.map((item) => item.id);

  it('GET /v1/organizations lists organizations ordered by id', async () => {
    const response = await t.get('/v1/organizations').expect(200);
    expect(ids(response.body)).toEqual(['acme', 'globex', 'initech']);
    expect(response.body.data[0]).toEqual({
      id: 'acme',
      name: 'Acme Corp',
      description: 'Anvils and rockets',
      customData: { tier: 'gold' },
      isMfaRequired: true,
      createdAt: '2024-01-01T00:00:00.000Z',
    });
    expect(response.body.nextCursor).toBeNull();
  });

  it('GET /v1/organizations searches name and description case-insensitively, and pages', async () => {
    expect(ids((await t.get('/v1/organizations?search=GLOB').expect(200)).body)).toEqual(['globex']);
    expect(ids((await t.get('/v1/organizations?search=rocket').expect(200)).body)).toEqual(['acme']);
    expect(ids((await t.get('/v1/organizations?search=zzz').expect(200)).body)).toEqual([]);
    const first = await t.get('/v1/organizations?limit=2').expect(200);
    expect(ids(first.body)).toEqual(['acme', 'globex']);
    const second = await t.get(`/v1/organizations?limit=2&cursor=${first.body.nextCursor}`).expect(200);
    expect(ids(second.body)).toEqual(['initech']);
    expect(second.body.nextCursor).toBeNull();
  });

  it('GET /v1/organizations/:id returns the organization with its member count', async () => {
    expect((await t.get('/v1/organizations/acme').expect(200)).body).toEqual({
      id: 'acme',
      name: 'Acme Corp',
      description: 'Anvils and rockets',
      customData: { tier: 'gold' },
      isMfaRequired: true,
      createdAt: '2024-01-01T00:00:00.000Z',
      memberCount: 3,
    });
    expect((await t.get('/v1/organizations/initech').expect(200)).body.memberCount).toBe(0);
    expectProblem(await t.get('/v1/organizations/umbrella'), 404, 'not_found');
    expect(invalidParamNames(await t.get('/v1/organizations/a.b'))).toEqual(['id']);
  });

  it('GET /v1/organizations/:id/members lists members with their roles there and since', async () => {
    const response = await t.get('/v1/organizations/acme/members').expect(200);
    expect(ids(response.body)).toEqual(['alice', 'bob', 'carol']);
    const [alice, , carol] = response.body.data;
    expect(alice).toMatchObject({
      id: 'alice',
      username: 'alice',
      primaryEmail: 'alice@example.com',
      since: '2024-03-01T00:00:00.000Z',
      organizationRoles: [
        { id: 'role-admin', name: 'admin', since: '2024-03-02T00:00:00.000Z' },
        { id: 'role-member', name: 'member', since: '2024-03-01T00:00:00.000Z' },
      ],
    });
    expect(carol).toMatchObject({ id: 'carol', isSuspended: true, organizationRoles: [{ id: 'role-admin', name: 'admin' }] });
    // The same user has other roles elsewhere: only this organization's count.
    const globex = await t.get('/v1/organizations/globex/members').expect(200);
    expect(globex.body.data.map((member: { id: string; organizationRoles: { id: string }[] }) => [member.id, member.organizationRoles.map((role) => role.id)])).toEqual([
      ['alice', ['role-viewer']],
      ['erin', []],
    ]);
  });

  it('filters members by roleId or roleName', async () => {
    expect(ids((await t.get('/v1/organizations/acme/members?roleId=role-admin').expect(200)).body)).toEqual(['alice', 'carol']);
    expect(ids((await t.get('/v1/organizations/acme/members?roleName=member').expect(200)).body)).toEqual(['alice', 'bob']);
    expect(ids((await t.get('/v1/organizations/acme/members?roleName=viewer').expect(200)).body)).toEqual([]);
    const both = await t.get('/v1/organizations/acme/members?roleId=role-admin&roleName=admin');
    expectProblem(both, 400, 'invalid_params');
    expect(invalidParamNames(both)).toEqual(['roleName']);
  });

  it('pages members, and answers 404 for an unknown organization but an empty page for an empty one', async () => {
    const first = await t.get('/v1/organizations/acme/members?limit=2').expect(200);
    expect(ids(first.body)).toEqual(['alice', 'bob']);
    const second = await t.get(`/v1/organizations/acme/members?limit=2&cursor=${first.body.nextCursor}`).expect(200);
    expect(ids(second.body)).toEqual(['carol']);
    expect(second.body.nextCursor).toBeNull();
    expect((await t.get('/v1/organizations/initech/members').expect(200)).body).toEqual({ data: [], nextCursor: null });
    expectProblem(await t.get('/v1/organizations/umbrella/members'), 404, 'not_found');
    for (const query of ['limit=0', 'limit=501', 'limit=abc', 'cursor=%%%', 'roleId=no%20way']) {
      const response = await t.get(`/v1/organizations/acme/members?${query}`);
      expectProblem(response, 400, 'invalid_params');
      expect(invalidParamNames(response)).toEqual([query.split('=')[0]]);
    }
  });
});
