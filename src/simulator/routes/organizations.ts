import express, { type Router } from 'express';
import { z } from 'zod';
import type { OrganizationRecord, UserRecord } from '../entities.js';
import { toOrganizationResponse, toOrganizationRoleResponse, toRoleReference, toUserInfo } from '../entities.js';
import { limitExceeded, LogtoApiError } from '../errors.js';
import { type ApiDependencies, hookContext, jsonObject, param, parseBody, respond } from '../http.js';
import { shuffled } from '../ids.js';
import { type PageSource, parsePagination, queryOf, sendPage } from '../pagination.js';
import { managementApiPayload, membershipDelta } from '../payloads.js';
import { substringFilter } from '../search.js';

const organizationFields = {
  name: z.string().min(1),
  description: z.string().nullable().optional(),
  customData: jsonObject.optional(),
  isMfaRequired: z.boolean().optional(),
  color: jsonObject.optional(),
  branding: jsonObject.optional(),
  customCss: z.string().nullable().optional(),
};
const createOrganizationBody = z.object(organizationFields);
const updateOrganizationBody = z.object(organizationFields).partial();

const userIdsBody = z.object({ userIds: z.array(z.string().min(1)).min(1) });
const replaceUserIdsBody = z.object({ userIds: z.array(z.string().min(1)) });
const batchRolesBody = z.object({
  userIds: z.array(z.string().min(1)).min(1),
  organizationRoleIds: z.array(z.string().min(1)).min(1),
});
const memberRolesBody = z.object({
  organizationRoleIds: z.array(z.string().min(1)).optional(),
  organizationRoleNames: z.array(z.string().min(1)).optional(),
});

const memberSearchFields: ReadonlyArray<(user: Readonly<UserRecord>) => string | null> = [
  (user) => user.id,
  (user) => user.primaryEmail,
  (user) => user.primaryPhone,
  (user) => user.username,
  (user) => user.name,
];

const organizationSearchFields: ReadonlyArray<(organization: Readonly<OrganizationRecord>) => string | null> = [
  (organization) => organization.id,
  (organization) => organization.name,
];

/**
 * `/organizations` routes: `packages/core/src/routes/organization/index.ts` (SchemaRouter CRUD),
 * `user/index.ts` (members) and `user/role-relations.ts` (a member's roles; no webhooks at all).
 */
