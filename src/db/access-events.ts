import { asc, gt, inArray, sql } from 'drizzle-orm';
import { accessChanges, organizationRoles, organizations, users } from '../../db/schema.js';
import { rows, type Database } from './client.js';
import { accessChangeColumns, accessChangeKinds, type AccessChange, type AccessChangeKind } from './queries/changes.js';
import { organizationRoleColumns } from './queries/organization-roles.js';
import { organizationColumns, type OrganizationDto } from './queries/organizations.js';
import { userColumns, type UserDto } from './queries/users.js';

/**
 * Access events: what this service tells others about each change-log row. One mapping and one body
 * builder serve the webhook sender, replays and the live stream, so a receiver sees the same event
 * whichever way it arrives.
 */

export const accessEventTypes = [
  'user.created',
  'user.updated',
  'user.suspended',
  'user.unsuspended',
  'user.deleted',
  'organization.created',
  'organization.updated',
  'organization.deleted',
  'organization_role.created',
  'organization_role.updated',
  'organization_role.deleted',
  'organization.member.added',
  'organization.member.removed',
  'organization.member.role_granted',
  'organization.member.role_revoked',
] as const;
export type AccessEventType = (typeof accessEventTypes)[number];

const typeOfKind: Record<AccessChangeKind, AccessEventType> = {
  'user.created': 'user.created',
  'user.updated': 'user.updated',
  'user.suspended': 'user.suspended',
  'user.unsuspended': 'user.unsuspended',
  'user.deleted': 'user.deleted',
  'organization.created': 'organization.created',
  'organization.updated': 'organization.updated',
  'organization.deleted': 'organization.deleted',
  'organization_role.created': 'organization_role.created',
  'organization_role.updated': 'organization_role.updated',
  'organization_role.deleted': 'organization_role.deleted',
  'member.added': 'organization.member.added',
  'member.removed': 'organization.member.removed',
  'member_role.granted': 'organization.member.role_granted',
  'member_role.revoked': 'organization.member.role_revoked',
};

const kindOfType = Object.fromEntries(Object.entries(typeOfKind).map(([kind, type]) => [type, kind])) as Record<
  AccessEventType,
  AccessChangeKind
>;

export const eventTypeOfKind = (kind: string): AccessEventType | null =>
  (accessChangeKinds as readonly string[]).includes(kind) ? typeOfKind[kind as AccessChangeKind] : null;

export const kindsOfEventTypes = (types: readonly AccessEventType[]): AccessChangeKind[] => types.map((type) => kindOfType[type]);

/** The stable Standard Webhooks message id of the event of a change: the same for every attempt and every replay. */
export const webhookIdOf = (changeId: number): string => `evt_${changeId}`;

export type AccessEvent = {
  type: AccessEventType;
  timestamp: string;
  data: {
    changeId: number;
    userId?: string;
    organizationId?: string;
    organizationRoleId?: string;
    user?: Record<string, unknown>;
    organization?: Record<string, unknown>;
    organizationRole?: Record<string, unknown>;
    details?: Record<string, unknown>;
    source: string;
    actor: string | null;
    observedAt: string;
  };
};

const iso = (value: Date | null) => (value ? value.toISOString() : null);

const unique = (values: (string | null)[]) => [...new Set(values.filter((value): value is string => value !== null))];

/** Which entities a change's event describes with their current fields. */
const involves = (kind: string) => ({
  user: kind.startsWith('user.') || kind.startsWith('member'),
  organization: kind.startsWith('organization.') || kind.startsWith('member'),
  organizationRole: kind.startsWith('organization_role.') || kind.startsWith('member_role.'),
});

/** The current fields of the entities an event describes (absent: it no longer exists, or was not read). */
export type EventEntities = {
  user?: Record<string, unknown> | undefined;
  organization?: Record<string, unknown> | undefined;
  organizationRole?: Record<string, unknown> | undefined;
};

/** A user as an event body shows it: its dates as ISO strings. */
export const userOfEvent = (user: UserDto): Record<string, unknown> => ({
  ...user,
  lastSignInAt: iso(user.lastSignInAt),
  createdAt: iso(user.createdAt),
  updatedAt: iso(user.updatedAt),
});

