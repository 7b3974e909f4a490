import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  hookLogSchema,
  logtoOrganizationMemberSchema,
  logtoOrganizationRoleSchema,
  logtoOrganizationSchema,
  logtoUserOrganizationSchema,
  logtoUserSchema,
  type HookLog,
  type LogtoOrganization,
  type LogtoOrganizationMember,
  type LogtoOrganizationRole,
  type LogtoUser,
  type LogtoUserOrganization,
} from '../../src/logto/index.js';
import { recorded } from '../helpers/recordings.js';

/** A body recorded from a real Logto 1.42 (test/fixtures/logto/management-api). */
const body = (name: string): unknown => recorded(`${name}.json`);

describe('schemas accept what Logto actually sends', () => {
  it.each([
    ['api-users-list', z.array(logtoUserSchema)],
    ['api-users-list-page_size-1-page-2', z.array(logtoUserSchema)],
    ['api-users-get', logtoUserSchema],
    ['api-organizations-list', z.array(logtoOrganizationSchema)],
    ['api-organizations-get', logtoOrganizationSchema],
    ['api-organization-roles-list', z.array(logtoOrganizationRoleSchema)],
    ['api-organization-users-list', z.array(logtoOrganizationMemberSchema)],
    ['api-users-organizations', z.array(logtoUserOrganizationSchema)],
    ['api-organization-user-roles', z.array(logtoOrganizationRoleSchema)],
    ['api-hooks-recent-logs', z.array(hookLogSchema)],
  ] as const)('%s', (name, schema) => {
    const result = (schema as z.ZodType).safeParse(body(name));
    expect(result.error?.issues).toBeUndefined();
    expect(result.success).toBe(true);
  });

  it('keeps keys it does not model (passthrough)', () => {
    const user = logtoUserSchema.parse(body('api-users-get'));
    expect(user.cimdClientId).toBeNull();
    expect(user.hasPassword).toBe(false);
    const [role] = z.array(logtoOrganizationRoleSchema).parse(body('api-organization-roles-list'));
    expect(role?.scopes).toEqual([]);
    expect(role?.resourceScopes).toEqual([]);
    const [member] = z.array(logtoOrganizationMemberSchema).parse(body('api-organization-users-list'));
    expect(member?.organizationRoles).toEqual([{ id: 'pb2vrsz50n2lzre3xt03s', name: 'admin' }]);
    expect(member?.hasPassword).toBeUndefined();
  });

  it('reads failed deliveries from recent-logs', () => {
    const logs = z.array(hookLogSchema).parse(body('api-hooks-recent-logs'));
    const failed = logs.filter((log) => log.payload.result === 'Error');
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((log) => log.key.startsWith('TriggerHook.'))).toBe(true);
    expect(typeof failed[0]?.payload.error).toBe('string');
  });

  it('rejects a wrong type instead of storing it', () => {
    const user = { ...(body('api-users-get') as object), createdAt: '2026-11-23' };
    expect(logtoUserSchema.safeParse(user).success).toBe(false);
    const role = { id: 'r', name: 'x', description: null, type: 'Admin' };
    expect(logtoOrganizationRoleSchema.safeParse(role).success).toBe(false);
  });

  it('fills fields older Logto versions lack with neutral defaults', () => {
    const old = logtoUserSchema.parse({ id: 'u1', createdAt: 1, updatedAt: 2, isSuspended: false });
    expect(old).toMatchObject({ username: null, applicationId: null, customData: {}, profile: {}, lastSignInAt: null });
    expect(logtoOrganizationRoleSchema.parse({ id: 'r', name: 'admin' }).type).toBe('User');
  });
});

describe('exported types match the documented API', () => {
  it('LogtoUser', () => {
    expectTypeOf<LogtoUser>().toMatchTypeOf<{
      id: string;
      username: string | null;
      primaryEmail: string | null;
      primaryPhone: string | null;
      name: string | null;
      avatar: string | null;
      customData: Record<string, unknown>;
      identities: Record<string, unknown>;
      profile: Record<string, unknown>;
      lastSignInAt: number | null;
      createdAt: number;
      updatedAt: number;
      applicationId: string | null;
      isSuspended: boolean;
      hasPassword?: boolean;
    }>();
    expectTypeOf<LogtoUser['hasPassword']>().toEqualTypeOf<boolean | undefined>();
  });

  it('organizations, roles, members and hook logs', () => {
    expectTypeOf<LogtoOrganization>().toMatchTypeOf<{
      tenantId?: string;
      id: string;
      name: string;
      description: string | null;
      customData: Record<string, unknown>;
      isMfaRequired: boolean;
      createdAt: number;
    }>();
    expectTypeOf<LogtoOrganizationRole['type']>().toEqualTypeOf<'User' | 'MachineToMachine'>();
    expectTypeOf<LogtoOrganizationMember>().toMatchTypeOf<LogtoUser & { organizationRoles: { id: string; name: string }[] }>();
    expectTypeOf<LogtoUserOrganization>().toMatchTypeOf<LogtoOrganization & { organizationRoles: { id: string; name: string }[] }>();
    expectTypeOf<HookLog['payload']['result']>().toEqualTypeOf<'Success' | 'Error'>();
    expectTypeOf<HookLog>().toMatchTypeOf<{ id: string; key: string; createdAt: number }>();
  });
});