export const createOrganizationRoutes = (dependencies: ApiDependencies): Router => {
  const { state, faults } = dependencies;
  const router = express.Router();

  router.get('/organizations', (request, response) => {
    const query = queryOf(request);
    const pagination = parsePagination(query);
    const filter = substringFilter(query.get('q') ?? undefined, organizationSearchFields);
    let organizations = state.listOrganizations();
    if (filter) organizations = organizations.filter(filter);
    // No ORDER BY in Logto: PostgreSQL may return another order for every page.
    if (faults.unstableOrganizationOrder) organizations = shuffled(organizations, () => faults.random());
    const showFeatured = query.get('showFeatured') === 'true';
    sendPage(request, response, pagination, organizations, (organization) =>
      showFeatured
        ? {
            ...toOrganizationResponse(organization),
            usersCount: state.memberCount(organization.id),
            featuredUsers: state
              .listMemberIds(organization.id)
              .slice(0, 3)
              .map((userId) => state.getUser(userId))
              .filter((user): user is Readonly<UserRecord> => user !== undefined)
              .map((user) => ({ id: user.id, avatar: user.avatar, name: user.name })),
          }
        : toOrganizationResponse(organization),
    );
  });

  router.get('/organizations/:id', (request, response) => {
    response.json(toOrganizationResponse(state.requireOrganization(param(request, 'id'))));
  });

  router.post('/organizations', (request, response) => {
    const body = parseBody(request, createOrganizationBody);
    const result = toOrganizationResponse(state.createOrganization(body));
    respond(dependencies, response, 201, result, [
      managementApiPayload('Organization.Created', hookContext(request, 201, '/organizations', {}), { data: result }),
    ]);
  });

  router.patch('/organizations/:id', (request, response) => {
    const id = param(request, 'id');
    const body = parseBody(request, updateOrganizationBody);
    const result = toOrganizationResponse(state.updateOrganization(id, body));
    respond(dependencies, response, 200, result, [
      managementApiPayload('Organization.Data.Updated', hookContext(request, 200, '/organizations/:id', { id }), {
        data: result,
      }),
    ]);
  });

  router.delete('/organizations/:id', (request, response) => {
    const id = param(request, 'id');
    // Memberships and member roles go by cascade; only Organization.Deleted is sent, without data.
    state.deleteOrganization(id);
    respond(dependencies, response, 204, undefined, [
      managementApiPayload('Organization.Deleted', hookContext(request, 204, '/organizations/:id', { id })),
    ]);
  });

  // ------------------------------------------------------------ members

  router.get('/organizations/:id/users', (request, response) => {
    const id = param(request, 'id');
    const query = queryOf(request);
    const pagination = parsePagination(query);
    const filter = substringFilter(query.get('q') ?? undefined, memberSearchFields);
    const roleId = query.get('organizationRoleId') ?? undefined;
    // Logto does not check the organization: an unknown id is simply an empty list.
    const ids = state.listMemberIds(id);
    const usersOf = (userIds: readonly string[]) =>
      userIds.map((userId) => state.getUser(userId)).filter((user): user is Readonly<UserRecord> => user !== undefined);
    let members: PageSource<Readonly<UserRecord>>;
    if (filter || roleId !== undefined) {
      let matching = usersOf(ids);
      if (filter) matching = matching.filter(filter);
      if (roleId !== undefined) matching = matching.filter((user) => state.getMemberRoleIds(id, user.id).includes(roleId));
      members = matching;
    } else {
      // Every member id has its user (deleting a user ends its memberships), so the page is a slice of
      // the ids and only its own members are looked up: every page of a large organization listed all
      // of them, a fixture cost that the crawl and the sync both paid on the machine they share.
      members = { length: ids.length, slice: (start, end) => usersOf(ids.slice(start, end)) };
    }
    sendPage(request, response, pagination, members, (user) => ({
      ...toUserInfo(user),
      organizationRoles: state.getMemberRoles(id, user.id).map(toRoleReference),
    }));
  });

  /** Logto Cloud's quota guard on member additions, checked before anything is written. */
  const assertMemberQuota = (organizationId: string, memberCountAfter: number) => {
    const limit = faults.usersPerOrganizationLimit;
    if (limit !== undefined && memberCountAfter > limit && memberCountAfter > state.memberCount(organizationId)) {
      throw limitExceeded('usersPerOrganizationLimit');
    }
  };

  router.post('/organizations/:id/users', (request, response) => {
    const id = param(request, 'id');
    const { userIds } = parseBody(request, userIdsBody);
    const newcomers = new Set(userIds.filter((userId) => !state.isMember(id, userId)));
    assertMemberQuota(id, state.memberCount(id) + newcomers.size);
    const added = state.addMembers(id, userIds);
    // The response echoes the request; the event lists only the truly new members.
    respond(dependencies, response, 201, { userIds }, [
      managementApiPayload('Organization.Membership.Updated', hookContext(request, 201, '/organizations/:id/users', { id }), {
        extra: membershipDelta(id, { addedUserIds: added }),
      }),
    ]);
  });

  router.put('/organizations/:id/users', (request, response) => {
    const id = param(request, 'id');
    const { userIds } = parseBody(request, replaceUserIdsBody);
    assertMemberQuota(id, new Set(userIds).size);
    const { added, removed } = state.replaceMembers(id, userIds);
    // A no-op PUT still sends the event, with only organizationId.
    respond(dependencies, response, 204, undefined, [
      managementApiPayload('Organization.Membership.Updated', hookContext(request, 204, '/organizations/:id/users', { id }), {
        extra: membershipDelta(id, { addedUserIds: added, removedUserIds: removed }),
      }),
    ]);
  });

  router.post('/organizations/:id/users/roles', (request, response) => {
    const id = param(request, 'id');
    const { userIds, organizationRoleIds } = parseBody(request, batchRolesBody);
    state.addRolesToMembers(id, userIds, organizationRoleIds);
    // No webhook for any member-role change. Koa answers a bodiless 201 with the text "Created".
    response.sendStatus(201);
  });

  router.delete('/organizations/:id/users/:userId', (request, response) => {
    const id = param(request, 'id');
    const userId = param(request, 'userId');
    state.removeMember(id, userId);
    respond(dependencies, response, 204, undefined, [
      managementApiPayload(
        'Organization.Membership.Updated',
        hookContext(request, 204, '/organizations/:id/users/:userId', { id, userId }),
        { extra: membershipDelta(id, { removedUserIds: [userId] }) },
      ),
    ]);
  });

  // ------------------------------------------------------------ a member's roles (never a webhook)

  router.use('/organizations/:id/users/:userId/roles', (request, _response, next) => {
    // Every route below first checks membership, before looking at the body.
    if (!state.isMember(param(request, 'id'), param(request, 'userId'))) {
      throw new LogtoApiError(422, 'organization.require_membership');
    }
    next();
  });

  const resolveRoleIds = (body: z.infer<typeof memberRolesBody>): string[] => {
    const names = body.organizationRoleNames ?? [];
    const fromNames = names.map((name) => state.findOrganizationRoleByName(name));
    const missing = names.filter((_, index) => fromNames[index] === undefined);
    if (missing.length > 0) {
      throw new LogtoApiError(422, 'organization.role_names_not_found', { interpolation: { names: missing.join(', ') } });
    }
    return [...new Set([...(body.organizationRoleIds ?? []), ...fromNames.map((role) => role?.id ?? '')])];
  };

  router.get('/organizations/:id/users/:userId/roles', (request, response) => {
    const id = param(request, 'id');
    const userId = param(request, 'userId');
    const pagination = parsePagination(queryOf(request), { optional: true });
    // Logto's relation query has no ORDER BY; the capture came back in role-id order.
    const roles = state.getMemberRoles(id, userId).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    sendPage(request, response, pagination, roles, toOrganizationRoleResponse);
  });

  router.post('/organizations/:id/users/:userId/roles', (request, response) => {
    const id = param(request, 'id');
    const userId = param(request, 'userId');
    const roleIds = resolveRoleIds(parseBody(request, memberRolesBody));
    state.addMemberRoles(id, userId, roleIds);
    response.status(201).json({ organizationRoleIds: roleIds });
  });

  router.put('/organizations/:id/users/:userId/roles', (request, response) => {
    const id = param(request, 'id');
    const userId = param(request, 'userId');
    const roleIds = resolveRoleIds(parseBody(request, memberRolesBody));
    state.setMemberRoles(id, userId, roleIds);
    response.status(204).end();
  });

  router.delete('/organizations/:id/users/:userId/roles/:organizationRoleId', (request, response) => {
    state.removeMemberRole(param(request, 'id'), param(request, 'userId'), param(request, 'organizationRoleId'));
    response.status(204).end();
  });

  return router;
};
