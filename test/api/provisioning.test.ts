import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, type TestApp } from './harness.js';

describe('provisioning', () => {
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

  const actor = () => ({ actor: t.keys.write.name });

  it('POST /v1/users creates a user with the key name as actor: 201 with the user', async () => {
    const input = { username: 'newbie', primaryEmail: 'newbie@example.com', name: 'New Bie', password: 'correct horse battery' };
    const response = await t.post('/v1/users').send(input).expect(201);
    expect(t.calls).toEqual([{ name: 'createUser', args: [input, actor()] }]);
    expect(response.body).toEqual({
      id: 'newuser0001',
      username: 'newbie',
      primaryEmail: 'newbie@example.com',
      primaryPhone: null,
      name: 'New Bie',
      avatar: null,
      isSuspended: false,
      customData: {},
      profile: {},
      applicationId: null,
      lastSignInAt: null,
      createdAt: '2024-07-01T12:00:00.000Z',
      updatedAt: '2024-07-01T12:30:00.000Z',
    });
    expect(JSON.stringify(response.body)).not.toContain('correct horse');
  });

  it('POST /v1/users validates the body and names each bad field', async () => {
    const response = await t.post('/v1/users').send({ username: '1abc', primaryEmail: 'not-an-email', isAdmin: true });
    expectProblem(response, 400, 'invalid_params');
    expect(invalidParamNames(response).sort()).toEqual(['isAdmin', 'primaryEmail', 'username']);
    expect(t.calls).toEqual([]);
    expectProblem(await t.post('/v1/users').set('Content-Type', 'application/json').send('{"username":'), 400, 'invalid_json');
    expectProblem(await t.post('/v1/users').set('Content-Type', 'text/plain').send('username=x'), 415, 'unsupported_media_type');
    expect(invalidParamNames(await t.post('/v1/users').send([1]))).toEqual(['body']);
    // PostgreSQL text cannot hold NUL: Logto could not store such a name, nor could the mirror.
    const nul = await t.post('/v1/users').send({ name: 'a\u0000b' });
    expectProblem(nul, 400, 'invalid_params');
    expect(nul.body.invalid_params).toEqual([expect.objectContaining({ name: 'name', reason: 'must not contain NUL characters' })]);
    expect(t.calls).toEqual([]);
  });

  it('POST /v1/users/:id/suspend and /unsuspend: 200 with the user', async () => {
    const suspended = await t.post('/v1/users/alice/suspend').expect(200);
    expect(suspended.body).toMatchObject({ id: 'alice', isSuspended: true });
    const unsuspended = await t.post('/v1/users/alice/unsuspend').expect(200);
    expect(unsuspended.body).toMatchObject({ id: 'alice', isSuspended: false });
    expect(t.calls).toEqual([
      { name: 'setUserSuspended', args: ['alice', true, actor()] },
      { name: 'setUserSuspended', args: ['alice', false, actor()] },
    ]);
    expect(invalidParamNames(await t.post('/v1/users/al%24ice/suspend'))).toEqual(['id']);
    // Path and body problems are reported together.
    const both = await t.post('/v1/organizations/bad%20org/members/x%20y/roles').send({ organizationRoleIds: [] });
    expect(invalidParamNames(both)).toEqual(['id', 'userId', 'organizationRoleIds']);
  });

  it('POST /v1/organizations/:id/members adds 1..100 users: 201', async () => {
    const response = await t.post('/v1/organizations/acme/members').send({ userIds: ['alice', 'bob', 'alice'] }).expect(201);
    expect(response.body).toEqual({ organizationId: 'acme', userIds: ['alice', 'bob'], organizationRoleIds: [] });
    expect(t.calls).toEqual([{ name: 'addMembers', args: ['acme', ['alice', 'bob'], [], actor()] }]);
    for (const body of [{ userIds: [] }, { userIds: Array.from({ length: 101 }, (_, index) => `u${index}`) }, {}, { userIds: 'alice' }]) {
      const rejected = await t.post('/v1/organizations/acme/members').send(body);
      expectProblem(rejected, 400, 'invalid_params');
      expect(invalidParamNames(rejected)).toEqual(['userIds']);
    }
    expect(invalidParamNames(await t.post('/v1/organizations/acme/members').send({ userIds: ['ok', 'not ok'] }))).toEqual(['userIds[1]']);
    expect(t.calls).toHaveLength(1);
  });

  it('DELETE /v1/organizations/:id/members/:userId: 204', async () => {
    const response = await t.delete('/v1/organizations/acme/members/bob').expect(204);
    expect(response.text).toBe('');
    expect(t.calls).toEqual([{ name: 'removeMember', args: ['acme', 'bob', actor()] }]);
  });

  it('POST /v1/organizations/:id/members/:userId/roles grants roles: 201', async () => {
    const response = await t.post('/v1/organizations/acme/members/bob/roles').send({ organizationRoleIds: ['role-admin'] }).expect(201);
    expect(response.body).toEqual({
      organizationId: 'acme',
      userId: 'bob',
      organizationRoleIds: ['role-admin'],
      organizationRoles: [{ id: 'role-admin', name: 'role-admin' }],
    });
    expect(t.calls).toEqual([{ name: 'grantRoles', args: ['acme', 'bob', ['role-admin'], actor()] }]);
    expect(invalidParamNames(await t.post('/v1/organizations/acme/members/bob/roles').send({ roleIds: ['x'] })).sort()).toEqual([
      'organizationRoleIds',
      'roleIds',
    ]);
  });

  it('PUT member, PUT role (?addMember) and PUT roles pass the key name and options to the actions', async () => {
    const member = await t.put('/v1/organizations/acme/members/bob').expect(201);
    expect(member.body).toEqual({ organizationId: 'acme', userId: 'bob', organizationRoles: [] });
    await t.put('/v1/organizations/acme/members/bob/roles/role-admin?addMember=true').expect(201);
    await t.put('/v1/organizations/acme/members/bob/roles/role-admin').expect(201);
    const set = await t.put('/v1/organizations/acme/members/bob/roles').send({ organizationRoleIds: [] }).expect(200);
    expect(set.body).toEqual({ organizationId: 'acme', userId: 'bob', organizationRoles: [] });
    expect(t.calls).toEqual([
      { name: 'addMember', args: ['acme', 'bob', actor()] },
      { name: 'grantRole', args: ['acme', 'bob', 'role-admin', { addMember: true }, actor()] },
      { name: 'grantRole', args: ['acme', 'bob', 'role-admin', { addMember: false }, actor()] },
      { name: 'setRoles', args: ['acme', 'bob', [], { addMember: false }, actor()] },
    ]);
    expect(invalidParamNames(await t.put('/v1/organizations/acme/members/bob/roles/r1?addMember=yes'))).toEqual(['addMember']);
    expect(invalidParamNames(await t.put('/v1/organizations/acme/members/bob/roles').send({}))).toEqual(['organizationRoleIds']);
    expect(t.calls).toHaveLength(4);
  });

  it('DELETE /v1/organizations/:id/members/:userId/roles/:roleId revokes a role: 204', async () => {
    await t.delete('/v1/organizations/acme/members/bob/roles/role-admin').expect(204);
    expect(t.calls).toEqual([{ name: 'revokeRole', args: ['acme', 'bob', 'role-admin', actor()] }]);
  });

  it('passes an AppError of an action through as problem+json, and hides unknown errors behind a 500', async () => {
    t.state.fail = new AppError(404, 'logto.entity.not_exists', 'Logto rejected the change: user not found', { logtoStatus: 404 });
    const rejected = expectProblem(await t.post('/v1/users/ghost/suspend'), 404, 'logto.entity.not_exists');
    expect(rejected).toMatchObject({ detail: 'Logto rejected the change: user not found', logtoStatus: 404 });

    t.state.fail = new Error('connection to 10.0.0.7 refused with secret=hunter2');
    const failed = expectProblem(await t.delete('/v1/organizations/acme/members/bob'), 500, 'internal_error');
    expect(JSON.stringify(failed)).not.toContain('hunter2');
    const logged = t.log.entries().find((entry) => entry.msg === 'unhandled error');
    expect(logged).toMatchObject({ requestId: failed.requestId });
    expect(JSON.stringify(logged)).toContain('hunter2'); // logged in full, for the operator
  });

  it('needs the write scope: a read key gets 403 and the action is not called', async () => {
    const forbidden = expectProblem(await t.post('/v1/users', t.keys.read.secret).send({ username: 'x' }), 403, 'insufficient_scope');
    expect(forbidden.requiredScope).toBe('write');
    expectProblem(await t.delete('/v1/organizations/acme/members/bob', t.keys.read.secret), 403, 'insufficient_scope');
    expectProblem(await t.post('/v1/sync/reconcile', t.keys.read.secret), 403, 'insufficient_scope');
    expect(t.calls).toEqual([]);
  });
});
