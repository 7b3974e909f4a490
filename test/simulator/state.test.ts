import { describe, expect, it } from 'vitest';
import { generateTenant, LogtoApiError, TenantState } from '../../src/simulator/index.js';

describe('tenant state', () => {
  it('makes ids in Logto\'s formats', () => {
    const state = new TenantState();
    expect(state.createUser().id).toMatch(/^[a-z0-9]{12}$/);
    expect(state.createOrganization({ name: 'o' }).id).toMatch(/^[a-z0-9]{12}$/);
    expect(state.createOrganizationRole({ name: 'r' }).id).toMatch(/^[a-z0-9]{21}$/);
  });

  it('bumps updatedAt on every user change, never repeating a value, even with a frozen clock', () => {
    const state = new TenantState({ now: () => 1_000 });
    const user = state.createUser({ username: 'frozen' });
    const seen = [user.updatedAt];
    state.updateUser(user.id, { name: 'A' });
    seen.push(state.requireUser(user.id).updatedAt);
    state.mergeUserCustomData(user.id, { a: 1 });
    seen.push(state.requireUser(user.id).updatedAt);
    state.mergeUserProfile(user.id, { nickname: 'x' });
    seen.push(state.requireUser(user.id).updatedAt);
    state.setUserSuspended(user.id, true);
    seen.push(state.requireUser(user.id).updatedAt);
    for (let index = 1; index < seen.length; index += 1) expect(seen[index]).toBeGreaterThan(seen[index - 1] as number);
  });

  it('lists users newest first and roles by name', () => {
    const state = new TenantState();
    const first = state.createUser({ username: 'first' }).id;
    const second = state.createUser({ username: 'second' }).id;
    expect(state.listUsers().map((user) => user.id)).toEqual([second, first]);
    state.createOrganizationRole({ name: 'viewer' });
    state.createOrganizationRole({ name: 'admin' });
    expect(state.listOrganizationRoles().map((role) => role.name)).toEqual(['admin', 'viewer']);
  });

  it('refuses impossible changes with Logto\'s errors', () => {
    const state = new TenantState();
    const organization = state.createOrganization({ name: 'o' }).id;
    const user = state.createUser({ username: 'u', primaryEmail: 'U@example.com' }).id;
    const machineRole = state.createOrganizationRole({ name: 'm2m', type: 'MachineToMachine' }).id;
    const codeOf = (action: () => unknown) => {
      try {
        action();
      } catch (error) {
        return error instanceof LogtoApiError ? `${error.status} ${error.code}` : 'other';
      }
      return 'none';
    };
    expect(codeOf(() => state.setMemberRoles(organization, user, []))).toBe('422 organization.require_membership');
    expect(codeOf(() => state.createUser({ primaryEmail: 'u@EXAMPLE.com' }))).toBe('422 user.email_already_in_use');
    expect(codeOf(() => state.addMembers(organization, ['nobody']))).toBe('422 entity.relation_foreign_key_not_found');
    state.addMembers(organization, [user]);
    expect(codeOf(() => state.setMemberRoles(organization, user, [machineRole]))).toBe('422 entity.db_constraint_violated');
    expect(codeOf(() => state.removeMemberRole(organization, user, machineRole))).toBe('404 entity.not_found');
    expect(codeOf(() => state.requireOrganization('missing'))).toBe('404 entity.not_exists_with_id');
  });
});

describe('tenant generator', () => {
  const options = { seed: 42, users: 1500, organizations: 100, organizationRoles: 5 };

  it('generates the same tenant for the same seed, and another for another seed', () => {
    const a = new TenantState();
    const b = new TenantState();
    const c = new TenantState();
    generateTenant(a, options);
    generateTenant(b, options);
    generateTenant(c, { ...options, seed: 43 });
    expect(b.snapshot()).toEqual(a.snapshot());
    expect(c.snapshot()).not.toEqual(a.snapshot());
  });

  it('produces heavy-tailed organizations, busy users, 0–3 roles, suspensions and Unicode names', () => {
    const state = new TenantState();
    const summary = generateTenant(state, options);
    expect(summary).toMatchObject({ users: 1500, organizations: 100, organizationRoles: 5 });
    const sizes = summary.organizationSizes;
    const median = sizes[Math.floor(sizes.length / 2)] as number;
    expect(sizes[0]).toBeGreaterThanOrEqual(300);
    expect(sizes[0]).toBeGreaterThan(median * 10);
    expect(summary.busiestUser?.organizations).toBeGreaterThanOrEqual(20);

    const roleCounts = new Set<number>();
    for (const organization of state.listOrganizations()) {
      for (const userId of state.listMemberIds(organization.id)) {
        roleCounts.add(state.getMemberRoleIds(organization.id, userId).length);
      }
    }
    expect([...roleCounts].sort()).toEqual([0, 1, 2, 3]);

    const users = state.listUsers();
    expect(users.some((user) => user.isSuspended)).toBe(true);
    expect(users.some((user) => /[^\u0000-\u007f]/.test(user.name ?? ''))).toBe(true);
    expect(users.every((user) => /^[A-Z_a-z]\w*$/.test(user.username ?? ''))).toBe(true);
    // Strictly increasing creation times make `created_at desc` a total order.
    expect(new Set(users.map((user) => user.createdAt)).size).toBe(users.length);
  });
});
