import { inArray, sql } from 'drizzle-orm';
import { organizationRoles, organizations } from '../../../db/schema.js';
import { endedGrants, grantsHeldBy } from './cascade.js';
import type { Database } from '../../db/client.js';
import type { LogtoOrganization, LogtoOrganizationRole } from '../../logto/index.js';
import { applyTransaction, changedSince, newTombstones, recordChanges, type ApplyResult, type ChangeContext, type ChangeKind, type ChangeRecord } from './changes.js';
import { fromExcluded } from './upsert.js';

/**
 * Organizations and organization roles carry no `updatedAt` in Logto, so ordering rests on `observedAt`:
 * a stored row observed later than the incoming snapshot wins, and a deletion recorded after it is final.
 */
type Definition<Row extends { id: string; observedAt: Date }> = {
  table: typeof organizations | typeof organizationRoles;
  entity: 'organization' | 'organization_role';
  key: 'organizationId' | 'organizationRoleId';
  compared: (keyof Row & string)[];
};

const organizationDefinition: Definition<typeof organizations.$inferInsert & { observedAt: Date }> = {
  table: organizations,
  entity: 'organization',
  key: 'organizationId',
  compared: ['name', 'description', 'customData', 'isMfaRequired', 'createdAt'],
};

const organizationRoleDefinition: Definition<typeof organizationRoles.$inferInsert & { observedAt: Date }> = {
  table: organizationRoles,
  entity: 'organization_role',
  key: 'organizationRoleId',
  compared: ['name', 'description', 'type'],
};

export const toOrganizationRow = (organization: LogtoOrganization, observedAt: Date) => {
  const { tenantId: _tenantId, ...raw } = organization;
  return {
    id: organization.id,
    name: organization.name,
    description: organization.description ?? null,
    customData: organization.customData ?? {},
    isMfaRequired: organization.isMfaRequired ?? false,
    createdAt: new Date(organization.createdAt),
    raw,
    observedAt,
  };
};

export const toOrganizationRoleRow = (role: LogtoOrganizationRole, observedAt: Date) => {
  const { tenantId: _tenantId, ...raw } = role;
  return { id: role.id, name: role.name, description: role.description ?? null, type: role.type, raw, observedAt };
};

const comparable = (value: unknown) => (value instanceof Date ? value.toISOString() : JSON.stringify(value ?? null));

/** The rows among `ids` that are new or differ from the stored copy, with the change writing each records. */
const definitionWrites = <Row extends { id: string; observedAt: Date }>(
  { entity, key, compared }: Definition<Row>,
  ids: string[],
  byId: Map<string, Row>,
  storedById: Map<string, Row>,
  context: ChangeContext,
) => {
  const writes = new Map<string, ChangeRecord>();
  for (const id of ids) {
    const row = byId.get(id)!;
    const current = storedById.get(id);
    if (!current) {
      writes.set(id, { kind: `${entity}.created` as ChangeKind, [key]: id, details: { name: (row as { name?: string }).name } });
      continue;
    }
    if (current.observedAt.getTime() > context.observedAt.getTime()) continue;
    const fields = compared.filter((field) => comparable(current[field]) !== comparable(row[field]));
    if (fields.length > 0) writes.set(id, { kind: `${entity}.updated` as ChangeKind, [key]: id, details: { fields } });
  }
  return writes;
};

const applyDefinitions = async <Row extends { id: string; observedAt: Date }>(
  db: Database,
  definition: Definition<Row>,
  rows: Row[],
  context: ChangeContext,
): Promise<ApplyResult> => {
  if (rows.length === 0) return { changes: [], rowsWritten: 0 };
  const { table, entity, key, compared } = definition;
  const byId = new Map(rows.map((row) => [row.id, row]));
  const ids = [...byId.keys()].sort();
  // Compared outside a transaction: an unchanged page costs one read and writes nothing.
  const stored = (await db.select().from(table).where(inArray(table.id, ids))) as unknown as Row[];
  const candidates = definitionWrites(definition, ids, byId, new Map(stored.map((row) => [row.id, row])), context);
  if (candidates.size === 0) return { changes: [], rowsWritten: 0 };

  const lockedIds = [...candidates.keys()].sort();
  // Compared again under the locks (taken as the transaction begins): another writer of these rows may have committed since the read above.
  return applyTransaction(db, context, async (tx) => {
    const fresh = (await tx.select().from(table).where(inArray(table.id, lockedIds))) as unknown as Row[];
    const storedById = new Map(fresh.map((row) => [row.id, row]));
    const writes = definitionWrites(definition, lockedIds, byId, storedById, context);
    if (writes.size === 0) return { changes: [], rowsWritten: 0 };
    const created = [...writes.keys()].filter((id) => !storedById.has(id));
    const deletedLater = new Set(
      (
        await changedSince(tx, [`${entity}.deleted` as ChangeKind], context.observedAt, {
          [key === 'organizationId' ? 'organizationIds' : 'organizationRoleIds']: created,
        })
      ).map((change) => change[key]),
    );
    const rowsToWrite = [...writes.keys()].filter((id) => !deletedLater.has(id)).map((id) => byId.get(id)!);
    if (rowsToWrite.length === 0) return { changes: [], rowsWritten: 0 };
    const written = await tx
      .insert(table)
      .values(rowsToWrite as never)
      .onConflictDoUpdate({
        target: table.id,
        set: fromExcluded(table, [...compared, 'raw', 'observedAt']),
        setWhere: sql`${table.observedAt} <= excluded.observed_at`,
      })
      .returning({ id: table.id });
    const changes = written.map(({ id }) => writes.get(id)!);
    const logged = (await recordChanges(tx, changes, context)).length;
    return { changes, rowsWritten: written.length + logged };
  }, { entity, ids: lockedIds });
};

