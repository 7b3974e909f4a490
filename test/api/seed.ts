import { randomBytes } from 'node:crypto';
import {
  accessChanges,
  organizationMemberRoles,
  organizationMembers,
  organizationRoles,
  organizations,
  syncRuns,
  syncState,
  users,
  webhookDeliveries,
} from '../../db/schema.js';
import type { Database } from '../../src/db/client.js';

/*
 * Test data written straight into the tables (the sync engine normally fills them). Every helper
 * fills the NOT NULL columns with plausible values and returns the rows it wrote.
 */

export type UserSeed = Partial<typeof users.$inferInsert> & { id: string };
export type OrganizationSeed = Partial<typeof organizations.$inferInsert> & { id: string; name: string };
export type RoleSeed = Partial<typeof organizationRoles.$inferInsert> & { id: string; name: string };

export const at = (iso: string): Date => new Date(iso);

export const insertUsers = async (db: Database, seeds: UserSeed[]) => {
  const rows = seeds.map((seed) => ({
    username: null,
    primaryEmail: null,
    primaryPhone: null,
    name: null,
    avatar: null,
    isSuspended: false,
    customData: {},
    profile: {},
    applicationId: null,
    lastSignInAt: null,
    createdAt: at('2024-01-01T00:00:00.000Z'),
    updatedAt: at('2024-01-02T00:00:00.000Z'),
    raw: { id: seed.id },
    observedAt: at('2024-06-01T00:00:00.000Z'),
    ...seed,
  }));
  if (rows.length > 0) await db.insert(users).values(rows);
  return rows;
};

export const insertOrganizations = async (db: Database, seeds: OrganizationSeed[]) => {
  const rows = seeds.map((seed) => ({
    description: null,
    customData: {},
    isMfaRequired: false,
    createdAt: at('2024-01-01T00:00:00.000Z'),
    raw: { id: seed.id },
    observedAt: at('2024-06-01T00:00:00.000Z'),
    ...seed,
  }));
  if (rows.length > 0) await db.insert(organizations).values(rows);
  return rows;
};

export const insertRoles = async (db: Database, seeds: RoleSeed[]) => {
  const rows = seeds.map((seed) => ({
    description: null,
    type: 'User',
    raw: { id: seed.id },
    observedAt: at('2024-06-01T00:00:00.000Z'),
    ...seed,
  }));
  if (rows.length > 0) await db.insert(organizationRoles).values(rows);
  return rows;
};

export type MembershipSeed = {
  organizationId: string;
  userId: string;
  since: Date;
  roles?: { id: string; since: Date }[];
};

export const insertMemberships = async (db: Database, seeds: MembershipSeed[]) => {
  if (seeds.length === 0) return;
  await db.insert(organizationMembers).values(
    seeds.map((seed) => ({ organizationId: seed.organizationId, userId: seed.userId, since: seed.since, observedAt: seed.since })),
  );
  const roles = seeds.flatMap((seed) =>
    (seed.roles ?? []).map((role) => ({
      organizationId: seed.organizationId,
      userId: seed.userId,
      organizationRoleId: role.id,
      since: role.since,
      observedAt: role.since,
    })),
  );
  if (roles.length > 0) await db.insert(organizationMemberRoles).values(roles);
};

export type ChangeSeed = Partial<typeof accessChanges.$inferInsert> & { kind: string; source: string };

export const insertChanges = async (db: Database, seeds: ChangeSeed[]) => {
  const rows = [];
  // One by one, so ids follow the order given.
  for (const seed of seeds) {
    const [row] = await db
      .insert(accessChanges)
      .values({ at: seed.observedAt ?? new Date(), observedAt: seed.at ?? new Date(), ...seed })
      .returning();
    rows.push(row!);
  }
  return rows;
};

export type RunSeed = Partial<typeof syncRuns.$inferInsert> & { kind: string };

export const insertRuns = async (db: Database, seeds: RunSeed[]) => {
  const rows = [];
  for (const seed of seeds) {
    const [row] = await db
      .insert(syncRuns)
      .values({ trigger: 'cli', status: 'succeeded', counts: {}, ...seed })
      .returning();
    rows.push(row!);
  }
  return rows;
};

