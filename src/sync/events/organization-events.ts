import { logtoOrganizationSchema } from '../../logto/index.js';
import { applyOrganizations, organizationExists, removeOrganizations } from '../apply/index.js';
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

/**
 * `Organization.Created`, `Organization.Data.Updated`: `data` is the organization; when it is absent (or
 * recovered from the hook logs) the organization is read from Logto, and a 404 removes it.
 */
export const handleOrganizationUpserted: EventHandler = async (deps, delivery) => {
  const payload = parsePayload(envelopeSchema, delivery);
  const base = baseContext(delivery, payload);
  const organizationId = stringField(payload.params, 'id') ?? stringField(payload.data, 'id');
  if (trustsData(delivery) && isRecord(payload.data)) {
    const organization = logtoOrganizationSchema.safeParse(payload.data);
    const usable = organization.success && (organizationId === undefined || organization.data.id === organizationId);
    // An update of an organization the database does not know is checked with Logto (it may be gone).
    if (
      usable &&
      (delivery.event === 'Organization.Created' || (await organizationExists(deps.database.db, organization.data.id)))
    ) {
      await applyOrganizations(deps.database.db, [organization.data], { ...base, observedAt: eventTime(delivery, payload) });
      return 'applied';
    }
  }
  if (!organizationId) throw new PermanentDeliveryError(`${delivery.event} names no organization (params.id or data.id)`);
  const observedAt = new Date();
  const organization = await deps.logto.getOrganization(organizationId);
  if (organization) await applyOrganizations(deps.database.db, [organization], { ...base, observedAt });
  else await removeOrganizations(deps.database.db, [organizationId], { ...base, observedAt });
  return 'applied';
};

/** `Organization.Deleted`: no `data` (204); the id is in `params.id`. Memberships and member roles go with it. */
export const handleOrganizationDeleted: EventHandler = async (deps, delivery) => {
  const payload = parsePayload(envelopeSchema, delivery);
  const organizationId = stringField(payload.params, 'id') ?? stringField(payload.data, 'id');
  if (!organizationId) throw new PermanentDeliveryError('Organization.Deleted names no organization (params.id)');
  await removeOrganizations(deps.database.db, [organizationId], {
    ...baseContext(delivery, payload),
    observedAt: eventTime(delivery, payload),
  });
  return 'applied';
};
