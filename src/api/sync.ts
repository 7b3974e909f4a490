import { z } from 'zod';
import { encodeCursor } from '../db/queries/pagination.js';
import { findSyncRun, getSyncStatus, listSyncRuns, syncRunKinds, syncRunStatuses, type SyncRun } from '../db/queries/sync.js';
import { notFound } from '../errors.js';
import { defineRoute } from './route.js';
import { isoDateTime, isoOrNull, listOf, numberKey, pageQuery, serialParam } from './schemas.js';

const syncRunSchema = z.object({
  id: z.number().int(),
  kind: z.string().describe('baseline, reconcile or sweep'),
  trigger: z.string().describe('What started it: start, cli, api, cron, schedule'),
  status: z.string().describe('running, succeeded or failed'),
  startedAt: isoDateTime,
  finishedAt: isoDateTime.nullable(),
  counts: z.record(z.string(), z.number()),
  error: z.string().nullable(),
  organizationsAvailable: z.boolean().nullable().describe("Whether the tenant's organizations feature answered"),
  notes: z.string().nullable(),
  drift: z
    .record(z.string(), z.number())
    .nullable()
    .describe('Drift found and repaired, by kind (missing, extra, stale, role_missing, role_extra); null for runs without a report'),
});

const syncRunDetailSchema = syncRunSchema.extend({
  report: z.record(z.string(), z.unknown()).nullable().describe('The drift the run found, and what it did about it'),
});

const toSyncRun = (run: SyncRun): z.infer<typeof syncRunSchema> => ({
  id: run.id,
  kind: run.kind,
  trigger: run.trigger,
  status: run.status,
  startedAt: run.startedAt.toISOString(),
  finishedAt: isoOrNull(run.finishedAt),
  counts: run.counts,
  error: run.error,
  organizationsAvailable: run.organizationsAvailable,
  notes: run.notes,
  drift: run.drift,
});

const syncStatusSchema = z.object({
  accessStateAsOf: isoDateTime.nullable().describe('As X-Access-State-As-Of; null before the first successful full sync'),
  lastFullSync: syncRunSchema.nullable().describe('The latest baseline run, whatever its outcome'),
  lastReconcile: syncRunSchema.nullable().describe('The latest reconcile run, whatever its outcome'),
  lastSweep: syncRunSchema.nullable().describe('The latest role sweep run'),
  lastSuccessfulFullSync: syncRunSchema.nullable().describe('The latest baseline or reconcile that succeeded'),
  nextReconcileAt: isoDateTime.nullable().describe('When the scheduled reconcile runs next (null when not scheduled in this process)'),
  webhooks: z.object({
    lastAppliedAt: isoDateTime.nullable().describe('When the latest delivery was applied'),
    inboxDepth: z.number().int().describe('Deliveries pending or being processed'),
    oldestPendingReceivedAt: isoDateTime.nullable(),
    deadLetters: z.number().int(),
  }),
  roleSweep: z
    .object({ position: z.record(z.string(), z.unknown()), updatedAt: isoDateTime })
    .nullable()
    .describe('Where the role sweep stands (sync_state "role_sweep")'),
  organizations: z.object({
    available: z.boolean().nullable().describe('Whether the organizations feature answered on the latest run that checked'),
    notes: z.string().nullable(),
    runId: z.number().int().nullable(),
  }),
});

export const syncRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/sync/status',
    operationId: 'getSyncStatus',
    summary: 'How current the copy is: full syncs, reconciles, webhooks, inbox, role sweep',
    tags: ['sync'],
    auth: 'read',
    success: { status: 200, description: 'The sync status', schema: syncStatusSchema },
    handler: async ({ deps, asOf }) => {
      const status = await getSyncStatus(deps.db);
      const run = (value: SyncRun | null) => (value ? toSyncRun(value) : null);
      return {
        accessStateAsOf: isoOrNull(asOf),
        lastFullSync: run(status.lastFullSync),
        lastReconcile: run(status.lastReconcile),
        lastSweep: run(status.lastSweep),
        lastSuccessfulFullSync: run(status.lastSuccessfulFullSync),
        nextReconcileAt: isoOrNull(deps.actions.nextReconcileAt()),
        webhooks: {
          lastAppliedAt: isoOrNull(status.lastWebhookAppliedAt),
          inboxDepth: status.inbox.depth,
          oldestPendingReceivedAt: isoOrNull(status.inbox.oldestPendingAt),
          deadLetters: status.deadLetters,
        },
        roleSweep: status.roleSweep
          ? { position: status.roleSweep.value, updatedAt: status.roleSweep.updatedAt.toISOString() }
          : null,
        organizations: status.organizations,
      };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/sync/runs',
    operationId: 'listSyncRuns',
    summary: 'Full syncs, reconciles and role sweeps, newest first',
    tags: ['sync'],
    auth: 'read',
    query: z.strictObject({
      kind: z.enum(syncRunKinds, { error: `must be one of ${syncRunKinds.join(', ')}` }).optional(),
      status: z.enum(syncRunStatuses, { error: `must be one of ${syncRunStatuses.join(', ')}` }).optional(),
      ...pageQuery(numberKey),
    }),
    success: { status: 200, description: 'A page of runs (without reports)', schema: listOf(syncRunSchema) },
    handler: async ({ deps, query }) => {
      const page = await listSyncRuns(deps.db, { kind: query.kind, status: query.status }, { limit: query.limit, after: query.cursor });
      return { data: page.rows.map(toSyncRun), nextCursor: page.next && encodeCursor(page.next) };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/sync/runs/:id',
    operationId: 'getSyncRun',
    summary: 'One run with its report',
    tags: ['sync'],
    auth: 'read',
    params: z.object({ id: serialParam('sync run') }),
    success: { status: 200, description: 'The run', schema: syncRunDetailSchema },
    errors: [404],
    handler: async ({ deps, params }) => {
      const run = await findSyncRun(deps.db, params.id);
      if (!run) throw notFound('Sync run', String(params.id));
      return { ...toSyncRun(run), report: run.report };
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/sync/reconcile',
    operationId: 'startReconcile',
    summary: 'Start a reconcile now',
    description: 'Answers at once with the run id; follow it at /v1/sync/runs/{id}. 409 (with `runId`) while one is running.',
    tags: ['sync'],
    auth: 'write',
    success: { status: 202, description: 'The reconcile started', schema: z.object({ runId: z.number().int() }) },
    errors: [409],
    handler: async ({ deps }) => {
      const { runId } = await deps.actions.startReconcile('api');
      return { runId };
    },
  }),
];
