import { eq } from 'drizzle-orm';
import { organizationRoles } from '../../../db/schema.js';
import type { Database } from '../../db/client.js';
import { logtoOrganizationRoleSchema } from '../../logto/index.js';
import { applyOrganizationRoles, removeOrganizationRoles } from '../apply/index.js';
import {
  baseContext,
  envelopeSchema,
  eventTime,
  isRecord,
  parsePayload,
  PermanentDeliveryError,
  stringField,
  trustsData,
  type EventHandler,
} from './common.js';

const roleStored = async (db: Database, id: string) =>
  (await db.select({ id: organizationRoles.id }).from(organizationRoles).where(eq(organizationRoles.id, id)).limit(1)).length > 0;

/** `OrganizationRole.Created`, `OrganizationRole.Data.Updated`: `data` is the role row; absent → read from Logto (404 → removed). */
export const handleOrganizationRoleUpserted: EventHandler = async (deps, delivery) => {
  const payload = parsePayload(envelopeSchema, delivery);
  const base = baseContext(delivery, payload);
  const roleId = stringField(payload.params, 'id') ?? stringField(payload.data, 'id');
  if (trustsData(delivery) && isRecord(payload.data)) {
    const role = logtoOrganizationRoleSchema.safeParse(payload.data);
    const usable = role.success && (roleId === undefined || role.data.id === roleId);
    // An update of a role the database does not know is checked with Logto (it may be gone).
    if (usable && (delivery.event === 'OrganizationRole.Created' || (await roleStored(deps.database.db, role.data.id)))) {
      await applyOrganizationRoles(deps.database.db, [role.data], { ...base, observedAt: eventTime(delivery, payload) });
      return 'applied';
    }
  }
  if (!roleId) throw new PermanentDeliveryError(`${delivery.event} names no organization role (params.id or data.id)`);
  const observedAt = new Date();
  const role = await deps.logto.getOrganizationRole(roleId);
  if (role) await applyOrganizationRoles(deps.database.db, [role], { ...base, observedAt });
  else await removeOrganizationRoles(deps.database.db, [roleId], { ...base, observedAt });
  return 'applied';
};

/**
 * `OrganizationRole.Deleted`: Logto strips the role from every member without another event; the apply
 * function records each of those revocations.
 */
export const handleOrganizationRoleDeleted: EventHandler = async (deps, delivery) => {
  const payload = parsePayload(envelopeSchema, delivery);
  const roleId = stringField(payload.params, 'id') ?? stringField(payload.data, 'id');
  if (!roleId) throw new PermanentDeliveryError('OrganizationRole.Deleted names no organization role (params.id)');
  await removeOrganizationRoles(deps.database.db, [roleId], { ...baseContext(delivery, payload), observedAt: eventTime(delivery, payload) });
  return 'applied';
};
