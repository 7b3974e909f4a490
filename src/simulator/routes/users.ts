import express, { type Router } from 'express';
import { z } from 'zod';
import type { UserRecord } from '../entities.js';
import { toOrganizationResponse, toRoleReference, toUserInfo, toUserResponse } from '../entities.js';
import { LogtoApiError } from '../errors.js';
import { type ApiDependencies, hookContext, jsonObject, param, parseBody, respond } from '../http.js';
import { parsePagination, queryOf, sendPage } from '../pagination.js';
import { managementApiPayload } from '../payloads.js';
import { buildUserFilter, exactIdLookup, parseUserSearch } from '../search.js';

// Logto's identifier formats (`@logto/core-kit` regexes).
const usernamePattern = /^[A-Z_a-z]\w*$/;
const emailPattern = /^\S+@\S+\.\S+$/;
const phonePattern = /^\d+$/;

const passwordAlgorithms = ['Argon2i', 'Argon2id', 'Argon2d', 'SHA1', 'SHA256', 'MD5', 'Bcrypt', 'Legacy'] as const;

const avatar = z.union([z.url(), z.literal('')]).nullable();

const createUserBody = z.object({
  primaryPhone: z.string().regex(phonePattern).optional(),
  primaryEmail: z.string().regex(emailPattern).optional(),
  username: z.string().regex(usernamePattern).optional(),
  password: z.string().min(1).optional(),
  passwordDigest: z.string().optional(),
  passwordAlgorithm: z.enum(passwordAlgorithms).optional(),
  name: z.string().optional(),
  avatar: avatar.optional(),
  customData: jsonObject.optional(),
  profile: jsonObject.optional(),
});

const nullableOrEmpty = (schema: z.ZodString) => z.union([schema, z.literal('')]).nullable().optional();

const updateUserBody = z.object({
  username: nullableOrEmpty(z.string().regex(usernamePattern)),
  primaryEmail: nullableOrEmpty(z.string().regex(emailPattern)),
  primaryPhone: nullableOrEmpty(z.string().regex(phonePattern)),
  name: z.string().nullable().optional(),
  avatar: avatar.optional(),
  customData: jsonObject.optional(),
  profile: jsonObject.optional(),
});

