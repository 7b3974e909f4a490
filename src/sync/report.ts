import type { ChangeCounts, ChangeKind, ChangeRecord } from './apply/index.js';

export type DriftKind = 'missing' | 'extra' | 'stale' | 'role_missing' | 'role_extra';
export type DriftEntity = 'user' | 'organization' | 'organization_role' | 'membership' | 'member_role';

export type DriftItem = {
  kind: DriftKind;
  entity: DriftEntity;
  userId?: string;
  organizationId?: string;
  organizationRoleId?: string;
  fields?: string[];
  repair: 'created' | 'updated' | 'deleted' | 'granted' | 'revoked';
};

export type DriftReport = {
  totals: Record<DriftKind, number>;
  byEntity: Record<string, number>;
  items: DriftItem[];
  /** How many items were left out of `items` to keep the report small; totals always count everything. */
  truncated: number;
  /** Grants that ended as a consequence of another repair (a removed user takes its memberships along). */
  cascaded: number;
};

export const maxReportItems = 1000;

const drift = (change: ChangeRecord): Omit<DriftItem, 'userId' | 'organizationId' | 'organizationRoleId'> | null => {
  const fields = (change.details?.fields as string[] | undefined) ?? undefined;
  switch (change.kind) {
    case 'user.created':
      return { kind: 'missing', entity: 'user', repair: 'created' };
    case 'user.updated':
      return { kind: 'stale', entity: 'user', fields, repair: 'updated' };
    case 'user.suspended':
    case 'user.unsuspended':
      return { kind: 'stale', entity: 'user', fields: ['isSuspended'], repair: 'updated' };
    case 'user.deleted':
      return { kind: 'extra', entity: 'user', repair: 'deleted' };
    case 'organization.created':
      return { kind: 'missing', entity: 'organization', repair: 'created' };
    case 'organization.updated':
      return { kind: 'stale', entity: 'organization', fields, repair: 'updated' };
    case 'organization.deleted':
      return { kind: 'extra', entity: 'organization', repair: 'deleted' };
    case 'organization_role.created':
      return { kind: 'missing', entity: 'organization_role', repair: 'created' };
    case 'organization_role.updated':
      return { kind: 'stale', entity: 'organization_role', fields, repair: 'updated' };
    case 'organization_role.deleted':
      return { kind: 'extra', entity: 'organization_role', repair: 'deleted' };
    case 'member.added':
      return { kind: 'missing', entity: 'membership', repair: 'created' };
    case 'member.removed':
      return { kind: 'extra', entity: 'membership', repair: 'deleted' };
    case 'member_role.granted':
      return { kind: 'role_missing', entity: 'member_role', repair: 'granted' };
    case 'member_role.revoked':
      return { kind: 'role_extra', entity: 'member_role', repair: 'revoked' };
  }
};

/** Accumulates what a sync repaired into a drift report of bounded size with exact totals. */
export class DriftReporter {
  private readonly report: DriftReport = {
    totals: { missing: 0, extra: 0, stale: 0, role_missing: 0, role_extra: 0 },
    byEntity: {},
    items: [],
    truncated: 0,
    cascaded: 0,
  };

  add(changes: ChangeRecord[]): void {
    // A user whose suspension and other fields both changed is one stale user, not two drifts.
    const staleUsers = new Map<string, DriftItem>();
    // A user created suspended is one missing user; its suspension is part of the copy, not drift of its own.
    const createdUsers = new Set(changes.filter((change) => change.kind === 'user.created').map((change) => change.userId));
    for (const change of changes) {
      if ((change.kind === 'user.suspended' || change.kind === 'user.unsuspended') && createdUsers.has(change.userId)) continue;
      // A tombstone for something never stored repaired nothing.
      if (change.details?.stored === false) continue;
      if (change.details?.reason) {
        this.report.cascaded += 1;
        continue;
      }
      const found = drift(change);
      if (!found) continue;
      if (found.kind === 'stale' && found.entity === 'user' && change.userId) {
        const existing = staleUsers.get(change.userId);
        if (existing) {
          existing.fields = [...new Set([...(existing.fields ?? []), ...(found.fields ?? [])])];
          continue;
        }
      }
      this.tally(found, 1);
      const staleUser = found.kind === 'stale' && found.entity === 'user' && change.userId;
      // A baseline reports hundreds of thousands of changes: an item is built only where it is kept.
      if (!staleUser && this.report.items.length >= maxReportItems) {
        this.report.truncated += 1;
        continue;
      }
      const item: DriftItem = {
        ...found,
        ...(change.userId ? { userId: change.userId } : {}),
        ...(change.organizationId ? { organizationId: change.organizationId } : {}),
        ...(change.organizationRoleId ? { organizationRoleId: change.organizationRoleId } : {}),
      };
      if (staleUser) staleUsers.set(change.userId!, item);
      if (this.report.items.length < maxReportItems) this.report.items.push(item);
      else this.report.truncated += 1;
    }
  }

  /** Whether the report keeps no more items: what is added from now on only counts. */
  full(): boolean {
    return this.report.items.length >= maxReportItems;
  }

  /**
   * Changes known only by their kind's count (`ApplyResult.counted`), added to the totals once the report
   * is full (`full`), when an item would not have been kept anyway. Only kinds without details come
   * counted (the membership changes a page of members writes), so each counts as one drift.
   */
  addCounted(counted: ChangeCounts): void {
    for (const [kind, count] of Object.entries(counted) as [ChangeKind, number][]) {
      const found = drift({ kind });
      if (!found || count <= 0) continue;
      this.tally(found, count);
      // No item: the entities are not known (and the report had no room left for them).
      this.report.truncated += count;
    }
  }

  /** `count` drifts of one kind on one entity, in the totals and per entity. */
  private tally(found: { kind: DriftKind; entity: DriftEntity }, count: number): void {
    this.report.totals[found.kind] += count;
    const entityKey = `${found.kind}:${found.entity}`;
    this.report.byEntity[entityKey] = (this.report.byEntity[entityKey] ?? 0) + count;
  }

  total(): number {
    return Object.values(this.report.totals).reduce((sum, value) => sum + value, 0);
  }

  toJSON(): DriftReport {
    return this.report;
  }
}