export type DeliverySeed = Partial<typeof webhookDeliveries.$inferInsert> & { event: string };

export const insertDeliveries = async (db: Database, seeds: DeliverySeed[]) => {
  const rows = [];
  for (const seed of seeds) {
    const key = randomBytes(8).toString('hex');
    const [row] = await db
      .insert(webhookDeliveries)
      .values({ dedupKey: key, contentHash: key, channel: 'logto', payload: { event: seed.event }, ...seed })
      .returning();
    rows.push(row!);
  }
  return rows;
};

export const setSyncState = async (db: Database, key: string, value: Record<string, unknown>, updatedAt: Date) => {
  await db.insert(syncState).values({ key, value, updatedAt });
};

/**
 * A small tenant:
 * - acme: alice (admin, member), bob (member), carol (admin; suspended)
 * - globex: alice (viewer), erin (no roles)
 * - initech: nobody
 * - dave belongs nowhere; role "auditor" is held by nobody.
 */
export const seedTenant = async (db: Database) => {
  const userRows = await insertUsers(db, [
    {
      id: 'alice',
      username: 'alice',
      primaryEmail: 'alice@example.com',
      name: 'Alice Liddell',
      customData: { team: 'red' },
      profile: { givenName: 'Alice' },
      lastSignInAt: at('2024-05-01T08:00:00.000Z'),
      createdAt: at('2024-01-01T10:00:00.000Z'),
      updatedAt: at('2024-02-01T10:00:00.000Z'),
    },
    { id: 'bob', username: 'bob', primaryEmail: 'bob@example.com', name: 'Bob Builder', primaryPhone: '4915112345678' },
    { id: 'carol', username: 'carol', primaryEmail: 'carol@corp.example', name: 'Carol Danvers', isSuspended: true },
    { id: 'dave', username: 'dave_100%', primaryEmail: 'dave@example.com', name: 'Dave' },
    { id: 'erin', username: 'erin', primaryEmail: 'erin@sample.test', name: 'Erin Alison' },
  ]);
  const organizationRows = await insertOrganizations(db, [
    { id: 'acme', name: 'Acme Corp', description: 'Anvils and rockets', customData: { tier: 'gold' }, isMfaRequired: true },
    { id: 'globex', name: 'Globex', description: 'Global exports' },
    { id: 'initech', name: 'Initech', description: null },
  ]);
  const roleRows = await insertRoles(db, [
    { id: 'role-admin', name: 'admin', description: 'Administers the organization' },
    { id: 'role-member', name: 'member', description: 'Ordinary member' },
    { id: 'role-viewer', name: 'viewer', description: 'Read only' },
    { id: 'role-auditor', name: 'auditor', description: 'Nobody has it', type: 'MachineToMachine' },
  ]);
  const memberships: MembershipSeed[] = [
    {
      organizationId: 'acme',
      userId: 'alice',
      since: at('2024-03-01T00:00:00.000Z'),
      roles: [
        { id: 'role-admin', since: at('2024-03-02T00:00:00.000Z') },
        { id: 'role-member', since: at('2024-03-01T00:00:00.000Z') },
      ],
    },
    { organizationId: 'acme', userId: 'bob', since: at('2024-03-05T00:00:00.000Z'), roles: [{ id: 'role-member', since: at('2024-03-05T00:00:00.000Z') }] },
    { organizationId: 'acme', userId: 'carol', since: at('2024-03-06T00:00:00.000Z'), roles: [{ id: 'role-admin', since: at('2024-03-07T00:00:00.000Z') }] },
    { organizationId: 'globex', userId: 'alice', since: at('2024-04-01T00:00:00.000Z'), roles: [{ id: 'role-viewer', since: at('2024-04-01T12:00:00.000Z') }] },
    { organizationId: 'globex', userId: 'erin', since: at('2024-04-02T00:00:00.000Z') },
  ];
  await insertMemberships(db, memberships);
  return { users: userRows, organizations: organizationRows, roles: roleRows, memberships };
};

export type Tenant = Awaited<ReturnType<typeof seedTenant>>;
