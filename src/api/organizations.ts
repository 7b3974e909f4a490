import { z } from 'zod';
import { listOrganizationMembersJson, findOrganization, listOrganizations, type OrganizationDto } from '../db/queries/organizations.js';
import { encodeCursor } from '../db/queries/pagination.js';
import { notFound } from '../errors.js';
import { invalidParams } from './problem.js';
import { defineRoute, JsonText } from './route.js';
import {
  idParam,
  iso,
  isoDateTime,
  listOf,
  nulMessage,
  organizationSchema,
  pageQuery,
  roleGrantSchema,
  searchParam,
  stringKey,
  userSchema,
  withoutNul,
} from './schemas.js';

const toOrganization = (organization: OrganizationDto): z.infer<typeof organizationSchema> => ({
  id: organization.id,
  name: organization.name,
  description: organization.description,
  customData: organization.customData,
  isMfaRequired: organization.isMfaRequired,
  createdAt: iso(organization.createdAt),
});

const organizationDetailSchema = organizationSchema.extend({
  memberCount: z.number().int().describe('How many users are members'),
});

const organizationMemberSchema = userSchema.extend({
  organizationRoles: z.array(roleGrantSchema).describe('The roles the member holds in this organization'),
  since: isoDateTime.describe('When the user was first seen as a member'),
});

export const organizationRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/organizations',
    operationId: 'listOrganizations',
    summary: 'List organizations',
    tags: ['organizations'],
    auth: 'read',
    query: z.strictObject({ search: searchParam('name and description'), ...pageQuery(stringKey) }),
    success: { status: 200, description: 'A page of organizations, ordered by id', schema: listOf(organizationSchema) },
    handler: async ({ deps, query }) => {
      const page = await listOrganizations(deps.db, { search: query.search }, { limit: query.limit, after: query.cursor });
      return { data: page.rows.map(toOrganization), nextCursor: page.next && encodeCursor(page.next) };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/organizations/:id',
    operationId: 'getOrganization',
    summary: 'Get an organization with its member count',
    tags: ['organizations'],
    auth: 'read',
    params: z.object({ id: idParam('organization') }),
    success: { status: 200, description: 'The organization', schema: organizationDetailSchema },
    errors: [404],
    handler: async ({ deps, params }) => {
      const organization = await findOrganization(deps.db, params.id);
      if (!organization) throw notFound('Organization', params.id);
      return { ...toOrganization(organization), memberCount: organization.memberCount };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/organizations/:id/members',
    operationId: 'listOrganizationMembers',
    summary: 'List the members of an organization with their roles there',
    tags: ['organizations'],
    auth: 'read',
    params: z.object({ id: idParam('organization') }),
    query: z.strictObject({
      roleId: idParam('organization role').optional().describe('Only members holding this organization role'),
      roleName: z
        .string({ error: 'must be given once' })
        .min(1, 'must not be empty')
        .refine(withoutNul, nulMessage)
        .max(256, 'must be at most 256 characters')
        .optional()
        .describe('Only members holding the organization role of this name'),
      ...pageQuery(stringKey),
    }),
    success: { status: 200, description: 'A page of members, ordered by user id', schema: listOf(organizationMemberSchema) },
    errors: [404],
    handler: async ({ deps, params, query }) => {
      if (query.roleId !== undefined && query.roleName !== undefined) {
        throw invalidParams([{ name: 'roleName', reason: 'cannot be combined with roleId' }]);
      }
      const page = await listOrganizationMembersJson(
        deps.db,
        params.id,
        { roleId: query.roleId, roleName: query.roleName },
        { limit: query.limit, after: query.cursor },
      );
      if (page === null) throw notFound('Organization', params.id);
      return new JsonText(page);
    },
  }),
];
