import { eq } from 'drizzle-orm';
import { z } from 'zod';
import { organizationMembers } from '../../../db/schema.js';
import type { LogtoUserOrganization } from '../../logto/index.js';
import { applyMembers, applyOrganizationRoles, applyOrganizations, removeMembers, removeUsers, type ChangeContext } from '../apply/index.js';
import type { SyncDeps } from '../context.js';
import {
  baseContext,
  envelopeSchema,
  parsePayload,
  PermanentDeliveryError,
  refreshUser,
  stringField,
  type BaseContext,
  type EventHandler,
} from './common.js';

export const interactionPayloadSchema = envelopeSchema.extend({
  userId: z.string().min(1).optional(),
  user: z.looseObject({ id: z.string().min(1).optional() }).nullish(),
});

const storedOrganizationsOf = async (deps: SyncDeps, userId: string): Promise<string[]> =>
  (
    await deps.database.db
      .select({ organizationId: organizationMembers.organizationId })
      .from(organizationMembers)
      .where(eq(organizationMembers.userId, userId))
  ).map((row) => row.organizationId);

/**
 * Makes one user's memberships and member roles equal to `GET /users/:id/organizations`: each listed
 * organization (itself a full organization snapshot) is applied, the user's roles in it too (roles the
 * database lacks are fetched), and memberships Logto no longer lists are removed.
 */
export const refreshUserOrganizations = async (deps: SyncDeps, userId: string, base: BaseContext): Promise<boolean> => {
  const db = deps.database.db;
  const observedAt = new Date();
  const listed = await deps.logto.getUserOrganizations(userId);
  const context: ChangeContext = { ...base, observedAt };
  if (listed === null) {
    await removeUsers(db, [userId], context);
    return false;
  }
  const organizations = listed.map(({ organizationRoles: _roles, ...organization }: LogtoUserOrganization) => organization);
  await applyOrganizations(db, organizations, context);
  for (const organization of listed) {
    const snapshot = [{ userId, organizationRoleIds: organization.organizationRoles.map((role) => role.id) }];
    const first = await applyMembers(db, organization.id, snapshot, context);
    if (first.unknownRoleIds.length > 0) {
      const roleObservedAt = new Date();
      const roles = (await Promise.all(first.unknownRoleIds.map((id) => deps.logto.getOrganizationRole(id)))).filter((role) => role !== null);
      await applyOrganizationRoles(db, roles, { ...base, observedAt: roleObservedAt });
      await applyMembers(db, organization.id, snapshot, context);
    }
  }
  const current = new Set(listed.map((organization) => organization.id));
  for (const organizationId of await storedOrganizationsOf(deps, userId)) {
    if (!current.has(organizationId)) await removeMembers(db, organizationId, [userId], context);
  }
  return true;
};

/**
 * `PostRegister`, `PostSignIn`: the user is read and applied (sign-in updates `lastSignInAt`; a sign-up
 * may not have been announced yet), through the batched, coalesced user reads. Where memberships can
 * have changed without this service knowing, the user's organizations are re-read with the roles in
 * each: after a registration (just-in-time provisioning grants organizations and roles) and for a user the
 * database did not hold. A sign-in of a known user reads no organizations: the memberships a sign-in
 * can add (SSO just-in-time) come with their own `Organization.Membership.Updated`, and one
 * `GET /users/:id/organizations` per sign-in would not fit Logto's request budget.
 */
export const handleInteraction: EventHandler = async (deps, delivery) => {
  const payload = parsePayload(interactionPayloadSchema, delivery);
  const userId = payload.userId ?? payload.user?.id ?? stringField(payload.data, 'id');
  if (!userId) throw new PermanentDeliveryError(`${delivery.event} names no user (userId)`);
  const base = baseContext(delivery, payload);
  const { user, created } = await refreshUser(deps, delivery, userId, base);
  if (!user) return 'applied';
  if (delivery.event === 'PostRegister' || created) await refreshUserOrganizations(deps, userId, base);
  return 'applied';
};
