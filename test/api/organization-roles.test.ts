import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, type TestApp } from './harness.js';
import { seedTenant } from './seed.js';

describe('organization roles', () => {
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

  it('GET /v1/organization-roles lists the roles ordered by id', async () => {
    const response = await t.get('/v1/organization-roles').expect(200);
    expect(response.body).toEqual({
      data: [
        { id: 'role-admin', name: 'admin', description: 'Administers the organization', type: 'User' },
        { id: 'role-auditor', name: 'auditor', description: 'Nobody has it', type: 'MachineToMachine' },
        { id: 'role-member', name: 'member', description: 'Ordinary member', type: 'User' },
        { id: 'role-viewer', name: 'viewer', description: 'Read only', type: 'User' },
      ],
      nextCursor: null,
    });
  });

  it('searches and pages roles', async () => {
    const search = await t.get('/v1/organization-roles?search=READ').expect(200);
    expect(search.body.data.map((role: { id: string }) => role.id)).toEqual(['role-viewer']);
    const first = await t.get('/v1/organization-roles?limit=3').expect(200);
    expect(first.body.data).toHaveLength(3);
    const second = await t.get(`/v1/organization-roles?limit=3&cursor=${first.body.nextCursor}`).expect(200);
    expect(second.body.data.map((role: { id: string }) => role.id)).toEqual(['role-viewer']);
    expect(second.body.nextCursor).toBeNull();
  });

  it('GET /v1/organization-roles/:id/members lists every member holding the role, with the organization', async () => {
    const response = await t.get('/v1/organization-roles/role-admin/members').expect(200);
    expect(response.body.nextCursor).toBeNull();
    expect(
      response.body.data.map((member: { id: string; organization: unknown; since: string; memberSince: string; isSuspended: boolean }) => ({
        id: member.id,
        organization: member.organization,
        since: member.since,
        memberSince: member.memberSince,
        isSuspended: member.isSuspended,
      })),
    ).toEqual([
      { id: 'alice', organization: { id: 'acme', name: 'Acme Corp' }, since: '2024-03-02T00:00:00.000Z', memberSince: '2024-03-01T00:00:00.000Z', isSuspended: false },
      { id: 'carol', organization: { id: 'acme', name: 'Acme Corp' }, since: '2024-03-07T00:00:00.000Z', memberSince: '2024-03-06T00:00:00.000Z', isSuspended: true },
    ]);
    expect(response.body.data[0]).toMatchObject({ username: 'alice', primaryEmail: 'alice@example.com', name: 'Alice Liddell' });
  });

  it('pages role members across organizations, and tells an unknown role (404) from an unused one (empty)', async () => {
    const first = await t.get('/v1/organization-roles/role-member/members?limit=1').expect(200);
    expect(first.body.data.map((member: { id: string }) => member.id)).toEqual(['alice']);
    const second = await t.get(`/v1/organization-roles/role-member/members?limit=1&cursor=${first.body.nextCursor}`).expect(200);
    expect(second.body.data.map((member: { id: string }) => member.id)).toEqual(['bob']);
    expect(second.body.nextCursor).toBeNull();
    expect((await t.get('/v1/organization-roles/role-auditor/members').expect(200)).body).toEqual({ data: [], nextCursor: null });
    expectProblem(await t.get('/v1/organization-roles/role-ghost/members'), 404, 'not_found');
    // A cursor of another list (one key instead of two) is not a cursor of this one.
    const foreign = await t.get(`/v1/organization-roles/role-member/members?cursor=${Buffer.from('["acme"]').toString('base64url')}`);
    expectProblem(foreign, 400, 'invalid_params');
    expect(invalidParamNames(foreign)).toEqual(['cursor']);
  });
});
