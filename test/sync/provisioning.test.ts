import { and, eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { accessChanges, webhookDeliveries } from '../../db/schema.js';
import type { OrganizationRoleRecord, UserRecord } from '../../src/simulator/index.js';
import { expectProblem } from '../api/harness.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { startProvisioningStack, type ProvisioningStack } from '../helpers/provisioning.js';

/**
 * Provisioning over HTTP against the simulated tenant: every route twice in a row ends in the same state
 * in Logto and in the mirror with a success both times; unknown ids are 404 in each position; Logto's
 * refusals keep its code; and the webhooks Logto echoes record no second change.
 */
describe('provisioning through Logto', () => {
  let s: ProvisioningStack;
  let organizationId: string;
  let role: Readonly<OrganizationRoleRecord>;
  let otherRole: Readonly<OrganizationRoleRecord>;
  let machineRole: Readonly<OrganizationRoleRecord>;
  let changesBefore = 0;
  const outsiders: string[] = [];

  const changeCount = () => s.database.db.$count(accessChanges);
  const provisionChanges = () =>
    s.database.db.select().from(accessChanges).where(eq(accessChanges.source, 'provision')).orderBy(accessChanges.id);
  /** A user of the tenant who is no member of the organization (a fresh one for each call). */
  const outsider = (): string => {
    const user = s.sim.state
      .listUsers()
      .find((candidate: Readonly<UserRecord>) => !s.sim.state.isMember(organizationId, candidate.id) && !outsiders.includes(candidate.id));
    outsiders.push(user!.id);
    return user!.id;
  };
  const converged = async () => {
    const mirror = await mirrorState(s.database.db);
    const tenant = tenantState(s.sim.state.snapshot());
    expect(mirror.memberships[organizationId] ?? {}).toEqual(tenant.memberships[organizationId] ?? {});
  };
  const roleIdsInLogto = (userId: string) => [...s.sim.state.getMemberRoleIds(organizationId, userId)].sort();

  beforeAll(async () => {
    s = await startProvisioningStack();
    organizationId = s.sim.state.listOrganizations()[0]!.id;
    [role, otherRole] = s.sim.state.listOrganizationRoles() as [OrganizationRoleRecord, OrganizationRoleRecord];
    // A role for machine-to-machine applications, unknown to the mirror: it cannot go to users.
    machineRole = s.sim.state.createOrganizationRole({ name: 'robots-only', type: 'MachineToMachine' });
  });
  afterAll(async () => {
    // The echoes did arrive (signed by the tenant, through the receiver and the inbox): they just changed nothing.
    const applied = await s.database.db.$count(webhookDeliveries, eq(webhookDeliveries.event, 'Organization.Membership.Updated'));
    await s.close();
    expect(applied).toBeGreaterThan(0);
  });
  beforeEach(async () => {
    // Echoes are held back until the test's writes are done, then delivered and applied (afterEach).
    s.sim.webhooks.pause();
    changesBefore = await changeCount();
  });
  afterEach(async () => {
    const beforeEchoes = await changeCount();
    s.sim.webhooks.resume();
    await s.settle();
    // The webhooks Logto echoed (and the re-reads they trigger) find nothing left to change.
    expect(await changeCount()).toBe(beforeEchoes);
    expect(await s.database.db.$count(accessChanges, eq(accessChanges.source, 'webhook'))).toBe(0);
    await converged();
  });

  it('PUT member twice: 201 then 200, a member in Logto and in the mirror, one change by the key', async () => {
    const userId = outsider();
    const first = await s.put(`/v1/organizations/${organizationId}/members/${userId}`).expect(201);
    expect(first.body).toEqual({ organizationId, userId, organizationRoles: [] });
    const second = await s.put(`/v1/organizations/${organizationId}/members/${userId}`).expect(200);
    expect(second.body).toEqual(first.body);
    expect(s.sim.state.isMember(organizationId, userId)).toBe(true);
    const access = await s.get(`/v1/access?userId=${userId}&organizationId=${organizationId}`).expect(200);
    expect(access.body).toMatchObject({ member: true });
    const changes = await s.database.db
      .select()
      .from(accessChanges)
      .where(and(eq(accessChanges.source, 'provision'), eq(accessChanges.userId, userId)));
    expect(changes.map((change) => [change.kind, change.actor])).toEqual([['member.added', 'provision-writer']]);
  });

  it('PUT role twice (201, 200), then DELETE it twice (204, 204): grant → revoke → revoke', async () => {
    const userId = outsider();
    await s.put(`/v1/organizations/${organizationId}/members/${userId}`).expect(201);
    const granted = await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}`).expect(201);
    expect(granted.body).toEqual({ organizationId, userId, organizationRoles: [{ id: role.id, name: role.name }] });
    await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}`).expect(200);
    expect(roleIdsInLogto(userId)).toEqual([role.id]);
    const access = await s.get(`/v1/access?userId=${userId}&organizationId=${organizationId}&role=${role.name}`).expect(200);
    expect(access.body).toMatchObject({ member: true, hasRole: true });
    await converged();

    await s.delete(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}`).expect(204);
    await s.delete(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}`).expect(204);
    expect(roleIdsInLogto(userId)).toEqual([]);
    const kinds = (await provisionChanges()).filter((change) => change.userId === userId).map((change) => change.kind);
    expect(kinds).toEqual(['member.added', 'member_role.granted', 'member_role.revoked']);
  });

  it('PUT role for a non-member: 409 not_a_member and nothing changes; with ?addMember=true it adds the membership first', async () => {
    const userId = outsider();
    const refused = expectProblem(await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}`), 409, 'not_a_member');
    expect(refused.detail).toContain('addMember=true');
    expect(refused).toMatchObject({ logtoStatus: 422, logtoCode: 'organization.require_membership' });
    expect(await changeCount()).toBe(changesBefore);
    expect(s.sim.state.isMember(organizationId, userId)).toBe(false);
    for (const status of [201, 200]) {
      const response = await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}?addMember=true`).expect(status);
      expect(response.body.organizationRoles).toEqual([{ id: role.id, name: role.name }]);
    }
    expect(roleIdsInLogto(userId)).toEqual([role.id]);
  });

  it('PUT roles sets exactly the listed roles, twice in a row the same, answering the resulting set', async () => {
    const userId = outsider();
    await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}?addMember=true`).expect(201);
    for (let round = 0; round < 2; round += 1) {
      const response = await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles`).send({ organizationRoleIds: [otherRole.id] }).expect(200);
      expect(response.body).toEqual({ organizationId, userId, organizationRoles: [{ id: otherRole.id, name: otherRole.name }] });
    }
    expect(roleIdsInLogto(userId)).toEqual([otherRole.id]);
    await converged();
    const emptied = await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles`).send({ organizationRoleIds: [] }).expect(200);
    expect(emptied.body.organizationRoles).toEqual([]);
    expect(roleIdsInLogto(userId)).toEqual([]);
    expectProblem(
      await s.put(`/v1/organizations/${organizationId}/members/${outsider()}/roles`).send({ organizationRoleIds: [role.id] }),
      409,
      'not_a_member',
    );
  });

  it('POST roles grants on top of held roles and answers the member as Logto has it', async () => {
    const userId = outsider();
    await s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}?addMember=true`).expect(201);
    for (let round = 0; round < 2; round += 1) {
      const response = await s.post(`/v1/organizations/${organizationId}/members/${userId}/roles`).send({ organizationRoleIds: [otherRole.id] }).expect(201);
      expect(response.body.organizationRoles.map((held: { id: string }) => held.id).sort()).toEqual([role.id, otherRole.id].sort());
    }
    expectProblem(await s.post(`/v1/organizations/${organizationId}/members/${outsider()}/roles`).send({ organizationRoleIds: [role.id] }), 409, 'not_a_member');
  });

  it('DELETE member twice: 204 both times (remove → remove), roles gone with the membership', async () => {
    const member = s.sim.state.listMemberIds(organizationId).find((userId) => s.sim.state.getMemberRoleIds(organizationId, userId).length > 0)!;
    await s.delete(`/v1/organizations/${organizationId}/members/${member}`).expect(204);
    await s.delete(`/v1/organizations/${organizationId}/members/${member}`).expect(204);
    expect(s.sim.state.isMember(organizationId, member)).toBe(false);
    const kinds = (await provisionChanges()).filter((change) => change.userId === member).map((change) => change.kind);
    expect(kinds.at(-1)).toBe('member.removed');
    expect(kinds.filter((kind) => kind === 'member.removed')).toHaveLength(1);
    // Revoking a role from someone who is no member is also done.
    await s.delete(`/v1/organizations/${organizationId}/members/${member}/roles/${role.id}`).expect(204);
    const access = await s.get(`/v1/access?userId=${member}&organizationId=${organizationId}`).expect(200);
    expect(access.body).toMatchObject({ member: false });
  });

  it('bulk POST members with roles twice: 201 both times, one call each to Logto, all members holding the roles', async () => {
    const userIds = [outsider(), outsider(), outsider()];
    s.sim.faults.resetStats();
    for (let round = 0; round < 2; round += 1) {
      const response = await s.post(`/v1/organizations/${organizationId}/members`).send({ userIds, organizationRoleIds: [role.id] }).expect(201);
      expect(response.body).toEqual({ organizationId, userIds, organizationRoleIds: [role.id] });
    }
    const routes = s.sim.faults.stats().byRoute;
    expect(routes['POST /api/organizations/:id/users']?.total).toBe(2);
    expect(routes['POST /api/organizations/:id/users/roles']?.total).toBe(2);
    for (const userId of userIds) {
      expect(roleIdsInLogto(userId)).toEqual([role.id]);
      // Applied before the answer, not left to the echoes (which are held back until the test ends).
      const access = await s.get(`/v1/access?userId=${userId}&organizationId=${organizationId}&role=${role.name}`).expect(200);
      expect(access.body).toMatchObject({ member: true, hasRole: true });
    }
    const changes = (await provisionChanges()).filter((change) => userIds.includes(change.userId ?? ''));
    expect(changes.map((change) => change.kind).sort()).toEqual([...userIds.map(() => 'member.added'), ...userIds.map(() => 'member_role.granted')].sort());
    expect(new Set(changes.map((change) => change.actor))).toEqual(new Set(['provision-writer']));
  });

  it('answers 404 for an unknown organization, user or role in each position, keeping the refusal of Logto that led to it, and changes nothing', async () => {
    const member = s.sim.state.listMemberIds(organizationId)[0]!;
    const org = organizationId;
    const roles = (organizationRoleIds: string[]) => ({ organizationRoleIds });
    // Logto's refusal as logtoCode: its 404 and 422 do not say which id is unknown, the service's lookup does.
    // None when the service refused before writing (a role checked first, so that no half change is made).
    const [notFound, foreignKey, notMember] = ['entity.not_found', 'entity.relation_foreign_key_not_found', 'organization.require_membership'];
    const cases: Array<[() => Promise<import('supertest').Response>, string, string | undefined]> = [
      [() => s.put(`/v1/organizations/nowhere/members/${member}`), 'organization_not_found', foreignKey],
      [() => s.put(`/v1/organizations/${org}/members/nobody`), 'user_not_found', foreignKey],
      [() => s.delete(`/v1/organizations/nowhere/members/${member}`), 'organization_not_found', notFound],
      [() => s.delete(`/v1/organizations/${org}/members/nobody`), 'user_not_found', notFound],
      [() => s.put(`/v1/organizations/nowhere/members/${member}/roles/${role.id}`), 'organization_not_found', notMember],
      [() => s.put(`/v1/organizations/${org}/members/nobody/roles/${role.id}`), 'user_not_found', notMember],
      [() => s.put(`/v1/organizations/${org}/members/${member}/roles/no-such-role`), 'organization_role_not_found', foreignKey],
      [() => s.put(`/v1/organizations/${org}/members/${outsider()}/roles/no-such-role?addMember=true`), 'organization_role_not_found', undefined],
      [() => s.delete(`/v1/organizations/nowhere/members/${member}/roles/${role.id}`), 'organization_not_found', notMember],
      [() => s.delete(`/v1/organizations/${org}/members/nobody/roles/${role.id}`), 'user_not_found', notMember],
      [() => s.delete(`/v1/organizations/${org}/members/${member}/roles/no-such-role`), 'organization_role_not_found', notFound],
      [() => s.put(`/v1/organizations/${org}/members/${member}/roles`).send(roles(['no-such-role'])), 'organization_role_not_found', foreignKey],
      [() => s.put(`/v1/organizations/nowhere/members/${member}/roles`).send(roles([role.id])), 'organization_not_found', notMember],
      [() => s.put(`/v1/organizations/${org}/members/nobody/roles`).send(roles([role.id])), 'user_not_found', notMember],
      [() => s.post(`/v1/organizations/${org}/members/${member}/roles`).send(roles(['no-such-role'])), 'organization_role_not_found', foreignKey],
      [() => s.post(`/v1/organizations/nowhere/members/${member}/roles`).send(roles([role.id])), 'organization_not_found', notMember],
      [() => s.post(`/v1/organizations/${org}/members/nobody/roles`).send(roles([role.id])), 'user_not_found', notMember],
      [() => s.post(`/v1/organizations/${org}/members`).send({ userIds: [member, 'nobody'] }), 'user_not_found', foreignKey],
      [() => s.post(`/v1/organizations/nowhere/members`).send({ userIds: [member] }), 'organization_not_found', foreignKey],
      [() => s.post(`/v1/organizations/${org}/members`).send({ userIds: [outsider()], ...roles(['no-such-role']) }), 'organization_role_not_found', undefined],
      [() => s.post('/v1/users/nobody/suspend'), 'user_not_found', notFound],
      [() => s.post('/v1/users/nobody/unsuspend'), 'user_not_found', notFound],
    ];
    const snapshot = s.sim.state.snapshot();
    for (const [index, [call, code, logtoCode]] of cases.entries()) {
      const problem = expectProblem(await call(), 404, code);
      expect({ case: index, logtoCode: problem.logtoCode }).toEqual({ case: index, logtoCode });
    }
    expect(s.sim.state.snapshot().memberships).toEqual(snapshot.memberships);
    expect(await changeCount()).toBe(changesBefore);
  });

  it('answers 422 for a role of the wrong type, 403 past the quota and 502 with Retry-After when Logto is down, keeping Logto\'s code', async () => {
    const member = s.sim.state.listMemberIds(organizationId)[0]!;
    const wrongType = expectProblem(
      await s.put(`/v1/organizations/${organizationId}/members/${member}/roles/${machineRole.id}`),
      422,
      'organization_role_wrong_type',
    );
    expect(wrongType).toMatchObject({ organizationRoleIds: [machineRole.id], logtoStatus: 422, logtoCode: 'entity.db_constraint_violated' });
    // Bulk checks its roles before adding anyone (Logto is not asked, so there is no code of Logto's to keep).
    const checkedFirst = expectProblem(
      await s.post(`/v1/organizations/${organizationId}/members`).send({ userIds: [member], organizationRoleIds: [machineRole.id] }),
      422,
      'organization_role_wrong_type',
    );
    expect(checkedFirst.logtoCode).toBeUndefined();

    s.sim.faults.usersPerOrganizationLimit = s.sim.state.memberCount(organizationId);
    try {
      const quota = expectProblem(await s.put(`/v1/organizations/${organizationId}/members/${outsider()}`), 403, 'quota_exceeded');
      expect(quota).toMatchObject({ logtoStatus: 403, logtoCode: 'subscription.limit_exceeded' });
    } finally {
      s.sim.faults.usersPerOrganizationLimit = undefined;
    }

    s.sim.faults.failNext(50, { status: 503 });
    try {
      const down = await s.put(`/v1/organizations/${organizationId}/members/${outsider()}`);
      const problem = expectProblem(down, 502, 'logto_unavailable');
      expect(problem.logtoStatus).toBe(503);
      expect(Number(down.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      s.sim.faults.reset();
    }
    // Unreachable: every connection dropped without an answer, through all of the client's retries.
    s.sim.faults.failFor(60_000, { paths: /^\/api\// });
    try {
      const unreachable = await s.delete(`/v1/organizations/${organizationId}/members/${s.sim.state.listMemberIds(organizationId)[0]!}`);
      const problem = expectProblem(unreachable, 502, 'logto_unavailable');
      expect(problem.detail).toContain('unreachable');
      expect(problem.logtoStatus).toBeUndefined();
      expect(Number(unreachable.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      s.sim.faults.reset();
    }
    expect(await changeCount()).toBe(changesBefore);
  });

  it('POST suspend twice and unsuspend twice: 200 each time, the same user in Logto and in the mirror', async () => {
    const userId = s.sim.state.listMemberIds(organizationId).find((id) => !s.sim.state.getUser(id)!.isSuspended)!;
    for (const [action, isSuspended] of [['suspend', true], ['unsuspend', false]] as const) {
      for (let round = 0; round < 2; round += 1) {
        const response = await s.post(`/v1/users/${userId}/${action}`).expect(200);
        expect(response.body).toMatchObject({ id: userId, isSuspended });
        expect(s.sim.state.getUser(userId)!.isSuspended).toBe(isSuspended);
        const access = await s.get(`/v1/access?userId=${userId}&organizationId=${organizationId}`).expect(200);
        expect(access.body).toMatchObject({ member: true, isSuspended });
      }
    }
    const kinds = (await provisionChanges())
      .filter((change) => change.userId === userId && change.kind.startsWith('user.'))
      .map((change) => change.kind);
    expect(kinds).toEqual(['user.suspended', 'user.unsuspended']);
  });

  it('POST /v1/users retried with its Idempotency-Key answers the first result, not "username taken"', async () => {
    const created = await s.post('/v1/users').set('Idempotency-Key', 'create-retried').send({ username: 'retried_user' }).expect(201);
    const retried = await s.post('/v1/users').set('Idempotency-Key', 'create-retried').send({ username: 'retried_user' }).expect(201);
    expect(retried.body).toEqual(created.body);
    expect(s.sim.state.listUsers().filter((user) => user.username === 'retried_user')).toHaveLength(1);
    const user = await s.get(`/v1/users/${created.body.id}`).expect(200);
    expect(user.body).toMatchObject({ id: created.body.id, username: 'retried_user' });
  });

  it('POST /v1/users: a taken username keeps Logto\'s code; read keys get 403 on every provisioning route', async () => {
    const taken = s.sim.state.listUsers().find((user) => user.username)!;
    const refused = expectProblem(await s.post('/v1/users').send({ username: taken.username }), 422, 'logto_rejected');
    expect(refused.logtoCode).toBe('user.username_already_in_use');
    const member = s.sim.state.listMemberIds(organizationId)[0]!;
    const read = s.keys.read.secret;
    for (const response of [
      await s.put(`/v1/organizations/${organizationId}/members/${member}`, read),
      await s.delete(`/v1/organizations/${organizationId}/members/${member}`, read),
      await s.put(`/v1/organizations/${organizationId}/members/${member}/roles/${role.id}`, read),
      await s.delete(`/v1/organizations/${organizationId}/members/${member}/roles/${role.id}`, read),
      await s.put(`/v1/organizations/${organizationId}/members/${member}/roles`, read).send({ organizationRoleIds: [] }),
      await s.post(`/v1/organizations/${organizationId}/members`, read).send({ userIds: [member] }),
    ]) {
      expectProblem(response, 403, 'insufficient_scope');
    }
    expect(await changeCount()).toBe(changesBefore);
  });
});
