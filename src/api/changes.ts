import { z } from 'zod';
import { accessChangeKinds, accessChangeSources, listAccessChanges, type AccessChange } from '../db/queries/changes.js';
import { listUserGrantIntervals } from '../db/queries/history.js';
import { encodeCursor } from '../db/queries/pagination.js';
import { notFound } from '../errors.js';
import { invalidParams } from './problem.js';
import { defineRoute } from './route.js';
import { idParam, instantParam, isoDateTime, isoOrNull, listOf, numberKey, pageQuery } from './schemas.js';

const accessChangeSchema = z.object({
  id: z.number().int(),
  at: isoDateTime.describe('When the change was recorded'),
  observedAt: isoDateTime.describe('When the information behind the change was true in Logto'),
  kind: z.string().describe(`One of ${accessChangeKinds.join(', ')}`),
  source: z.enum(accessChangeSources),
  actor: z.string().nullable().describe('For provisioning: the API key that made the change'),
  userId: z.string().nullable(),
  organizationId: z.string().nullable(),
  organizationRoleId: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).nullable(),
  syncRunId: z.number().int().nullable(),
  deliveryId: z.number().int().nullable(),
});

const toAccessChange = (change: AccessChange): z.infer<typeof accessChangeSchema> => ({
  id: change.id,
  at: change.at.toISOString(),
  observedAt: change.observedAt.toISOString(),
  kind: change.kind,
  source: change.source as z.infer<typeof accessChangeSchema>['source'],
  actor: change.actor,
  userId: change.userId,
  organizationId: change.organizationId,
  organizationRoleId: change.organizationRoleId,
  details: change.details,
  syncRunId: change.syncRunId,
  deliveryId: change.deliveryId,
});

const grantIntervalSchema = z.object({
  organizationId: z.string(),
  organizationRoleId: z.string().nullable().describe('Null for the membership itself'),
  grantedAt: isoDateTime.nullable().describe('Null when the log holds the end of the grant but not its beginning'),
  revokedAt: isoDateTime.nullable().describe('Null while the grant lasts'),
  grantedBy: z.enum(accessChangeSources).nullable(),
  revokedBy: z.enum(accessChangeSources).nullable(),
});

type Source = (typeof accessChangeSources)[number];

export const changeRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/changes',
    operationId: 'listAccessChanges',
    summary: 'The access change log, newest first',
    description: 'One row per grant, revoke and user or definition change, with its source. `since`/`until` apply to `at`.',
    tags: ['history'],
    auth: 'read',
    query: z.strictObject({
      userId: idParam('user').optional().describe('Only changes about this user'),
      organizationId: idParam('organization').optional().describe('Only changes about this organization'),
      since: instantParam('Only changes recorded at or after this time'),
      until: instantParam('Only changes recorded before this time'),
      source: z
        .enum(accessChangeSources, { error: `must be one of ${accessChangeSources.join(', ')}` })
        .optional()
        .describe('Only changes from this source'),
      ...pageQuery(numberKey),
    }),
    success: { status: 200, description: 'A page of changes', schema: listOf(accessChangeSchema) },
    handler: async ({ deps, query }) => {
      if (query.since && query.until && query.since.getTime() >= query.until.getTime()) {
        throw invalidParams([{ name: 'until', reason: 'must be later than since' }]);
      }
      const page = await listAccessChanges(
        deps.db,
        {
          userId: query.userId,
          organizationId: query.organizationId,
          since: query.since,
          until: query.until,
          source: query.source,
        },
        { limit: query.limit, after: query.cursor },
      );
      return { data: page.rows.map(toAccessChange), nextCursor: page.next && encodeCursor(page.next) };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/users/:id/history',
    operationId: 'listUserGrantHistory',
    summary: "When each of a user's memberships and roles began and ended",
    description:
      'Intervals paired from the change log (member.added/removed, member_role.granted/revoked), oldest first. ' +
      'Works for deleted users as long as their history exists.',
    tags: ['history', 'users'],
    auth: 'read',
    params: z.object({ id: idParam('user') }),
    query: z.strictObject(pageQuery(numberKey)),
    success: { status: 200, description: 'A page of grant intervals', schema: listOf(grantIntervalSchema) },
    errors: [404],
    handler: async ({ deps, params, query }) => {
      const page = await listUserGrantIntervals(deps.db, params.id, { limit: query.limit, after: query.cursor });
      if (!page) throw notFound('User', params.id);
      return {
        data: page.rows.map((interval) => ({
          organizationId: interval.organizationId,
          organizationRoleId: interval.organizationRoleId,
          grantedAt: isoOrNull(interval.grantedAt),
          revokedAt: isoOrNull(interval.revokedAt),
          grantedBy: interval.grantedBy as Source | null,
          revokedBy: interval.revokedBy as Source | null,
        })),
        nextCursor: page.next && encodeCursor(page.next),
      };
    },
  }),
];
