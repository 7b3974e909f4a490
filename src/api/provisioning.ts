import { z } from 'zod';
import { defineRoute } from './route.js';
import { idParam, nulMessage, toUser, userSchema, withoutNul } from './schemas.js';

const createUserSchema = z
  .strictObject({
    username: z
      .string()
      .regex(/^[A-Z_a-z]\w*$/, 'must start with a letter or underscore and contain only letters, digits and underscores')
      .max(128)
      .optional(),
    primaryEmail: z.email('must be an email address').max(256).optional(),
    primaryPhone: z.string().regex(/^\d{5,20}$/, 'must be digits only, with the country code').optional(),
    name: z.string().max(128).refine(withoutNul, nulMessage).optional(),
    password: z.string().min(1).max(256).optional().describe('Checked against the tenant password policy by Logto'),
  })
  .describe('The user to create in Logto');

export type CreateUserInput = z.output<typeof createUserSchema>;

const userPath = z.object({ id: idParam('user') });
const organizationPath = z.object({ id: idParam('organization') });
const memberPath = z.object({ id: idParam('organization'), userId: idParam('user') });
const memberRolePath = memberPath.extend({ roleId: idParam('organization role') });

const ids = (what: string, min = 1) =>
  z
    .array(idParam(what))
    .min(min, 'must list at least one id')
    .max(100, 'must list at most 100 ids')
    .transform((values) => [...new Set(values)]);

const addMemberQuery = z.strictObject({
  addMember: z
    .enum(['true', 'false'], { error: 'must be true or false' })
    .optional()
    .transform((value) => value === 'true')
    .describe('true: add the user to the organization first when not a member (otherwise 409)'),
});

const roleRef = z.object({ id: z.string(), name: z.string() });
const memberSchema = z
  .object({
    organizationId: z.string(),
    userId: z.string(),
    organizationRoles: z.array(roleRef).describe("The member's roles in the organization, as Logto reports them after the change"),
  })
  .describe('A member of an organization with its roles, as read back from Logto (and already in the copy)');

/** The actor recorded in the change log for a provisioning write: the API key's name. */
const actorOf = (principal: { name: string } | null) => ({ actor: principal?.name ?? 'unknown' });

/** 200 instead of the route's 201 when the state already held and nothing was changed. */
const unchanged = (res: { locals: Record<string, unknown> }, created: boolean) => {
  if (!created) res.locals.successStatus = 200;
};

