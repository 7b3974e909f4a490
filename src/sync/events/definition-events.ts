import type { z } from 'zod';
import type { Database } from '../../db/client.js';
import { organizationRoleExists } from '../../db/queries/organization-roles.js';
import { organizationExists } from '../../db/queries/organizations.js';
import { logtoOrganizationRoleSchema, logtoOrganizationSchema } from '../../logto/index.js';
import {
  applyOrganizationRoles,
  applyOrganizations,
  removeOrganizationRoles,
  removeOrganizations,
  type ApplyResult,
  type ChangeContext,
} from '../apply/index.js';
import type { SyncDeps } from '../context.js';
import {
  baseContext,
  parseEnvelope,
  eventTime,
  isRecord,
  PermanentDeliveryError,
  stringField,
  trustsData,
  type EventHandler,
} from './common.js';

/** What differs between organizations and organization roles; the event handling is the same. */
type Definition<T extends { id: string }> = {
  label: string;
  createdEvent: string;
  schema: z.ZodType<T>;
  exists(db: Database, id: string): Promise<boolean>;
  fetch(deps: SyncDeps, id: string): Promise<T | null>;
  apply(db: Database, items: T[], context: ChangeContext): Promise<ApplyResult>;
  remove(db: Database, ids: string[], context: ChangeContext): Promise<ApplyResult>;
};

/**
 * `*.Created`, `*.Data.Updated`: `data` is the entity. When it is absent, recovered from the hook logs, or
 * an update of an entity the database does not know (it may be gone), the entity is read from Logto and a
 * 404 removes it.
 */
const upserted =
  <T extends { id: string }>(definition: Definition<T>): EventHandler =>
  async (deps, delivery) => {
    const payload = parseEnvelope(delivery);
    const base = baseContext(delivery, payload);
    const id = stringField(payload.params, 'id') ?? stringField(payload.data, 'id');
    if (trustsData(delivery) && isRecord(payload.data)) {
      const entity = definition.schema.safeParse(payload.data);
      const usable = entity.success && (id === undefined || entity.data.id === id);
      if (
        usable &&
        (delivery.event === definition.createdEvent || (await definition.exists(deps.database.db, entity.data.id)))
      ) {
        await definition.apply(deps.database.db, [entity.data], { ...base, observedAt: eventTime(delivery, payload) });
        return 'applied';
      }
    }
    if (!id) throw new PermanentDeliveryError(`${delivery.event} names no ${definition.label} (params.id or data.id)`);
    const observedAt = new Date();
    const entity = await definition.fetch(deps, id);
    if (entity) await definition.apply(deps.database.db, [entity], { ...base, observedAt });
    else await definition.remove(deps.database.db, [id], { ...base, observedAt });
    return 'applied';
  };

/** `*.Deleted`: no `data` (204); the id is in `params.id`. The remove function records every grant that ends with it. */
const deleted =
  <T extends { id: string }>(definition: Definition<T>): EventHandler =>
  async (deps, delivery) => {
    const payload = parseEnvelope(delivery);
    const id = stringField(payload.params, 'id') ?? stringField(payload.data, 'id');
    if (!id) throw new PermanentDeliveryError(`${delivery.event} names no ${definition.label} (params.id)`);
    await definition.remove(deps.database.db, [id], { ...baseContext(delivery, payload), observedAt: eventTime(delivery, payload) });
    return 'applied';
  };

const organization: Definition<z.infer<typeof logtoOrganizationSchema>> = {
  label: 'organization',
  createdEvent: 'Organization.Created',
  schema: logtoOrganizationSchema,
  exists: organizationExists,
  fetch: (deps, id) => deps.logto.getOrganization(id),
  apply: applyOrganizations,
  remove: removeOrganizations,
};

const organizationRole: Definition<z.infer<typeof logtoOrganizationRoleSchema>> = {
  label: 'organization role',
  createdEvent: 'OrganizationRole.Created',
  schema: logtoOrganizationRoleSchema,
  exists: organizationRoleExists,
  fetch: (deps, id) => deps.logto.getOrganizationRole(id),
  apply: applyOrganizationRoles,
  remove: removeOrganizationRoles,
};

export const handleOrganizationUpserted = upserted(organization);
export const handleOrganizationDeleted = deleted(organization);
export const handleOrganizationRoleUpserted = upserted(organizationRole);
/** Logto strips a deleted role from every member without another event; the removal records each revocation. */
export const handleOrganizationRoleDeleted = deleted(organizationRole);