export const organizationOfEvent = (organization: OrganizationDto): Record<string, unknown> => ({
  ...organization,
  createdAt: iso(organization.createdAt),
});

/**
 * The event of one change, from the current fields of the entities it involves (those the change does not
 * involve are left out whatever `entities` holds); null for a kind that has no event type.
 */
export const accessEventOf = (change: AccessChange, entities: EventEntities): AccessEvent | null => {
  const type = eventTypeOfKind(change.kind);
  if (!type) return null;
  const scope = involves(change.kind);
  const user = scope.user && change.userId ? entities.user : undefined;
  const organization = scope.organization && change.organizationId ? entities.organization : undefined;
  const organizationRole = scope.organizationRole && change.organizationRoleId ? entities.organizationRole : undefined;
  return {
    type,
    timestamp: change.at.toISOString(),
    data: {
      changeId: change.id,
      ...(change.userId ? { userId: change.userId } : {}),
      ...(change.organizationId ? { organizationId: change.organizationId } : {}),
      ...(change.organizationRoleId ? { organizationRoleId: change.organizationRoleId } : {}),
      ...(user ? { user } : {}),
      ...(organization ? { organization } : {}),
      ...(organizationRole ? { organizationRole } : {}),
      ...(change.details ? { details: change.details } : {}),
      source: change.source,
      actor: change.actor,
      observedAt: change.observedAt.toISOString(),
    },
  };
};

/**
 * The events of `changes`, in their order. The entities' fields are read now (three queries for the whole
 * batch), so an event describes the entity as it is when the event is built, and carries none for an
 * entity that no longer exists.
 */
export const buildAccessEvents = async (db: Database, changes: AccessChange[]): Promise<AccessEvent[]> => {
  const wanted = { users: [] as (string | null)[], organizations: [] as (string | null)[], roles: [] as (string | null)[] };
  for (const change of changes) {
    const scope = involves(change.kind);
    if (scope.user) wanted.users.push(change.userId);
    if (scope.organization) wanted.organizations.push(change.organizationId);
    if (scope.organizationRole) wanted.roles.push(change.organizationRoleId);
  }
  const userIds = unique(wanted.users);
  const organizationIds = unique(wanted.organizations);
  const roleIds = unique(wanted.roles);
  const [userRows, organizationRows, roleRows] = await Promise.all([
    userIds.length ? db.select(userColumns).from(users).where(inArray(users.id, userIds)) : [],
    organizationIds.length ? db.select(organizationColumns).from(organizations).where(inArray(organizations.id, organizationIds)) : [],
    roleIds.length ? db.select(organizationRoleColumns).from(organizationRoles).where(inArray(organizationRoles.id, roleIds)) : [],
  ]);
  const userById = new Map(userRows.map((user) => [user.id, userOfEvent(user)]));
  const organizationById = new Map(organizationRows.map((organization) => [organization.id, organizationOfEvent(organization)]));
  const roleById = new Map<string, Record<string, unknown>>(roleRows.map((role) => [role.id, role]));

  const events: AccessEvent[] = [];
  for (const change of changes) {
    const event = accessEventOf(change, {
      user: change.userId ? userById.get(change.userId) : undefined,
      organization: change.organizationId ? organizationById.get(change.organizationId) : undefined,
      organizationRole: change.organizationRoleId ? roleById.get(change.organizationRoleId) : undefined,
    });
    if (event) events.push(event);
  }
  return events;
};

/** Changes after `afterId` in log order (oldest first), unfiltered: a reader needs the ids to see gaps. */
export const listChangesAfter = async (db: Database, afterId: number, limit: number): Promise<AccessChange[]> =>
  db.select(accessChangeColumns).from(accessChanges).where(gt(accessChanges.id, afterId)).orderBy(asc(accessChanges.id)).limit(limit);

/** The newest change id (0 for an empty log). */
export const lastChangeId = async (db: Database): Promise<number> => {
  const [row] = await rows<{ id: string | number | null }>(db, sql`select max(id) as id from access_changes`);
  return Number(row?.id ?? 0);
};