export const applyOrganizations = (db: Database, incoming: LogtoOrganization[], context: ChangeContext) =>
  applyDefinitions(db, organizationDefinition, incoming.map((organization) => toOrganizationRow(organization, context.observedAt)), context);

export const applyOrganizationRoles = (db: Database, incoming: LogtoOrganizationRole[], context: ChangeContext) =>
  applyDefinitions(db, organizationRoleDefinition, incoming.map((role) => toOrganizationRoleRow(role, context.observedAt)), context);

/** Deletes organizations with their memberships and member roles, recording every grant that ends with them. */
export const removeOrganizations = async (db: Database, organizationIds: string[], context: ChangeContext): Promise<ApplyResult> => {
  if (organizationIds.length === 0) return { changes: [], rowsWritten: 0 };
  const ids = [...new Set(organizationIds)].sort();
  return applyTransaction(db, context, async (tx) => {
    const held = await grantsHeldBy(tx, 'organization', ids);
    const deleted = await tx.delete(organizations).where(inArray(organizations.id, ids)).returning({ id: organizations.id });
    const gone = new Set(deleted.map((row) => row.id));
    const changes: ChangeRecord[] = [
      ...endedGrants(held, (grant) => gone.has(grant.organizationId), 'organization.deleted'),
      ...deleted.map((row): ChangeRecord => ({ kind: 'organization.deleted', organizationId: row.id })),
      ...(await newTombstones(tx, 'organization.deleted', 'organizationIds', ids.filter((id) => !gone.has(id)))).map(
        (id): ChangeRecord => ({ kind: 'organization.deleted', organizationId: id, details: { stored: false } }),
      ),
    ];
    const logged = (await recordChanges(tx, changes, context)).length;
    return { changes, rowsWritten: changes.filter((change) => change.details?.stored !== false).length + logged };
  }, { entity: 'organization', ids });
};

/** Deletes organization roles; Logto strips a deleted role from every member silently, so each loss is recorded here. */
export const removeOrganizationRoles = async (db: Database, roleIds: string[], context: ChangeContext): Promise<ApplyResult> => {
  if (roleIds.length === 0) return { changes: [], rowsWritten: 0 };
  const ids = [...new Set(roleIds)].sort();
  return applyTransaction(db, context, async (tx) => {
    const held = await grantsHeldBy(tx, 'organization_role', ids);
    const deleted = await tx.delete(organizationRoles).where(inArray(organizationRoles.id, ids)).returning({ id: organizationRoles.id });
    const gone = new Set(deleted.map((row) => row.id));
    const changes: ChangeRecord[] = [
      ...endedGrants(held, (grant) => gone.has(grant.organizationRoleId!), 'organization_role.deleted'),
      ...deleted.map((row): ChangeRecord => ({ kind: 'organization_role.deleted', organizationRoleId: row.id })),
      ...(await newTombstones(tx, 'organization_role.deleted', 'organizationRoleIds', ids.filter((id) => !gone.has(id)))).map(
        (id): ChangeRecord => ({ kind: 'organization_role.deleted', organizationRoleId: id, details: { stored: false } }),
      ),
    ];
    const logged = (await recordChanges(tx, changes, context)).length;
    return { changes, rowsWritten: changes.filter((change) => change.details?.stored !== false).length + logged };
  }, { entity: 'organization_role', ids });
};
