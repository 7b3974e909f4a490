import { z } from 'zod';
import { findAccess } from '../db/queries/access.js';
import { defineRoute } from './route.js';
import { idParam, isoDateTime, nulMessage, roleRefSchema, toRoleRef, typeError, withoutNul } from './schemas.js';

const accessSchema = z.object({
  member: z.boolean().describe('Whether the user is a member of the organization (as stored; false for an unknown user)'),
  organizationRoles: z.array(roleRefSchema).describe('The roles the user holds in the organization'),
  since: isoDateTime.nullable().describe('When the membership was first seen; null when not a member'),
  isSuspended: z
    .boolean()
    .describe('True when the user is suspended in Logto: `member` is reported as stored, so deny on this flag'),
  hasRole: z.boolean().optional().describe('Only when `role` was given: whether the user holds it (matched by id or name)'),
  asOf: isoDateTime
    .nullable()
    .describe('The time up to which this answer is known to follow Logto (as X-Access-State-As-Of); null before the first full sync'),
});

export const accessRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/access',
    operationId: 'checkAccess',
    summary: 'Does this user have access to this organization, with which roles, since when?',
    description:
      'The call to make before letting someone in: one indexed query. An unknown user is not a member (no 404). ' +
      'A suspended user keeps `member` as stored, with `isSuspended: true`; callers should deny.',
    tags: ['access'],
    auth: 'read',
    query: z.strictObject({
      userId: idParam('user'),
      organizationId: idParam('organization'),
      role: z
        .string({ error: typeError('must be given once') })
        .min(1, 'must not be empty')
        .refine(withoutNul, nulMessage)
        .max(256, 'must be at most 256 characters')
        .optional()
        .describe('An organization role id or name: adds `hasRole` to the answer'),
    }),
    success: { status: 200, description: 'The access of the user in the organization', schema: accessSchema },
    handler: async ({ deps, query, asOf }) => {
      const access = await findAccess(deps.db, query.userId, query.organizationId);
      const organizationRoles = access.organizationRoles.map(toRoleRef);
      return {
        member: access.member,
        organizationRoles,
        since: access.since ? access.since.toISOString() : null,
        isSuspended: access.isSuspended,
        ...(query.role !== undefined
          ? { hasRole: organizationRoles.some((role) => role.id === query.role || role.name === query.role) }
          : {}),
        asOf: asOf ? asOf.toISOString() : null,
      };
    },
  }),
];
