import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OrganizationRoleRecord, UserRecord } from '../../src/simulator/index.js';
import { expectProblem } from '../api/harness.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { startProvisioningStack, type ProvisioningStack } from '../helpers/provisioning.js';

/**
 * A grant with `?addMember=true` adds the member, then grants the role: another change (Logto's console,
 * another client) can take the membership away in between. Apart from `provisioning.test.ts`, whose every
 * test checks that Logto's webhooks change nothing, since here the removal's webhook must.
 */
describe('provisioning when another change removes the member it just added', () => {
  let s: ProvisioningStack;
  let organizationId: string;
  let role: Readonly<OrganizationRoleRecord>;

  beforeAll(async () => {
    s = await startProvisioningStack();
    organizationId = s.sim.state.listOrganizations()[0]!.id;
    role = s.sim.state.listOrganizationRoles()[0] as OrganizationRoleRecord;
  });
  afterAll(async () => {
    await s.close();
  });

  const outsider = (): string =>
    s.sim.state.listUsers().find((user: Readonly<UserRecord>) => !s.sim.state.isMember(organizationId, user.id))!.id;

  it('PUT role with ?addMember=true answers 409 conflict, grants nothing, and the mirror follows the removal', async () => {
    const userId = outsider();
    const rolesPath = new RegExp(`/organizations/${organizationId}/users/${userId}/roles$`);
    // The first call on the member's roles is the read that finds no membership; the second the grant after the add.
    const read = s.sim.faults.holdNext({ paths: rolesPath });
    const answer = s.put(`/v1/organizations/${organizationId}/members/${userId}/roles/${role.id}?addMember=true`).then((response) => response);
    await read.held;
    const grant = s.sim.faults.holdNext({ paths: rolesPath });
    read.release();
    await grant.held;
    expect(s.sim.state.isMember(organizationId, userId)).toBe(true);
    s.sim.state.removeMember(organizationId, userId);
    grant.release();

    const refused = expectProblem(await answer, 409, 'conflict');
    expect(refused.detail).toContain('send the request again');
    expect(refused).toMatchObject({ organizationId, userId, logtoStatus: 422, logtoCode: 'organization.require_membership' });
    expect(s.sim.state.isMember(organizationId, userId)).toBe(false);
    expect([...s.sim.state.getMemberRoleIds(organizationId, userId)]).toEqual([]);
    // The removal's webhook undoes the membership the add wrote.
    await s.settle();
    expect((await mirrorState(s.database.db)).memberships[organizationId]).toEqual(tenantState(s.sim.state.snapshot()).memberships[organizationId]);
  });
});
