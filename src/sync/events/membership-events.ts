import { z } from 'zod';
import { addMembers, applyOrganizations, removeMembers, type ChangeContext } from '../apply/index.js';
import {
  baseContext,
  envelopeSchema,
  eventTime,
  fetchUnknownUsers,
  parsePayload,
  PermanentDeliveryError,
  stringField,
  type BaseContext,
  type EventDelivery,
  type EventHandler,
  type EventHandlerDeps,
} from './common.js';

/** Logto's `MEMBERSHIP_DELTA_CAP`: a list this long may have been truncated, so it is not trusted as a delta. */
export const membershipDeltaCap = 5000;

const ids = z.array(z.string().min(1)).optional();

export const membershipPayloadSchema = envelopeSchema.extend({
  organizationId: z.string().min(1).optional(),
  addedUserIds: ids,
  removedUserIds: ids,
  addedApplicationIds: ids,
  removedApplicationIds: ids,
});

/**
 * Adds members from a delta. An organization the database does not know is fetched first (gone from Logto:
 * nothing to add); users it does not know are fetched (Logto can send the membership before
 * `User.Created`) and added in a second pass. Users Logto no longer has are left out.
 */
const addMembersFromDelta = async (
  deps: EventHandlerDeps,
  delivery: EventDelivery,
  organizationId: string,
  userIds: string[],
  base: BaseContext,
  context: ChangeContext,
): Promise<{ organizationFound: boolean }> => {
  const db = deps.database.db;
  let result = await addMembers(db, organizationId, userIds, context);
  if (!result.organizationKnown) {
    const observedAt = new Date();
    const organization = await deps.logto.getOrganization(organizationId);
    if (!organization) return { organizationFound: false };
    await applyOrganizations(db, [organization], { ...base, observedAt });
    result = await addMembers(db, organizationId, userIds, context);
  }
  if (result.unknownUserIds.length > 0) {
    const found = await fetchUnknownUsers(deps, delivery, result.unknownUserIds, base);
    if (found.length > 0) await addMembers(db, organizationId, found, context);
  }
  return { organizationFound: true };
};

/**
 * `Organization.Membership.Updated`. The delta (`addedUserIds`, `removedUserIds`, Logto ≥ 1.40) is applied
 * at once; then the organization's members are re-read with their roles, because JIT and invitations
 * grant roles the payload does not carry (the re-reads of one organization are coalesced). Without a
 * delta, or with a list at the cap, only the re-read. A delta about applications only changes nothing
 * this service keeps.
 */
export const handleMembershipUpdated: EventHandler = async (deps, delivery) => {
  const payload = parsePayload(membershipPayloadSchema, delivery);
  const organizationId = payload.organizationId ?? stringField(payload.params, 'id');
  if (!organizationId) throw new PermanentDeliveryError('Organization.Membership.Updated names no organization (organizationId)');
  const added = payload.addedUserIds ?? [];
  const removed = payload.removedUserIds ?? [];
  const applicationsOnly =
    added.length === 0 && removed.length === 0 && ((payload.addedApplicationIds?.length ?? 0) > 0 || (payload.removedApplicationIds?.length ?? 0) > 0);
  if (applicationsOnly) return 'ignored';

  const base = baseContext(delivery, payload);
  const capped = added.length >= membershipDeltaCap || removed.length >= membershipDeltaCap;
  if (!capped && (added.length > 0 || removed.length > 0)) {
    const context: ChangeContext = { ...base, observedAt: eventTime(delivery, payload) };
    // Queued before the first await: in the order the worker handed the deliveries over.
    const { organizationFound } = await deps.membershipDeltas.apply(organizationId, async () => {
      if (removed.length > 0) await removeMembers(deps.database.db, organizationId, removed, context);
      if (added.length === 0) return { organizationFound: true };
      return addMembersFromDelta(deps, delivery, organizationId, added, base, context);
    });
    if (!organizationFound) return 'applied';
  }
  await deps.resync.request(organizationId, base);
  return 'applied';
};