/** `/users` routes: `packages/core/src/routes/admin-user/{basics,search,organization}.ts`. */
export const createUserRoutes = (dependencies: ApiDependencies): Router => {
  const { state } = dependencies;
  const router = express.Router();

  router.get('/users', (request, response) => {
    const query = queryOf(request);
    const pagination = parsePagination(query);
    const excludeOrganizationId = query.get('excludeOrganizationId') ?? undefined;
    if (excludeOrganizationId !== undefined && query.has('excludeRoleId')) {
      throw new LogtoApiError(400, 'request.invalid_input', {
        interpolation: { details: '`excludeRoleId` and `excludeOrganizationId` cannot be used at the same time.' },
      });
    }
    const search = parseUserSearch(query);
    let users: readonly Readonly<UserRecord>[];
    const ids = exactIdLookup(search);
    if (ids) {
      // The batch-by-id form: a set lookup instead of evaluating the generic matcher per user.
      const wanted = new Set(ids);
      users = state.listUsers().filter((user) => wanted.has(user.id));
    } else {
      const filter = buildUserFilter(search);
      users = filter ? state.listUsers().filter(filter) : state.listUsers();
    }
    if (excludeOrganizationId !== undefined) {
      users = users.filter((user) => !state.isMember(excludeOrganizationId, user.id));
    }
    sendPage(request, response, pagination, users, toUserResponse);
  });

  router.get('/users/:userId', (request, response) => {
    response.json(toUserResponse(state.requireUser(param(request, 'userId'))));
  });

  router.post('/users', (request, response) => {
    const body = parseBody(request, createUserBody);
    if (body.password !== undefined && body.passwordDigest !== undefined) {
      throw new LogtoApiError(400, 'user.password_and_digest');
    }
    if (body.passwordDigest !== undefined && body.passwordAlgorithm === undefined) {
      throw new LogtoApiError(400, 'user.password_algorithm_required');
    }
    const user = state.createUser({
      username: body.username ?? null,
      primaryEmail: body.primaryEmail ?? null,
      primaryPhone: body.primaryPhone ?? null,
      name: body.name ?? null,
      avatar: body.avatar ?? null,
      customData: body.customData ?? {},
      profile: body.profile ?? {},
      // The password itself is never kept: only whether the user has one.
      hasPassword: body.password !== undefined || body.passwordDigest !== undefined,
    });
    const result = toUserResponse(user);
    // 200, not 201: Logto's POST /users answers 200.
    respond(dependencies, response, 200, result, [
      managementApiPayload('User.Created', hookContext(request, 200, '/users', {}), { data: result }),
    ]);
  });

  router.patch('/users/:userId', (request, response) => {
    const userId = param(request, 'userId');
    // koaGuard validates the body before the handler looks the user up.
    const body = parseBody(request, updateUserBody);
    state.requireUser(userId);
    const user = state.updateUser(userId, body);
    const result = toUserResponse(user);
    respond(dependencies, response, 200, result, [
      managementApiPayload('User.Data.Updated', hookContext(request, 200, '/users/:userId', { userId }), { data: result }),
    ]);
  });

  router.patch('/users/:userId/custom-data', (request, response) => {
    const userId = param(request, 'userId');
    const { customData } = parseBody(request, z.object({ customData: jsonObject }));
    const result = structuredClone(state.mergeUserCustomData(userId, customData).customData);
    // The event's data is the route's response: the customData object only.
    respond(dependencies, response, 200, result, [
      managementApiPayload('User.Data.Updated', hookContext(request, 200, '/users/:userId/custom-data', { userId }), {
        data: result,
      }),
    ]);
  });

  router.patch('/users/:userId/profile', (request, response) => {
    const userId = param(request, 'userId');
    const { profile } = parseBody(request, z.object({ profile: jsonObject }));
    const result = structuredClone(state.mergeUserProfile(userId, profile).profile);
    respond(dependencies, response, 200, result, [
      managementApiPayload('User.Data.Updated', hookContext(request, 200, '/users/:userId/profile', { userId }), {
        data: result,
      }),
    ]);
  });

  router.patch('/users/:userId/is-suspended', (request, response) => {
    const userId = param(request, 'userId');
    const { isSuspended } = parseBody(request, z.object({ isSuspended: z.boolean() }));
    const result = toUserResponse(state.setUserSuspended(userId, isSuspended));
    respond(dependencies, response, 200, result, [
      managementApiPayload(
        'User.SuspensionStatus.Updated',
        hookContext(request, 200, '/users/:userId/is-suspended', { userId }),
        { data: result },
      ),
    ]);
  });

  router.delete('/users/:userId', (request, response) => {
    const userId = param(request, 'userId');
    // Memberships and member roles go by cascade, with no membership event (as in the capture).
    const deleted = toUserInfo(state.deleteUser(userId));
    respond(dependencies, response, 204, undefined, [
      managementApiPayload('User.Deleted', hookContext(request, 204, '/users/:userId', { userId }), {
        data: deleted,
        dataFirst: true,
      }),
    ]);
  });

  router.get('/users/:userId/organizations', (request, response) => {
    const userId = param(request, 'userId');
    state.requireUser(userId);
    const organizations = state.listUserOrganizationIds(userId).flatMap((organizationId) => {
      const organization = state.getOrganization(organizationId);
      if (!organization) return [];
      return [
        {
          ...toOrganizationResponse(organization),
          organizationRoles: state.getMemberRoles(organizationId, userId).map(toRoleReference),
        },
      ];
    });
    response.json(organizations);
  });

  return router;
};
