import {
  applyOrganizations,
  mergeResults,
  removeOrganizations,
} from '../apply/index.js';
import { organizationExists } from '../../db/queries/organizations.js';
import type { SyncDeps } from '../context.js';
import { syncOrganizationMembers, type OrganizationMembersResult } from '../organization-members.js';
import type { BaseContext } from './common.js';

export type OrganizationRefreshResult = OrganizationMembersResult & {
  /** False when Logto does not have the organization (nothing was re-read; a stored copy was removed). */
  organizationFound: boolean;
};

const emptyRefresh = (organizationFound: boolean): OrganizationRefreshResult => ({
  changes: [],
  rowsWritten: 0,
  membersChecked: 0,
  memberRolesChecked: 0,
  organizationFound,
});

/**
 * Makes one organization's members and member roles equal to Logto's (`syncOrganizationMembers`). An
 * organization the database does not know is fetched first (none in Logto: nothing to do). An empty
 * member list may mean the organization is gone: that is checked, and a gone organization is removed.
 */
export const refreshOrganizationMembers = async (
  deps: SyncDeps,
  organizationId: string,
  base: BaseContext,
): Promise<OrganizationRefreshResult> => {
  const db = deps.database.db;
  if (!(await organizationExists(db, organizationId))) {
    const observedAt = new Date();
    const organization = await deps.logto.getOrganization(organizationId);
    if (!organization) return emptyRefresh(false);
    await applyOrganizations(db, [organization], { ...base, observedAt });
  }
  const result: OrganizationRefreshResult = { ...(await syncOrganizationMembers(deps, organizationId, base)), organizationFound: true };
  if (result.membersChecked === 0) {
    // Logto lists an unknown organization's members as an empty list, not a 404.
    const observedAt = new Date();
    if ((await deps.logto.getOrganization(organizationId)) === null) {
      mergeResults(result, await removeOrganizations(db, [organizationId], { ...base, observedAt }));
      result.organizationFound = false;
    }
  }
  return result;
};

export type OrganizationResync = {
  /**
   * Re-reads the organization's members with their roles. Requests close together are coalesced: one
   * made while a re-read is queued joins it; one made while a re-read is in flight schedules exactly one
   * more after it (the one in flight may have read the list before the change that prompted the request).
   * The promise settles when a re-read that started after the request has finished.
   */
  request(organizationId: string, base: BaseContext): Promise<OrganizationRefreshResult>;
  /** Re-reads started so far (for tests and metrics). */
  started(): number;
};

type Slot = {
  inFlight: Promise<OrganizationRefreshResult> | null;
  queued: Promise<OrganizationRefreshResult> | null;
};

/** The in-process coalescer of member re-reads, one per process (the inbox worker's handlers hold it). */
export const createOrganizationResync = (
  deps: SyncDeps,
  refresh: typeof refreshOrganizationMembers = refreshOrganizationMembers,
): OrganizationResync => {
  const slots = new Map<string, Slot>();
  let started = 0;

  const start = (organizationId: string, slot: Slot, base: BaseContext): Promise<OrganizationRefreshResult> => {
    started += 1;
    const run: Promise<OrganizationRefreshResult> = refresh(deps, organizationId, base).finally(() => {
      if (slot.inFlight === run) slot.inFlight = null;
      if (!slot.inFlight && !slot.queued && slots.get(organizationId) === slot) slots.delete(organizationId);
    });
    slot.inFlight = run;
    return run;
  };

  return {
    request(organizationId, base) {
      let slot = slots.get(organizationId);
      if (!slot) {
        slot = { inFlight: null, queued: null };
        slots.set(organizationId, slot);
      }
      if (slot.queued) return slot.queued;
      if (slot.inFlight) {
        const current = slot;
        const next = slot.inFlight
          .catch(() => undefined)
          .then(() => {
            current.queued = null;
            return start(organizationId, current, base);
          });
        slot.queued = next;
        return next;
      }
      return start(organizationId, slot, base);
    },
    started: () => started,
  };
};
