import { z } from 'zod';
import { defineRoute } from './route.js';
import { idParam, toUser, userSchema } from './schemas.js';

const createUserSchema = z
  .strictObject({
    username: z
      .string()
      .regex(/^[A-Z_a-z]\w*$/, 'must start with a letter or underscore and contain only letters, digits and underscores')
      .max(128)
      .optional(),
    primaryEmail: z.email('must be an email address').max(256).optional(),
    primaryPhone: z.string().regex(/^\d{5,20}$/, 'must be digits only, with the country code').optional(),
    name: z.string().max(128).optional(),
    password: z.string().min(1).max(256).optional().describe('Checked against the tenant password policy by Logto'),
  })
  .describe('The user to create in Logto');

export type CreateUserInput = z.output<typeof createUserSchema>;

const userPath = z.object({ id: idParam('user') });
const memberPath = z.object({ id: idParam('organization'), userId: idParam('user') });

const ids = (what: string) =>
  z
    .array(idParam(what))
    .min(1, 'must list at least one id')
    .max(100, 'must list at most 100 ids')
    .transform((values) => [...new Set(values)]);

/** The actor recorded in the change log for a provisioning write: the API key's name. */
const actorOf = (principal: { name: string } | null) => ({ actor: principal?.name ?? 'unknown' });

export const provisioningRoutes = [
  defineRoute({
    method: 'post',
    path: '/v1/users',
    operationId: 'createUser',
    summary: 'Create a user in Logto',
    tags: ['provisioning'],
    auth: 'write',
    body: createUserSchema,
    success: { status: 201, description: 'The user, as Logto created it (already in the copy)', schema: userSchema },
    errors: [409, 422, 502],
    handler: async ({ deps, body, principal }) => toUser(await deps.actions.provision.createUser(body, actorOf(principal))),
  }),
  defineRoute({
    method: 'post',
    path: '/v1/users/:id/suspend',
    operationId: 'suspendUser',
    summary: 'Suspend a user in Logto',
    tags: ['provisioning'],
    auth: 'write',
    params: userPath,
    success: { status: 200, description: 'The user, now suspended', schema: userSchema },
    errors: [404, 422, 502],
    handler: async ({ deps, params, principal }) =>
      toUser(await deps.actions.provision.setUserSuspended(params.id, true, actorOf(principal))),
  }),
  defineRoute({
    method: 'post',
    path: '/v1/users/:id/unsuspend',
    operationId: 'unsuspendUser',
    summary: 'Lift the suspension of a user in Logto',
    tags: ['provisioning'],
    auth: 'write',
    params: userPath,
    success: { status: 200, description: 'The user, no longer suspended', schema: userSchema },
    errors: [404, 422, 502],
    handler: async ({ deps, params, principal }) =>
      toUser(await deps.actions.provision.setUserSuspended(params.id, false, actorOf(principal))),
  }),
  defineRoute({
    method: 'post',
    path: '/v1/organizations/:id/members',
    operationId: 'addOrganizationMembers',
    summary: 'Add users to an organization in Logto',
    tags: ['provisioning'],
    auth: 'write',
    params: z.object({ id: idParam('organization') }),
    body: z.strictObject({ userIds: ids('user').describe('1 to 100 user ids') }),
    success: {
      status: 201,
      description: 'The users are members (already in the copy)',
      schema: z.object({ organizationId: z.string(), userIds: z.array(z.string()) }),
    },
    errors: [404, 409, 422, 502],
    handler: async ({ deps, params, body, principal }) => {
      await deps.actions.provision.addMembers(params.id, body.userIds, actorOf(principal));
      return { organizationId: params.id, userIds: body.userIds };
    },
  }),
  defineRoute({
    method: 'delete',
    path: '/v1/organizations/:id/members/:userId',
    operationId: 'removeOrganizationMember',
    summary: 'Remove a user from an organization in Logto (with their roles there)',
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath,
    success: { status: 204, description: 'The user is no longer a member' },
    errors: [404, 422, 502],
    handler: async ({ deps, params, principal }) => {
      await deps.actions.provision.removeMember(params.id, params.userId, actorOf(principal));
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/organizations/:id/members/:userId/roles',
    operationId: 'grantOrganizationMemberRoles',
    summary: "Grant organization roles to a member in Logto",
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath,
    body: z.strictObject({ organizationRoleIds: ids('organization role').describe('1 to 100 organization role ids') }),
    success: {
      status: 201,
      description: 'The member holds the roles (already in the copy)',
      schema: z.object({ organizationId: z.string(), userId: z.string(), organizationRoleIds: z.array(z.string()) }),
    },
    errors: [404, 409, 422, 502],
    handler: async ({ deps, params, body, principal }) => {
      await deps.actions.provision.grantRoles(params.id, params.userId, body.organizationRoleIds, actorOf(principal));
      return { organizationId: params.id, userId: params.userId, organizationRoleIds: body.organizationRoleIds };
    },
  }),
  defineRoute({
    method: 'delete',
    path: '/v1/organizations/:id/members/:userId/roles/:roleId',
    operationId: 'revokeOrganizationMemberRole',
    summary: 'Revoke an organization role from a member in Logto',
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath.extend({ roleId: idParam('organization role') }),
    success: { status: 204, description: 'The member no longer holds the role' },
    errors: [404, 409, 422, 502],
    handler: async ({ deps, params, principal }) => {
      await deps.actions.provision.revokeRole(params.id, params.userId, params.roleId, actorOf(principal));
    },
  }),
];
