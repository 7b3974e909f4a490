import { z } from 'zod';
import { encodeCursor } from '../db/queries/pagination.js';
import { findUserJson, listUserOrganizationsJson, listUsers } from '../db/queries/users.js';
import { notFound } from '../errors.js';
import { defineRoute, JsonText } from './route.js';
import {
  booleanParam,
  idParam,
  listOf,
  pageQuery,
  searchParam,
  stringKey,
  toUser,
  userOrganizationSchema,
  userSchema,
} from './schemas.js';

const userDetailSchema = userSchema.extend({
  organizations: z.array(userOrganizationSchema).describe("Every organization the user belongs to, with the user's roles there"),
});

export const userRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/users',
    operationId: 'listUsers',
    summary: 'List users',
    description: 'Users ordered by id. Filters combine with AND.',
    tags: ['users'],
    auth: 'read',
    query: z.strictObject({
      search: searchParam('username, primaryEmail and name'),
      isSuspended: booleanParam('Only suspended (true) or only active (false) users'),
      organizationId: idParam('organization').optional().describe('Only members of this organization'),
      ...pageQuery(stringKey),
    }),
    success: { status: 200, description: 'A page of users', schema: listOf(userSchema) },
    handler: async ({ deps, query }) => {
      const page = await listUsers(
        deps.db,
        { search: query.search, isSuspended: query.isSuspended, organizationId: query.organizationId },
        { limit: query.limit, after: query.cursor },
      );
      return { data: page.rows.map(toUser), nextCursor: page.next && encodeCursor(page.next) };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/users/:id',
    operationId: 'getUser',
    summary: 'Get a user with their organizations and roles',
    tags: ['users'],
    auth: 'read',
    params: z.object({ id: idParam('user') }),
    success: { status: 200, description: 'The user', schema: userDetailSchema },
    errors: [404],
    handler: async ({ deps, params }) => {
      const user = await findUserJson(deps.db, params.id);
      if (user === null) throw notFound('User', params.id);
      return new JsonText(user);
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/users/:id/organizations',
    operationId: 'listUserOrganizations',
    summary: "List a user's organizations, with the user's roles there and since when",
    tags: ['users'],
    auth: 'read',
    params: z.object({ id: idParam('user') }),
    query: z.strictObject(pageQuery(stringKey)),
    success: { status: 200, description: 'A page of organizations, ordered by id', schema: listOf(userOrganizationSchema) },
    errors: [404],
    handler: async ({ deps, params, query }) => {
      const page = await listUserOrganizationsJson(deps.db, params.id, { limit: query.limit, after: query.cursor });
      if (page === null) throw notFound('User', params.id);
      return new JsonText(page);
    },
  }),
];
