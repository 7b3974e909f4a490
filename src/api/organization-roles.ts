import { z } from 'zod';
import { listOrganizationRoleMembersJson, listOrganizationRoles } from '../db/queries/organization-roles.js';
import { encodeCursor } from '../db/queries/pagination.js';
import { notFound } from '../errors.js';
import { defineRoute, JsonText } from './route.js';
import {
  idParam,
  isoDateTime,
  listOf,
  organizationRefSchema,
  organizationRoleSchema,
  pageQuery,
  searchParam,
  stringKey,
  textKey,
  userSchema,
} from './schemas.js';

const roleMemberSchema = userSchema.extend({
  organization: organizationRefSchema.describe('The organization in which the user holds the role'),
  since: isoDateTime.describe('When the user was first seen holding the role there'),
  memberSince: isoDateTime.describe('When the user was first seen as a member of that organization'),
});

export const organizationRoleRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/organization-roles',
    operationId: 'listOrganizationRoles',
    summary: 'List organization roles (the tenant-wide organization template)',
    tags: ['organization roles'],
    auth: 'read',
    query: z.strictObject({ search: searchParam('name and description'), ...pageQuery(stringKey) }),
    success: { status: 200, description: 'A page of organization roles, ordered by id', schema: listOf(organizationRoleSchema) },
    handler: async ({ deps, query }) => {
      const page = await listOrganizationRoles(deps.db, { search: query.search }, { limit: query.limit, after: query.cursor });
      return { data: page.rows, nextCursor: page.next && encodeCursor(page.next) };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/organization-roles/:id/members',
    operationId: 'listOrganizationRoleMembers',
    summary: 'List every organization member holding a role, in every organization',
    tags: ['organization roles'],
    auth: 'read',
    params: z.object({ id: idParam('organization role') }),
    query: z.strictObject(pageQuery(z.tuple([textKey(), textKey()]))),
    success: {
      status: 200,
      description: 'A page of (member, organization) pairs, ordered by organization id then user id',
      schema: listOf(roleMemberSchema),
    },
    errors: [404],
    handler: async ({ deps, params, query }) => {
      const page = await listOrganizationRoleMembersJson(deps.db, params.id, { limit: query.limit, after: query.cursor });
      if (page === null) throw notFound('Organization role', params.id);
      return new JsonText(page);
    },
  }),
];
