import {
  applyOrganizations,
  mergeResults,
  removeOrganizations,
} from '../apply/index.js';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { organizationExists } from '../../db/queries/organizations.js';
import {
  claimOrganizationResync,
  extendOrganizationResync,
  finishOrganizationResync,
  organizationResyncServed,
  releaseOrganizationResync,
  requestOrganizationResync,
} from '../../db/organization-resyncs.js';
import type { SyncDeps } from '../context.js';
import { syncOrganizationMembers, type OrganizationMembersResult } from '../organization-members.js';
import type { BaseContext } from './common.js';
import type { MembershipDeltas } from './membership-deltas.js';

export type OrganizationRefreshResult = OrganizationMembersResult & {
  /** False when Logto does not have the organization (nothing was re-read; a stored copy was removed). */
  organizationFound: boolean;
  /** True when another replica's re-read served the request (the counts are then not known here). */
  servedElsewhere?: boolean;
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

export type ReplicaResyncOptions = {
  /** A claimed re-read whose replica stops renewing it for this long may be claimed by another. Default 60 s. */
  leaseMs?: number;
  /** How often a request served by another replica's re-read looks whether it has finished. Default 50 ms. */
  pollMs?: number;
  /**
   * The requests, already recorded (`requestOrganizationResync`) when the deliveries asked; otherwise
   * recorded now. Several requests sharing one re-read are served only by a re-read that started after
   * the last of them.
   */
  requestedAt?: Promise<string | string[]>;
};

/**
 * `refreshOrganizationMembers`, coalesced across replicas through `organization_resyncs`: the request is
 * recorded; then either this replica claims the re-read (no other holds it and one is owed) and runs it,
 * or it waits until a re-read that started after the request has finished, wherever it ran. A replica
 * that dies holding the claim loses it when its lease runs out.
 */
export const refreshAcrossReplicas = async (
  deps: SyncDeps,
  organizationId: string,
  base: BaseContext,
  options: ReplicaResyncOptions = {},
  refresh: typeof refreshOrganizationMembers = refreshOrganizationMembers,
): Promise<OrganizationRefreshResult> => {
  const db = deps.database.db;
  const leaseMs = options.leaseMs ?? 60_000;
  const pollMs = options.pollMs ?? 50;
  const requestedAt = await (options.requestedAt ?? requestOrganizationResync(db, organizationId));
  for (;;) {
    const claim = randomUUID();
    if (await claimOrganizationResync(db, organizationId, claim, leaseMs)) {
      const renew = setInterval(() => {
        extendOrganizationResync(db, organizationId, claim, leaseMs).catch((error: unknown) =>
          deps.logger.warn({ err: error, organizationId }, 'could not renew the claim of an organization re-read'),
        );
      }, Math.max(50, Math.floor(leaseMs / 3)));
      renew.unref();
      try {
        const result = await refresh(deps, organizationId, base);
        await finishOrganizationResync(db, organizationId, claim);
        return result;
      } catch (error) {
        await releaseOrganizationResync(db, organizationId, claim).catch(() => {});
        throw error;
      } finally {
        clearInterval(renew);
      }
    }
    if (await organizationResyncServed(db, organizationId, requestedAt)) return { ...emptyRefresh(true), servedElsewhere: true };
    await sleep(pollMs);
  }
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
  /** The recorded requests of the deliveries that joined the queued re-read (see `request`). */
  queuedMarks: Promise<string>[];
  /** A request being recorded, and the one recorded after it for those who ask meanwhile. */
  markInFlight: Promise<string> | null;
  markNext: Promise<string> | null;
};

/**
 * The coalescer of member re-reads, one per process (the inbox worker's handlers hold it): requests in
 * this process share one re-read as described above, and each re-read is itself shared with the other
 * replicas (`refreshAcrossReplicas`).
 */
export const createOrganizationResync = (
  deps: SyncDeps,
  refresh?: typeof refreshOrganizationMembers,
  options: Pick<ReplicaResyncOptions, 'leaseMs'> & {
    /** A re-read starts only after the deltas of its organization queued before it are applied (see `MembershipDeltas`). */
    membershipDeltas?: MembershipDeltas;
  } = {},
): OrganizationResync => {
  const slots = new Map<string, Slot>();
  let started = 0;
  /** Shared with the other replicas unless a test hands in its own re-read. */
  const shared = refresh === undefined;

  const start = (organizationId: string, slot: Slot, base: BaseContext, requestedAt?: Promise<string[]>): Promise<OrganizationRefreshResult> => {
    started += 1;
    const replicaOptions = {
      ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }),
      ...(requestedAt ? { requestedAt } : {}),
    };
    const read = () => (shared ? refreshAcrossReplicas(deps, organizationId, base, replicaOptions) : refresh!(deps, organizationId, base));
    const deltasApplied = options.membershipDeltas?.applied(organizationId);
    const running = deltasApplied ? deltasApplied.then(read) : read();
    const run: Promise<OrganizationRefreshResult> = running.finally(() => {
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
        slot = { inFlight: null, queued: null, queuedMarks: [], markInFlight: null, markNext: null };
        slots.set(organizationId, slot);
      }
      // Recorded now, not when the queued re-read starts: a re-read another replica starts meanwhile serves
      // it. Every joiner needs a mark taken after it asked: a re-read that started before the last joiner
      // asked must not count as serving them all (it may have read the list before that joiner's change).
      // A mark being taken may predate this request, so this request joins the one taken after it: a
      // burst costs a few marks, not one per delivery.
      const current = slot;
      const mark = () => {
        if (!shared || current.markNext) return;
        const take = () => {
          const taken = requestOrganizationResync(deps.database.db, organizationId);
          current.markInFlight = taken;
          const clear = () => {
            if (current.markInFlight === taken) current.markInFlight = null;
          };
          taken.then(clear, clear);
          return taken;
        };
        const requested: Promise<string> = current.markInFlight
          ? current.markInFlight
              .catch(() => undefined)
              .then(() => {
                current.markNext = null;
                return take();
              })
          : take();
        if (current.markInFlight && requested !== current.markInFlight) current.markNext = requested;
        requested.catch(() => {});
        current.queuedMarks.push(requested);
      };
      if (slot.queued) {
        mark();
        return slot.queued;
      }
      if (slot.inFlight) {
        mark();
        const next = slot.inFlight
          .catch(() => undefined)
          .then(() => {
            current.queued = null;
            const marks = current.queuedMarks.splice(0);
            return start(organizationId, current, base, marks.length > 0 ? Promise.all(marks) : undefined);
          });
        slot.queued = next;
        return next;
      }
      return start(organizationId, slot, base);
    },
    started: () => started,
  };
};
