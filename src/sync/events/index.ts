import { applyUserSnapshots, type UserSnapshot, type UserSnapshotOutcome } from '../apply/index.js';
import type { SyncDeps } from '../context.js';
import { createBatcher } from './batcher.js';
import {
  PermanentDeliveryError,
  stringField,
  type EventDelivery,
  type EventHandler,
  type EventHandlerDeps,
  type EventOutcome,
} from './common.js';
import {
  handleOrganizationDeleted,
  handleOrganizationRoleDeleted,
  handleOrganizationRoleUpserted,
  handleOrganizationUpserted,
} from './definition-events.js';
import { handleInteraction } from './interaction-events.js';
import { handleMembershipUpdated } from './membership-events.js';
import { createMembershipDeltas } from './membership-deltas.js';
import { createOrganizationResync, type OrganizationResync } from './organization-resync.js';
import { createUserReads, type UserReads } from './user-reads.js';
import { handleUserDeleted, handleUserUpserted } from './user-events.js';

export { PermanentDeliveryError, type EventDelivery, type EventOutcome } from './common.js';

/** The delivery as the inbox worker hands it over (`{ id, event, payload }`; `channel` and `receivedAt` are optional). */
export type Delivery = EventDelivery;
export { createOrganizationResync, refreshOrganizationMembers, type OrganizationResync } from './organization-resync.js';
export { refreshUserOrganizations } from './interaction-events.js';
export { createUserReads, type UserReads, type UserReadResult } from './user-reads.js';
export { membershipDeltaCap } from './membership-events.js';

/** The events this service applies, by name. */
export const eventHandlers: Readonly<Record<string, EventHandler>> = {
  'User.Created': handleUserUpserted,
  'User.Data.Updated': handleUserUpserted,
  'User.SuspensionStatus.Updated': handleUserUpserted,
  'User.Deleted': handleUserDeleted,
  'Organization.Created': handleOrganizationUpserted,
  'Organization.Data.Updated': handleOrganizationUpserted,
  'Organization.Deleted': handleOrganizationDeleted,
  'Organization.Membership.Updated': handleMembershipUpdated,
  'OrganizationRole.Created': handleOrganizationRoleUpserted,
  'OrganizationRole.Data.Updated': handleOrganizationRoleUpserted,
  'OrganizationRole.Deleted': handleOrganizationRoleDeleted,
  PostRegister: handleInteraction,
  PostSignIn: handleInteraction,
};

/** Every event Logto can send (`hookEvents` in @logto/schemas); the ones without a handler are ignored. */
export const logtoEvents: ReadonlySet<string> = new Set([
  'PostRegister',
  'PostSignIn',
  'PostSignInAdaptiveMfaTriggered',
  'PostResetPassword',
  'User.Created',
  'User.Deleted',
  'User.Data.Updated',
  'User.SuspensionStatus.Updated',
  'TrustedDevice.Created',
  'TrustedDevice.Deleted',
  'Role.Created',
  'Role.Deleted',
  'Role.Data.Updated',
  'Role.Scopes.Updated',
  'Scope.Created',
  'Scope.Deleted',
  'Scope.Data.Updated',
  'Organization.Created',
  'Organization.Deleted',
  'Organization.Data.Updated',
  'Organization.Membership.Updated',
  'OrganizationRole.Created',
  'OrganizationRole.Deleted',
  'OrganizationRole.Data.Updated',
  'OrganizationRole.Scopes.Updated',
  'OrganizationScope.Created',
  'OrganizationScope.Deleted',
  'OrganizationScope.Data.Updated',
  'Identifier.Lockout',
  'Message.RateLimited',
  'Grant.LimitExceeded',
]);

/** A bounded metric label: the event name when Logto defines it, else 'unknown'. */
export const eventLabel = (event: string): string => (logtoEvents.has(event) ? event : 'unknown');

/**
 * The entity a delivery creates, changes or deletes, for deliveries that must not overtake one another
 * in one process (a `User.Deleted` handled before that user's `User.Created` could not stop the creation).
 * Membership and interaction events have none and run concurrently: their re-reads of Logto are
 * coalesced, and the deltas of one organization are put in order by the handlers (`MembershipDeltas`)
 * without holding up each delivery's re-read behind the next one's.
 */
export const deliveryEntityKey = (delivery: Pick<EventDelivery, 'event' | 'payload'>): string | null => {
  const { event, payload } = delivery;
  const idOf = (param: string) => stringField(payload.params, param) ?? stringField(payload.data, 'id');
  if (event.startsWith('User.')) {
    const id = idOf('userId');
    return id ? `user:${id}` : null;
  }
  if (event.startsWith('OrganizationRole.') && event !== 'OrganizationRole.Scopes.Updated') {
    const id = idOf('id');
    return id ? `organization_role:${id}` : null;
  }
  if (event === 'Organization.Created' || event === 'Organization.Data.Updated' || event === 'Organization.Deleted') {
    const id = idOf('id');
    return id ? `organization:${id}` : null;
  }
  return null;
};

export type EventHandlers = {
  /** Applies one delivery; throws when it should be tried again (or `PermanentDeliveryError` when it never can be). */
  handle(delivery: EventDelivery): Promise<EventOutcome>;
  resync: OrganizationResync;
  userReads: UserReads;
};

/** User snapshots of concurrent deliveries applied in one transaction, at most this many. */
const userSnapshotBatchSize = 500;

/**
 * The handlers of one process. They share one coalescer of organization member re-reads, so the
 * membership events of a burst cost one re-read per organization, not one each.
 */
export const createEventHandlers = (
  deps: SyncDeps,
  options: {
    resync?: OrganizationResync;
    userReads?: UserReads;
    /**
     * Lease of a claimed member re-read (default 60 s). The inbox worker passes its delivery lease: a
     * re-read claim left by a dead replica must not hold that organization's deliveries longer than the
     * deliveries' own claims do.
     */
    resyncLeaseMs?: number;
  } = {},
): EventHandlers => {
  const membershipDeltas = createMembershipDeltas();
  const resync =
    options.resync ??
    createOrganizationResync(deps, undefined, {
      membershipDeltas,
      ...(options.resyncLeaseMs === undefined ? {} : { leaseMs: options.resyncLeaseMs }),
    });
  const userReads = options.userReads ?? createUserReads(deps);
  const userSnapshots = createBatcher<UserSnapshot, UserSnapshotOutcome>({
    maxSize: userSnapshotBatchSize,
    // The handlers of one hand-over or claim add their snapshots in one dispatch.
    gather: 'microtasks',
    run: async (snapshots) => (await applyUserSnapshots(deps.database.db, snapshots)).outcomes,
  });
  const handlerDeps: EventHandlerDeps = { ...deps, resync, userReads, userSnapshots, membershipDeltas };
  return {
    resync,
    userReads,
    async handle(delivery) {
      const handler = eventHandlers[delivery.event];
      if (!handler) return 'ignored';
      if (typeof delivery.payload !== 'object' || delivery.payload === null) {
        throw new PermanentDeliveryError('the stored payload is not an object');
      }
      return handler(handlerDeps, delivery);
    },
  };
};
