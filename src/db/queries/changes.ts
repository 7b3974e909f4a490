import { and, desc, eq, gte, lt, type SQL } from 'drizzle-orm';
import { accessChanges } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';

export const accessChangeSources = ['baseline', 'webhook', 'reconcile', 'sweep', 'provision'] as const;
export type AccessChangeSource = (typeof accessChangeSources)[number];

export const accessChangeKinds = [
  'user.created',
  'user.updated',
  'user.suspended',
  'user.unsuspended',
  'user.deleted',
  'organization.created',
  'organization.updated',
  'organization.deleted',
  'organization_role.created',
  'organization_role.updated',
  'organization_role.deleted',
  'member.added',
  'member.removed',
  'member_role.granted',
  'member_role.revoked',
] as const;
export type AccessChangeKind = (typeof accessChangeKinds)[number];

export type AccessChange = {
  id: number;
  /** When the change was recorded. */
  at: Date;
  /** When the information behind the change was true in Logto. */
  observedAt: Date;
  kind: string;
  source: string;
  actor: string | null;
  userId: string | null;
  organizationId: string | null;
  organizationRoleId: string | null;
  details: Record<string, unknown> | null;
  syncRunId: number | null;
  deliveryId: number | null;
};

export const accessChangeColumns = {
  id: accessChanges.id,
  at: accessChanges.at,
  observedAt: accessChanges.observedAt,
  kind: accessChanges.kind,
  source: accessChanges.source,
  actor: accessChanges.actor,
  userId: accessChanges.userId,
  organizationId: accessChanges.organizationId,
  organizationRoleId: accessChanges.organizationRoleId,
  details: accessChanges.details,
  syncRunId: accessChanges.syncRunId,
  deliveryId: accessChanges.deliveryId,
};

export type AccessChangeFilters = {
  userId?: string | undefined;
  organizationId?: string | undefined;
  /** Changes at or after this time. */
  since?: Date | undefined;
  /** Changes strictly before this time. */
  until?: Date | undefined;
  source?: AccessChangeSource | undefined;
};

export type AccessChangeCursor = [id: number];

/** The change log, newest first (by id, which is the order of writing). */
export const listAccessChanges = async (
  db: Database,
  filters: AccessChangeFilters,
  page: Page<AccessChangeCursor>,
): Promise<Paged<AccessChange, AccessChangeCursor>> => {
  const conditions: (SQL | undefined)[] = [];
  if (filters.userId !== undefined) conditions.push(eq(accessChanges.userId, filters.userId));
  if (filters.organizationId !== undefined) conditions.push(eq(accessChanges.organizationId, filters.organizationId));
  if (filters.source !== undefined) conditions.push(eq(accessChanges.source, filters.source));
  if (filters.since !== undefined) conditions.push(gte(accessChanges.at, filters.since));
  if (filters.until !== undefined) conditions.push(lt(accessChanges.at, filters.until));
  if (page.after) conditions.push(lt(accessChanges.id, page.after[0]));
  const rows = await db
    .select(accessChangeColumns)
    .from(accessChanges)
    .where(and(...conditions))
    .orderBy(desc(accessChanges.id))
    .limit(fetchSize(page));
  return toPaged(rows, page, (row) => [row.id]);
};
