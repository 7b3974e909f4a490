import { and, gt, inArray, eq, sql } from 'drizzle-orm';
import { accessChanges } from '../../../db/schema.js';
import type { Database } from '../../db/client.js';
import { enqueueChangeEvents } from '../../db/outbox.js';
import { metrics } from '../../metrics.js';

export type ChangeSource = 'baseline' | 'webhook' | 'reconcile' | 'sweep' | 'provision';

export type ChangeKind =
  | 'user.created'
  | 'user.updated'
  | 'user.suspended'
  | 'user.unsuspended'
  | 'user.deleted'
  | 'organization.created'
  | 'organization.updated'
  | 'organization.deleted'
  | 'organization_role.created'
  | 'organization_role.updated'
  | 'organization_role.deleted'
  | 'member.added'
  | 'member.removed'
  | 'member_role.granted'
  | 'member_role.revoked';

/**
 * Who is writing and what they saw. `observedAt` is when the snapshot being applied was true in Logto
 * (the time its page was read, or the event's time): a snapshot never overrides a change recorded after it.
 */
export type ChangeContext = {
  source: ChangeSource;
  observedAt: Date;
  actor?: string | null;
  syncRunId?: number | null;
  deliveryId?: number | null;
};

export type ChangeRecord = {
  kind: ChangeKind;
  userId?: string | null;
  organizationId?: string | null;
  organizationRoleId?: string | null;
  details?: Record<string, unknown>;
};

export type ApplyResult = { changes: ChangeRecord[]; rowsWritten: number };

export const emptyResult = (): ApplyResult => ({ changes: [], rowsWritten: 0 });

export const mergeResults = (target: ApplyResult, source: ApplyResult): ApplyResult => {
  target.changes.push(...source.changes);
  target.rowsWritten += source.rowsWritten;
  return target;
};

const insertBatchSize = 500;

/**
 * Appends the change log rows for `changes`, and in the same transaction their events: the outbox rows of
 * matching subscriptions and the wake-up of live streams (see `enqueueChangeEvents`). Returns how many
 * rows it wrote.
 */
export const recordChanges = async (db: Database, changes: ChangeRecord[], context: ChangeContext): Promise<number> => {
  for (let start = 0; start < changes.length; start += insertBatchSize) {
    const inserted = await db.insert(accessChanges).values(
      changes.slice(start, start + insertBatchSize).map((change) => ({
        kind: change.kind,
        observedAt: context.observedAt,
        source: context.source,
        actor: context.actor ?? null,
        userId: change.userId ?? null,
        organizationId: change.organizationId ?? null,
        organizationRoleId: change.organizationRoleId ?? null,
        details: change.details ?? null,
        syncRunId: context.syncRunId ?? null,
        deliveryId: context.deliveryId ?? null,
      })),
    ).returning({ id: accessChanges.id });
    await enqueueChangeEvents(db, inserted.map((row) => row.id));
  }
  for (const change of changes) metrics.accessChanges.inc({ source: context.source, kind: change.kind });
  return changes.length;
};

/**
 * Changes of `kinds` recorded after `since`, for the given entity keys: what a snapshot observed at
 * `since` must not undo. Keys are `userId`, `organizationId`, `organizationId:userId` or
 * `organizationId:userId:organizationRoleId` according to `key`.
 */
export const changedSince = async (
  db: Database,
  kinds: ChangeKind[],
  since: Date,
  scope: { organizationId?: string; userIds?: string[]; organizationIds?: string[]; organizationRoleIds?: string[] },
): Promise<ChangeRecord[]> => {
  const lists = [scope.userIds, scope.organizationIds, scope.organizationRoleIds];
  if (lists.some((list) => list !== undefined && list.length === 0)) return [];
  const filters = [inArray(accessChanges.kind, kinds), gt(accessChanges.observedAt, since)];
  if (scope.organizationId) filters.push(eq(accessChanges.organizationId, scope.organizationId));
  if (scope.userIds) filters.push(inArray(accessChanges.userId, scope.userIds));
  if (scope.organizationIds)
    filters.push(inArray(accessChanges.organizationId, scope.organizationIds));
  if (scope.organizationRoleIds)
    filters.push(
      inArray(accessChanges.organizationRoleId, scope.organizationRoleIds),
    );
  const found = await db
    .select({
      kind: accessChanges.kind,
      userId: accessChanges.userId,
      organizationId: accessChanges.organizationId,
      organizationRoleId: accessChanges.organizationRoleId,
    })
    .from(accessChanges)
    .where(and(...filters))
    .orderBy(sql`${accessChanges.id}`);
  return found.map((row) => ({ ...row, kind: row.kind as ChangeKind }));
};

/**
 * The transaction every apply function writes in. Crawls (baseline, reconcile, sweep) commit without
 * waiting for the WAL flush: a crash can lose only the last moments of a run that is then marked failed
 * and repaired by the next one, and any later synchronous commit (a webhook's) flushes them anyway.
 * That removes one disk flush per page, which dominates a baseline on small machines.
 */
export const applyTransaction = <T>(db: Database, context: ChangeContext, fn: (tx: Database) => Promise<T>): Promise<T> =>
  db.transaction(async (tx) => {
    if (context.source === 'baseline' || context.source === 'reconcile' || context.source === 'sweep') {
      await tx.execute(sql`set local synchronous_commit = off`);
    }
    return fn(tx);
  });

/**
 * Of `ids` that a deletion found nothing stored for, those without a deletion on record yet. Recording one
 * (a tombstone) keeps a creation observed before the deletion, but processed after it, from resurrecting
 * the entity; recording it once keeps a repeated deletion free of effects.
 */
export const newTombstones = async (
  db: Database,
  kind: 'user.deleted' | 'organization.deleted' | 'organization_role.deleted',
  scope: 'userIds' | 'organizationIds' | 'organizationRoleIds',
  ids: string[],
): Promise<string[]> => {
  if (ids.length === 0) return [];
  const key = scope === 'userIds' ? 'userId' : scope === 'organizationIds' ? 'organizationId' : 'organizationRoleId';
  const recorded = new Set((await changedSince(db, [kind], new Date(0), { [scope]: ids })).map((change) => change[key]));
  return ids.filter((id) => !recorded.has(id));
};