const logtoErrors = [403, 404, 409, 422, 502];

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
    errors: logtoErrors,
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
    errors: logtoErrors,
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
    errors: logtoErrors,
    handler: async ({ deps, params, principal }) =>
      toUser(await deps.actions.provision.setUserSuspended(params.id, false, actorOf(principal))),
  }),
  defineRoute({
    method: 'post',
    path: '/v1/organizations/:id/members',
    operationId: 'addOrganizationMembers',
    summary: 'Add up to 100 users to an organization in Logto, optionally with roles for all of them',
    description:
      "One call to Logto adds the users (members already there stay as they are), one more gives every listed user every listed role (roles they hold stay). Repeating it changes nothing.",
    tags: ['provisioning'],
    auth: 'write',
    params: organizationPath,
    body: z.strictObject({
      userIds: ids('user').describe('1 to 100 user ids'),
      organizationRoleIds: ids('organization role', 0).optional().describe('Up to 100 organization role ids to give each of the users'),
    }),
    success: {
      status: 201,
      description: 'The users are members holding the roles (already in the copy)',
      schema: z.object({ organizationId: z.string(), userIds: z.array(z.string()), organizationRoleIds: z.array(z.string()) }),
    },
    errors: logtoErrors,
    handler: async ({ deps, params, body, principal }) =>
      deps.actions.provision.addMembers(params.id, body.userIds, body.organizationRoleIds ?? [], actorOf(principal)),
  }),
  defineRoute({
    method: 'put',
    path: '/v1/organizations/:id/members/:userId',
    operationId: 'putOrganizationMember',
    summary: 'Make a user a member of an organization in Logto',
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath,
    success: {
      status: 201,
      description: 'The user was added and is now a member',
      schema: memberSchema,
      also: { status: 200, description: 'The user already was a member; nothing changed' },
    },
    errors: logtoErrors,
    handler: async ({ deps, params, principal, res }) => {
      const outcome = await deps.actions.provision.addMember(params.id, params.userId, actorOf(principal));
      unchanged(res, outcome.created);
      return outcome.member;
    },
  }),
  defineRoute({
    method: 'delete',
    path: '/v1/organizations/:id/members/:userId',
    operationId: 'removeOrganizationMember',
    summary: 'Remove a user from an organization in Logto (with their roles there)',
    description: 'Also 204 when the user was not a member. 404 only when the organization or the user does not exist.',
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath,
    success: { status: 204, description: 'The user is not a member (any more)' },
    errors: logtoErrors,
    handler: async ({ deps, params, principal }) => {
      await deps.actions.provision.removeMember(params.id, params.userId, actorOf(principal));
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/organizations/:id/members/:userId/roles',
    operationId: 'grantOrganizationMemberRoles',
    summary: 'Grant organization roles to a member in Logto',
    description: 'Roles the member holds stay. 409 when the user is not a member.',
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath,
    body: z.strictObject({ organizationRoleIds: ids('organization role').describe('1 to 100 organization role ids') }),
    success: {
      status: 201,
      description: 'The member holds the roles (already in the copy)',
      schema: memberSchema.extend({ organizationRoleIds: z.array(z.string()).describe('The roles granted by this request') }),
    },
    errors: logtoErrors,
    handler: async ({ deps, params, body, principal }) => {
      const member = await deps.actions.provision.grantRoles(params.id, params.userId, body.organizationRoleIds, actorOf(principal));
      return { ...member, organizationRoleIds: body.organizationRoleIds };
    },
  }),
  defineRoute({
    method: 'put',
    path: '/v1/organizations/:id/members/:userId/roles',
    operationId: 'setOrganizationMemberRoles',
    summary: "Set a member's organization roles to exactly this list in Logto",
    description: 'Roles not listed are revoked; an empty list revokes all. 409 when the user is not a member, unless addMember=true.',
    tags: ['provisioning'],
    auth: 'write',
    params: memberPath,
    query: addMemberQuery,
    body: z.strictObject({ organizationRoleIds: ids('organization role', 0).describe('0 to 100 organization role ids') }),
    success: { status: 200, description: 'The member holds exactly these roles (already in the copy)', schema: memberSchema },
    errors: logtoErrors,
    handler: async ({ deps, params, query, body, principal }) =>
      deps.actions.provision.setRoles(params.id, params.userId, body.organizationRoleIds, { addMember: query.addMember }, actorOf(principal)),
  }),
  defineRoute({
    method: 'put',
    path: '/v1/organizations/:id/members/:userId/roles/:roleId',
    operationId: 'putOrganizationMemberRole',
    summary: 'Grant one organization role to a member in Logto',
    description: '409 when the user is not a member, unless addMember=true, which adds the membership first.',
    tags: ['provisioning'],
    auth: 'write',
    params: memberRolePath,
    query: addMemberQuery,
    success: {
      status: 201,
      description: 'The role was granted now',
      schema: memberSchema,
      also: { status: 200, description: 'The member already held the role; nothing changed' },
    },
    errors: logtoErrors,
    handler: async ({ deps, params, query, principal, res }) => {
      const outcome = await deps.actions.provision.grantRole(
        params.id,
        params.userId,
        params.roleId,
        { addMember: query.addMember },
        actorOf(principal),
      );
      unchanged(res, outcome.created);
      return outcome.member;
    },
  }),
  defineRoute({
    method: 'delete',
    path: '/v1/organizations/:id/members/:userId/roles/:roleId',
    operationId: 'revokeOrganizationMemberRole',
    summary: 'Revoke an organization role from a member in Logto',
    description: 'Also 204 when the role was not held or the user is not a member. 404 only when the organization, user or role does not exist.',
    tags: ['provisioning'],
    auth: 'write',
    params: memberRolePath,
    success: { status: 204, description: 'The user does not hold the role (any more)' },
    errors: logtoErrors,
    handler: async ({ deps, params, principal }) => {
      await deps.actions.provision.revokeRole(params.id, params.userId, params.roleId, actorOf(principal));
    },
  }),
];
