import { asc, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  accessChanges,
  organizationMemberRoles,
  organizationMembers,
  organizationRoles,
  organizations,
  users,
} from '../../db/schema.js';
import type { LogtoOrganization, LogtoOrganizationRole, LogtoUser } from '../../src/logto/index.js';
import {
  addMembers,
  applyMembers,
  applyOrganizationRoles,
  applyOrganizations,
  applyUsers,
  applyTransaction,
  applyUserSnapshots,
  removeMembers,
  removeOrganizationRoles,
  removeOrganizations,
  removeUsers,
  toUserRow,
  writeUsers,
  type ChangeContext,
} from '../../src/sync/apply/index.js';
import { rows } from '../../src/db/client.js';
import { keepsNamedPlans } from '../../src/db/prepared.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { recorded } from '../helpers/recordings.js';

const [bob, alice] = recorded<LogtoUser[]>('api-users-list.json');
const [acme, initech] = recorded<LogtoOrganization[]>('api-organizations-list.json');
const [admin, viewer] = recorded<LogtoOrganizationRole[]>('api-organization-roles-list.json');

const at = (iso: string) => new Date(iso);
const context = (observedAt: string, source: ChangeContext['source'] = 'webhook'): ChangeContext => ({
  source,
  observedAt: at(observedAt),
});

describe('apply functions', () => {
  let database: TestDatabase;
  const db = () => database.db;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });
  beforeEach(async () => {
    await db().delete(accessChanges);
    // Grants first: no foreign key cascades them (the apply functions delete them themselves).
    await db().delete(organizationMemberRoles);
    await db().delete(organizationMembers);
    await db().delete(users);
    await db().delete(organizations);
    await db().delete(organizationRoles);
    await applyUsers(db(), [alice!, bob!], context('2026-11-23T10:00:00Z', 'baseline'));
    await applyOrganizations(db(), [acme!, initech!], context('2026-11-23T10:00:00Z', 'baseline'));
    await applyOrganizationRoles(db(), [admin!, viewer!], context('2026-11-23T10:00:00Z', 'baseline'));
    await db().delete(accessChanges);
  });

  const changes = async () =>
    (await db().select().from(accessChanges).orderBy(asc(accessChanges.id))).map((row) => ({
      kind: row.kind,
      userId: row.userId,
      organizationId: row.organizationId,
      organizationRoleId: row.organizationRoleId,
      source: row.source,
    }));

  it('writes nothing when the snapshot equals what is stored', async () => {
    const result = await applyUsers(db(), [alice!, bob!], context('2026-11-23T11:00:00Z', 'reconcile'));
    expect(result).toEqual({ changes: [], rowsWritten: 0 });
    expect(await changes()).toEqual([]);
  });

  it('stores every column of a user page as toUserRow takes it from the user, raw and its JSON included', async () => {
    const odd: LogtoUser = {
      ...alice!,
      id: 'user-odd',
      username: 'o\'brien "quoted" \\ back',
      name: 'Ngọc 🦊 \u00e9\n',
      isSuspended: true,
      lastSignInAt: null,
      customData: { nested: { list: [1, 2.5, 1e21, null, true], text: 'a\u0001b "c" \\' }, big: 12345678901234567890, empty: {} },
      profile: { nickname: 'Nick', address: { country: 'ÅLAND' } },
    };
    await applyUsers(db(), [odd], context('2026-11-23T11:00:00Z', 'baseline'));
    const [stored] = await db().select().from(users).where(eq(users.id, odd.id));
    expect(stored).toEqual(toUserRow(odd, at('2026-11-23T11:00:00Z')));
  });

  it('stores each user of a page with its own columns, whichever write path takes the page', async () => {
    const page: LogtoUser[] = ['a', 'b"q', 'c\\s'].map((suffix, index) => ({
      ...bob!,
      id: `user-page-${suffix}`,
      username: `page-${index}`,
      primaryEmail: index === 1 ? null : `page-${index}@example.com`,
      isSuspended: index === 2,
      customData: index === 0 ? {} : { index, text: `"${suffix}"` },
      updatedAt: bob!.updatedAt + index,
    }));
    await applyUsers(db(), page, context('2026-11-23T11:00:00Z', 'baseline'));
    const stored = async () => db().select().from(users).where(sql`${users.id} like 'user-page-%'`).orderBy(asc(users.id));
    expect(await stored()).toEqual(page.map((user) => toUserRow(user, at('2026-11-23T11:00:00Z'))));

    const later = page.map((user, index) => ({ ...user, name: `renamed ${index}`, updatedAt: user.updatedAt + 1000 }));
    await applyUserSnapshots(db(), later.map((user, index) => ({ user, context: context(`2026-11-23T12:00:0${index}Z`) })));
    expect(await stored()).toEqual(later.map((user, index) => toUserRow(user, at(`2026-11-23T12:00:0${index}Z`))));
  });

  it('never replaces a user with an older copy, in whichever order the copies arrive', async () => {
    const renamed = { ...alice!, name: 'Alice Newer', updatedAt: alice!.updatedAt + 1000 };
    const older = { ...alice!, name: 'Alice Older', updatedAt: alice!.updatedAt + 500 };
    await applyUsers(db(), [renamed], context('2026-11-23T11:00:00Z'));
    const late = await applyUsers(db(), [older], context('2026-11-23T11:00:01Z'));
    expect(late.changes).toEqual([]);
    const [stored] = await db().select().from(users).where(eq(users.id, alice!.id));
    expect(stored?.name).toBe('Alice Newer');
    expect(await changes()).toEqual([
      { kind: 'user.updated', userId: alice!.id, organizationId: null, organizationRoleId: null, source: 'webhook' },
    ]);
  });

  it('records suspension as its own change', async () => {
    const suspended = { ...bob!, isSuspended: true, updatedAt: bob!.updatedAt + 1 };
    const result = await applyUsers(db(), [suspended], context('2026-11-23T11:00:00Z'));
    expect(result.changes.map((change) => change.kind)).toEqual(['user.suspended']);
  });

  it('writes a batch of user snapshots and records the changes of each with its own delivery, none for a user whose write only moved updatedAt', async () => {
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com', isSuspended: true };
    const snapshot = (user: LogtoUser, deliveryId: number, observedAt: string) => ({
      user,
      context: { source: 'webhook' as const, observedAt: at(observedAt), deliveryId },
    });
    const { outcomes, result } = await applyUserSnapshots(db(), [
      snapshot({ ...bob!, isSuspended: true, updatedAt: bob!.updatedAt + 1 }, 11, '2026-11-23T11:00:00Z'),
      snapshot({ ...alice!, updatedAt: alice!.updatedAt + 1 }, 12, '2026-11-23T11:00:01Z'),
      snapshot(carol, 13, '2026-11-23T11:00:02Z'),
      // Older than what the database holds for Bob once the first is written: nothing to write.
      snapshot({ ...bob!, name: 'Bob Older' }, 14, '2026-11-23T11:00:03Z'),
    ]);
    expect(outcomes).toEqual(['written', 'written', 'created', 'unchanged']);
    expect(result.rowsWritten).toBe(3 + 3);
    const recorded = await db().select().from(accessChanges).orderBy(asc(accessChanges.id));
    expect(recorded.map((row) => [row.kind, row.userId, row.deliveryId, row.observedAt.toISOString()])).toEqual([
      ['user.suspended', bob!.id, 11, '2026-11-23T11:00:00.000Z'],
      ['user.created', 'user-carol', 13, '2026-11-23T11:00:02.000Z'],
      ['user.suspended', 'user-carol', 13, '2026-11-23T11:00:02.000Z'],
    ]);
    const stored = new Map((await db().select().from(users)).map((row) => [row.id, row]));
    expect(stored.get(bob!.id)).toMatchObject({ isSuspended: true, name: bob!.name ?? null });
    expect(stored.get(alice!.id)?.updatedAt.getTime()).toBe(alice!.updatedAt + 1);
    expect(stored.get('user-carol')).toMatchObject({ username: 'carol', isSuspended: true });
  });

  it('adds members with their roles, then converges a later snapshot to exactly its roles', async () => {
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id, viewer!.id] }], context('2026-11-23T11:00:00Z'));
    const second = await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [viewer!.id] }], context('2026-11-23T11:05:00Z'));
    expect(second.changes).toEqual([{ kind: 'member_role.revoked', organizationId: acme!.id, userId: alice!.id, organizationRoleId: admin!.id }]);
    const roles = await db().select().from(organizationMemberRoles);
    expect(roles.map((row) => row.organizationRoleId)).toEqual([viewer!.id]);
  });

  it('compares a page with the stored rows of its id range: none there, or a member role stored without its membership', async () => {
    const [early, middle, late] = ['user-a', 'user-m', 'user-z'].map((id) => ({ ...alice!, id, username: id, primaryEmail: `${id}@example.com` }));
    await applyUsers(db(), [early!, middle!, late!], context('2026-11-23T10:00:00Z', 'baseline'));
    await applyMembers(db(), acme!.id, [{ userId: early!.id, organizationRoleIds: [admin!.id] }, { userId: late!.id, organizationRoleIds: [viewer!.id] }], context('2026-11-23T11:00:00Z'));
    // Members stored on both sides of the page's range and none inside it: every member of the page is new.
    const between = await applyMembers(db(), acme!.id, [{ userId: middle!.id, organizationRoleIds: [admin!.id] }], context('2026-11-23T11:05:00Z'));
    expect(between.changes.map((change) => [change.kind, change.userId, change.organizationRoleId ?? null])).toEqual([
      ['member.added', middle!.id, null],
      ['member_role.granted', middle!.id, admin!.id],
    ]);
    // A member role left in the range without its membership (no foreign key keeps them together): the
    // range is not empty, so the page's member is compared with it and the role it no longer lists is revoked.
    await db().delete(organizationMembers).where(eq(organizationMembers.userId, late!.id));
    const orphan = await applyMembers(db(), acme!.id, [{ userId: late!.id, organizationRoleIds: [] }], context('2026-11-23T11:10:00Z'));
    expect(orphan.changes.map((change) => [change.kind, change.userId, change.organizationRoleId ?? null])).toEqual([
      ['member.added', late!.id, null],
      ['member_role.revoked', late!.id, viewer!.id],
    ]);
    expect((await db().select().from(organizationMemberRoles).orderBy(asc(organizationMemberRoles.userId))).map((row) => [row.userId, row.organizationRoleId])).toEqual([
      [early!.id, admin!.id],
      [middle!.id, admin!.id],
    ]);
  });

  it('adds one member and grants a role to a stored one in the same page: the grant finds the stored membership, the new member its own insert', async () => {
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [] }], context('2026-11-23T11:00:00Z', 'baseline'));
    const page = await applyMembers(
      db(),
      acme!.id,
      [{ userId: alice!.id, organizationRoleIds: [viewer!.id] }, { userId: bob!.id, organizationRoleIds: [admin!.id] }],
      context('2026-11-23T11:05:00Z', 'reconcile'),
    );
    expect(page.changes).toEqual([
      { kind: 'member.added', userId: bob!.id, organizationId: acme!.id },
      ...[
        { kind: 'member_role.granted', userId: alice!.id, organizationId: acme!.id, organizationRoleId: viewer!.id },
        { kind: 'member_role.granted', userId: bob!.id, organizationId: acme!.id, organizationRoleId: admin!.id },
      ].sort((a, b) => (a.userId < b.userId ? -1 : 1)),
    ]);
    expect((await db().select().from(organizationMemberRoles).orderBy(asc(organizationMemberRoles.userId))).map((row) => [row.userId, row.organizationRoleId])).toEqual(
      [
        [alice!.id, viewer!.id],
        [bob!.id, admin!.id],
      ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
    );
  });

  it("plans a crawl's page that only adds and grants once per connection, and a page that revokes for its values", async () => {
    // PGlite runs every statement unnamed: no plan to keep, so every page is planned for its values there.
    if (!database.url) {
      expect(keepsNamedPlans(db())).toBe(false);
      return;
    }
    expect(keepsNamedPlans(db())).toBe(true);
    // pg_prepared_statements is per connection: one connection for the pages and the look at their plans.
    const one = database.separatePool(1);
    try {
      const plans = async () => {
        const [row] = await rows<{ generic: number; custom: number }>(one.db, sql`select coalesce(sum(generic_plans), 0)::int as generic,
          coalesce(sum(custom_plans), 0)::int as custom from pg_prepared_statements where statement like '%live_organization as%'`);
        return row!;
      };
      await applyMembers(one.db, acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id, viewer!.id] }], context('2026-11-23T11:00:00Z', 'baseline'));
      await applyMembers(one.db, initech!.id, [{ userId: bob!.id, organizationRoleIds: [viewer!.id] }], context('2026-11-23T11:00:00Z', 'baseline'));
      expect(await plans()).toEqual({ generic: 2, custom: 0 });
      // A webhook's page is planned for its values, as before.
      await applyMembers(one.db, acme!.id, [{ userId: bob!.id, organizationRoleIds: [] }], context('2026-11-23T11:01:00Z', 'webhook'));
      expect(await plans()).toEqual({ generic: 2, custom: 1 });
      const revoking = await applyMembers(one.db, acme!.id, [{ userId: alice!.id, organizationRoleIds: [viewer!.id] }], context('2026-11-23T11:05:00Z', 'reconcile'));
      expect(revoking.changes).toEqual([{ kind: 'member_role.revoked', organizationId: acme!.id, userId: alice!.id, organizationRoleId: admin!.id }]);
      expect(await plans()).toEqual({ generic: 2, custom: 2 });
    } finally {
      await one.close();
    }
    expect((await db().select().from(organizationMemberRoles).orderBy(asc(organizationMemberRoles.organizationId))).map((row) => [row.organizationId, row.userId, row.organizationRoleId])).toEqual(
      [
        [acme!.id, alice!.id, viewer!.id],
        [initech!.id, bob!.id, viewer!.id],
      ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
    );
  });

  it("plans a crawl's users page and a member page bringing users once per connection, and keeps a tombstoned user out on those plans", async () => {
    const late = { ...alice!, id: 'latecomer002', username: 'late', primaryEmail: 'late@example.com' };
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    const dave = { ...alice!, id: 'user-dave', username: 'dave', primaryEmail: 'dave@example.com' };
    // A deletion processed before the crawl's page that still lists the user (observed earlier).
    await removeUsers(db(), [late.id], context('2026-11-23T11:10:00Z'));
    await db().delete(accessChanges).where(sql`${accessChanges.kind} <> 'user.deleted'`);
    const one = keepsNamedPlans(db()) ? database.separatePool(1) : null;
    const on = () => one?.db ?? db();
    // pg_prepared_statements is per connection: the pages and the look at their plans share one.
    const plans = async (like: string) => {
      const [row] = await rows<{ generic: number; custom: number }>(on(), sql`select coalesce(sum(generic_plans), 0)::int as generic,
        coalesce(sum(custom_plans), 0)::int as custom from pg_prepared_statements where statement like ${like}`);
      return row!;
    };
    try {
      const page = await applyUsers(on(), [carol, late], context('2026-11-23T11:00:00Z', 'baseline'));
      expect(page.changes).toEqual([{ kind: 'user.created', userId: carol.id, details: { username: 'carol', primaryEmail: 'carol@example.com' } }]);
      const brought = await applyMembers(on(), acme!.id, [{ userId: dave.id, organizationRoleIds: [admin!.id] }, { userId: late.id, organizationRoleIds: [] }], context('2026-11-23T11:00:00Z', 'baseline'), {
        users: [dave, late],
      });
      expect(brought.unknownUserIds).toEqual([late.id]);
      expect(brought.changes.map((change) => [change.kind, change.userId])).toEqual([
        ['user.created', dave.id],
        ['member.added', dave.id],
        ['member_role.granted', dave.id],
      ]);
      if (one) {
        // The users' upserts (the page's, with its change rows, and the member page's) and the member write.
        expect(await plans('%insert into "users"%')).toEqual({ generic: 2, custom: 0 });
        expect(await plans('%live_organization as%')).toEqual({ generic: 1, custom: 0 });
        // A webhook's users are planned for their values, as before.
        await applyUsers(on(), [{ ...carol, name: 'Carol Renamed', updatedAt: carol.updatedAt + 1 }], context('2026-11-23T11:05:00Z'));
        expect(await plans('%insert into "users"%')).toEqual({ generic: 2, custom: 1 });
      } else {
        expect(keepsNamedPlans(db())).toBe(false);
      }
    } finally {
      await one?.close();
    }
    expect((await db().select({ id: users.id }).from(users).orderBy(asc(users.id))).map((row) => row.id)).toEqual([alice!.id, bob!.id, carol.id, dave.id].sort());
  });

  it('with nothingStored, writes a users page without asking first which users are stored, comparing them under their locks', async () => {
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    const renamed = { ...bob!, name: 'Bob Renamed', updatedAt: bob!.updatedAt + 1 };
    const one = keepsNamedPlans(db()) ? database.separatePool(1) : null;
    const on = () => one?.db ?? db();
    try {
      // alice is stored as listed, bob differs, carol is new: as if the crawl's member pages had stored the first two.
      const page = await applyUsers(on(), [carol, renamed, alice!], context('2026-11-23T11:00:00Z', 'baseline'), { nothingStored: true });
      expect(page.changes).toEqual([
        { kind: 'user.updated', userId: bob!.id, details: { fields: ['name'] } },
        { kind: 'user.created', userId: carol.id, details: { username: 'carol', primaryEmail: 'carol@example.com' } },
      ].sort((a, b) => (a.userId < b.userId ? -1 : 1)));
      const again = await applyUsers(on(), [carol, renamed, alice!], context('2026-11-23T11:05:00Z', 'baseline'), { nothingStored: true });
      expect(again).toEqual({ changes: [], rowsWritten: 0 });
      if (one) {
        // The read of ids and digests a page otherwise begins with was never sent.
        const [row] = await rows<{ n: number }>(on(), sql`select count(*)::int as n from pg_prepared_statements where statement like '%compared_digest is distinct from%'`);
        expect(row!.n).toBe(0);
      }
    } finally {
      await one?.close();
    }
    expect(await db().select({ id: users.id, name: users.name }).from(users).where(eq(users.id, bob!.id))).toEqual([{ id: bob!.id, name: 'Bob Renamed' }]);
  });

  it('with countChanges, counts the membership changes by kind, still recording each, and lists the users the page brings', async () => {
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id] }], context('2026-11-23T11:00:00Z'));
    await db().delete(accessChanges);
    const result = await applyMembers(
      db(),
      acme!.id,
      [
        { userId: alice!.id, organizationRoleIds: [viewer!.id] },
        { userId: bob!.id, organizationRoleIds: [admin!.id, viewer!.id] },
        { userId: carol.id, organizationRoleIds: [] },
      ],
      context('2026-11-23T11:05:00Z', 'reconcile'),
      { users: [carol], countChanges: true },
    );
    expect(result.changes.map((change) => [change.kind, change.userId])).toEqual([['user.created', carol.id]]);
    expect(result.counted).toEqual({ 'member.added': 2, 'member_role.granted': 3, 'member_role.revoked': 1 });
    // As without countChanges: carol's row, and each change with its row.
    expect(result.rowsWritten).toBe(1 + 7 + 6);
    // In the order recorded without it: the brought user, then added members, grants and revokes, each in key order.
    const inKeyOrder = (rows: (string | null)[][]) => [...rows].sort((a, b) => (a[1]! < b[1]! ? -1 : a[1]! > b[1]! ? 1 : a[2]! < b[2]! ? -1 : a[2]! > b[2]! ? 1 : 0));
    expect((await changes()).map((change) => [change.kind, change.userId, change.organizationRoleId])).toEqual([
      ['user.created', carol.id, null],
      ...inKeyOrder([['member.added', bob!.id, null], ['member.added', carol.id, null]]),
      ...inKeyOrder([['member_role.granted', bob!.id, admin!.id], ['member_role.granted', alice!.id, viewer!.id], ['member_role.granted', bob!.id, viewer!.id]]),
      ['member_role.revoked', alice!.id, admin!.id],
    ]);
  });

  it('records a suspended user the same whether a member page or a user page brings it: a suspension without details, not a JSON null', async () => {
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com', isSuspended: true };
    const dave = { ...alice!, id: 'user-dave', username: 'dave', primaryEmail: 'dave@example.com', isSuspended: true };
    await applyMembers(db(), acme!.id, [{ userId: carol.id, organizationRoleIds: [] }], context('2026-11-23T11:00:00Z', 'baseline'), { users: [carol] });
    await applyUsers(db(), [dave], context('2026-11-23T11:00:00Z', 'baseline'));
    const recorded = await rows<{ user_id: string; kind: string; details: string }>(
      db(),
      sql`select user_id, kind, coalesce(details::text, 'sql null') as details from access_changes
        where kind like 'user.%' order by user_id, kind`,
    );
    expect(recorded).toEqual([
      { user_id: carol.id, kind: 'user.created', details: '{"username": "carol", "primaryEmail": "carol@example.com"}' },
      { user_id: carol.id, kind: 'user.suspended', details: 'sql null' },
      { user_id: dave.id, kind: 'user.created', details: '{"username": "dave", "primaryEmail": "dave@example.com"}' },
      { user_id: dave.id, kind: 'user.suspended', details: 'sql null' },
    ]);
  });

  it('does not let an older snapshot undo a removal recorded after it', async () => {
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id] }], context('2026-11-23T11:00:00Z'));
    await removeMembers(db(), acme!.id, [alice!.id], context('2026-11-23T11:10:00Z'));
    // A reconcile page read before the removal still lists alice.
    const stale = await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id] }], context('2026-11-23T11:05:00Z', 'reconcile'));
    expect(stale.changes).toEqual([]);
    expect(await db().select().from(organizationMembers)).toEqual([]);
  });

  it('keeps out of an older page only what a removal or revoke recorded after it covers: that member, that role, in that organization', async () => {
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    await applyUsers(db(), [carol], context('2026-11-23T10:00:00Z', 'baseline'));
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [viewer!.id] }, { userId: carol.id, organizationRoleIds: [] }], context('2026-11-23T11:00:00Z'));
    await applyMembers(db(), initech!.id, [{ userId: bob!.id, organizationRoleIds: [] }], context('2026-11-23T11:00:00Z'));
    // Recorded after the page below was read: alice's viewer role revoked and carol removed in acme, bob removed from initech.
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [] }, { userId: carol.id, organizationRoleIds: [] }], context('2026-11-23T11:10:00Z'));
    await removeMembers(db(), acme!.id, [carol.id], context('2026-11-23T11:10:00Z'));
    await removeMembers(db(), initech!.id, [bob!.id], context('2026-11-23T11:10:00Z'));
    const stale = await applyMembers(
      db(),
      acme!.id,
      [
        { userId: alice!.id, organizationRoleIds: [admin!.id, viewer!.id] },
        { userId: bob!.id, organizationRoleIds: [admin!.id] },
        { userId: carol.id, organizationRoleIds: [admin!.id] },
      ],
      context('2026-11-23T11:05:00Z', 'reconcile'),
    );
    // The organization's later removals are read once for the whole page: each still keeps out only its own member and role.
    const written = (rows: { kind: string; userId?: string | null; organizationRoleId?: string | null }[]) =>
      rows.map((row) => [row.kind, row.userId, row.organizationRoleId ?? null].join(' ')).sort();
    expect(written(stale.changes)).toEqual(
      written([
        { kind: 'member.added', userId: bob!.id },
        { kind: 'member_role.granted', userId: alice!.id, organizationRoleId: admin!.id },
        { kind: 'member_role.granted', userId: bob!.id, organizationRoleId: admin!.id },
      ]),
    );
    const acmeRoles = await db().select().from(organizationMemberRoles).where(eq(organizationMemberRoles.organizationId, acme!.id));
    expect(written(acmeRoles.map((row) => ({ kind: 'role', ...row })))).toEqual(
      written([
        { kind: 'role', userId: alice!.id, organizationRoleId: admin!.id },
        { kind: 'role', userId: bob!.id, organizationRoleId: admin!.id },
      ]),
    );
  });

  it('keeps a membership added after the information behind a removal', async () => {
    await addMembers(db(), acme!.id, [bob!.id], context('2026-11-23T12:00:00Z'));
    const result = await removeMembers(db(), acme!.id, [bob!.id], context('2026-11-23T11:59:00Z'));
    expect(result.changes).toEqual([]);
    expect((await db().select().from(organizationMembers)).map((row) => row.userId)).toEqual([bob!.id]);
  });

  it('writes no membership or grant whose user or membership a deletion removed while the page was written', async () => {
    await applyMembers(db(), acme!.id, [{ userId: bob!.id, organizationRoleIds: [viewer!.id] }], context('2026-11-23T11:00:00Z'));
    await db().delete(accessChanges);
    // Two connections: PGlite's one cannot hold a transaction open beside another.
    if (!database.url) return;
    // A deletion in flight (what removeUsers and removeMembers do), committed while the page waits on it:
    // the page read alice and bob's membership as stored, and must not write rows referring to them.
    const deleter = database.separatePool(1);
    let page: Promise<unknown> = Promise.resolve();
    try {
      await deleter.db.transaction(async (tx) => {
        await tx.execute(sql`select id from users where id = ${alice!.id} for update`);
        await tx.execute(sql`select user_id from organization_members where organization_id = ${acme!.id} and user_id = ${bob!.id} for update`);
        await tx.execute(sql`delete from organization_member_roles where organization_id = ${acme!.id} and user_id = ${bob!.id}`);
        await tx.execute(sql`delete from organization_members where organization_id = ${acme!.id} and user_id = ${bob!.id}`);
        await tx.execute(sql`delete from users where id = ${alice!.id}`);
        page = applyMembers(
          db(),
          acme!.id,
          [{ userId: alice!.id, organizationRoleIds: [admin!.id] }, { userId: bob!.id, organizationRoleIds: [admin!.id, viewer!.id] }],
          context('2026-11-23T11:05:00Z', 'reconcile'),
        );
        page.catch(() => {});
        await waitForLockWait();
      });
      const result = (await page) as Awaited<ReturnType<typeof applyMembers>>;
      expect(result.changes).toEqual([]);
    } finally {
      await deleter.close();
    }
    expect(await db().select().from(organizationMembers)).toEqual([]);
    expect(await db().select().from(organizationMemberRoles)).toEqual([]);
    expect(await changes()).toEqual([]);
  });

  it('applies a page again, whole, when a concurrent writer stored one of its memberships after the page compared it', async () => {
    // Two connections: PGlite's one cannot hold a transaction open beside another.
    if (!database.url) return;
    // Another writer (a webhook's addMembers) inserts alice's membership, uncommitted, before the page reads:
    // the page compares it as missing, its insert waits for the writer's row, and the writer commits.
    const writer = database.separatePool(1);
    let page: ReturnType<typeof applyMembers> = Promise.resolve({ changes: [], rowsWritten: 0, unknownUserIds: [], unknownRoleIds: [], organizationKnown: true });
    try {
      await writer.db.transaction(async (tx) => {
        await tx.insert(organizationMembers).values({ organizationId: acme!.id, userId: alice!.id, since: at('2026-11-23T11:00:00Z'), observedAt: at('2026-11-23T11:00:00Z') });
        await tx.insert(accessChanges).values({ kind: 'member.added', source: 'webhook', userId: alice!.id, organizationId: acme!.id, observedAt: at('2026-11-23T11:00:00Z') });
        page = applyMembers(
          db(),
          acme!.id,
          [{ userId: alice!.id, organizationRoleIds: [viewer!.id] }, { userId: bob!.id, organizationRoleIds: [admin!.id] }],
          context('2026-11-23T11:05:00Z', 'reconcile'),
        );
        page.catch(() => {});
        await waitForLockWait();
      });
      // Nothing of the first attempt stays; the second adds bob, and grants alice's role on her membership
      // (the first attempt's statement, which could not see the writer's row, would have left it out).
      expect((await page).changes).toEqual([
        { kind: 'member.added', userId: bob!.id, organizationId: acme!.id },
        { kind: 'member_role.granted', userId: alice!.id, organizationId: acme!.id, organizationRoleId: viewer!.id },
        { kind: 'member_role.granted', userId: bob!.id, organizationId: acme!.id, organizationRoleId: admin!.id },
      ]);
    } finally {
      await writer.close();
    }
    expect(await changes()).toEqual([
      { kind: 'member.added', userId: alice!.id, organizationId: acme!.id, organizationRoleId: null, source: 'webhook' },
      { kind: 'member.added', userId: bob!.id, organizationId: acme!.id, organizationRoleId: null, source: 'reconcile' },
      { kind: 'member_role.granted', userId: alice!.id, organizationId: acme!.id, organizationRoleId: viewer!.id, source: 'reconcile' },
      { kind: 'member_role.granted', userId: bob!.id, organizationId: acme!.id, organizationRoleId: admin!.id, source: 'reconcile' },
    ]);
    expect((await db().select().from(organizationMembers).orderBy(asc(organizationMembers.userId))).map((row) => row.userId)).toEqual(
      [alice!.id, bob!.id].sort(),
    );
    expect(await db().select().from(organizationMemberRoles)).toHaveLength(2);
  });

  it("writes a baseline's users page of unstored users with plain inserts, without a speculative insertion per row", async () => {
    // The WAL of the users table read back (pg_walinspect): PGlite has neither.
    if (!database.url) return;
    await db().execute(sql`create extension if not exists pg_walinspect`);
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    const dave = { ...alice!, id: 'user-dave', username: 'dave', primaryEmail: 'dave@example.com' };
    const [start] = await rows<{ lsn: string }>(db(), sql`select pg_current_wal_insert_lsn()::text as lsn`);
    const page = await applyUsers(db(), [carol, dave], context('2026-11-23T11:00:00Z', 'baseline'), { nothingStored: true });
    expect(page.changes.map((change) => [change.kind, change.userId])).toEqual([
      ['user.created', carol.id],
      ['user.created', dave.id],
    ]);
    // The page's WAL can be read once flushed (a baseline commits without waiting for that).
    const [end] = await rows<{ lsn: string }>(db(), sql`select pg_current_wal_insert_lsn()::text as lsn`);
    for (let attempt = 0; attempt < 200; attempt += 1) {
      const [flushed] = await rows<{ done: boolean }>(db(), sql`select pg_current_wal_flush_lsn() >= ${end!.lsn}::pg_lsn as done`);
      if (flushed!.done) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const [records] = await rows<{ inserts: number; confirms: number }>(
      db(),
      sql`select count(*) filter (where record_type like 'INSERT%')::int as inserts, count(*) filter (where record_type like '%CONFIRM')::int as confirms
        from pg_get_wal_records_info(${start!.lsn}::pg_lsn, ${end!.lsn}::pg_lsn)
        where resource_manager = 'Heap' and block_ref like '%/' || (select oid from pg_database where datname = current_database()) || '/' || pg_relation_filenode('users') || ' %'`,
    );
    // An upsert (on conflict) confirms each row it inserts with a WAL record of its own.
    expect(records).toEqual({ inserts: 2, confirms: 0 });
  });

  it('writes a users page again, as an upsert, when a writer without the entity locks stored one of its users after the page read it', async () => {
    // Two connections: PGlite's one cannot hold a transaction open beside another.
    if (!database.url) return;
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    const dave = { ...alice!, id: 'user-dave', username: 'dave', primaryEmail: 'dave@example.com' };
    // The writer's carol is uncommitted when the page reads under its locks: the page finds both unstored,
    // its plain insert waits for the writer's row, and fails on it once the writer commits.
    const writer = database.separatePool(1);
    let page: ReturnType<typeof applyUsers> = Promise.resolve({ changes: [], rowsWritten: 0 });
    try {
      await writer.db.transaction(async (tx) => {
        await tx.insert(users).values(toUserRow(carol, at('2026-11-23T11:00:00Z')));
        page = applyUsers(db(), [carol, dave], context('2026-11-23T11:00:00Z', 'baseline'), { nothingStored: true });
        page.catch(() => {});
        await waitForLockWait();
      });
      // Written again whole: carol, stored meanwhile with the same columns, is left as it is; dave is created.
      expect((await page).changes.map((change) => [change.kind, change.userId])).toEqual([['user.created', dave.id]]);
    } finally {
      await writer.close();
    }
    expect((await db().select().from(users).where(sql`${users.id} in (${carol.id}, ${dave.id})`).orderBy(asc(users.id))).map((row) => row.id)).toEqual([
      carol.id,
      dave.id,
    ]);
    expect(await changes()).toEqual([{ kind: 'user.created', userId: dave.id, organizationId: null, organizationRoleId: null, source: 'baseline' }]);
  });

  /** Until a statement of this database waits for a row lock (the page, on the deleter's). */
  const waitForLockWait = async () => {
    for (let attempt = 0; attempt < 200; attempt += 1) {
      const [row] = await rows<{ waiting: number }>(db(), sql`select count(*)::int as waiting from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock'`);
      if (row!.waiting > 0) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error('the page never waited for the deletion');
  };

  it('reports members and roles it cannot place instead of failing', async () => {
    const result = await applyMembers(
      db(),
      acme!.id,
      [{ userId: 'unknownuser1', organizationRoleIds: [] }, { userId: bob!.id, organizationRoleIds: ['unknownrole'] }],
      context('2026-11-23T11:00:00Z'),
    );
    expect(result.unknownUserIds).toEqual(['unknownuser1']);
    expect(result.unknownRoleIds).toEqual(['unknownrole']);
    expect(result.changes).toEqual([{ kind: 'member.added', organizationId: acme!.id, userId: bob!.id }]);
    const missingOrganization = await addMembers(db(), 'nosuchorg', [bob!.id], context('2026-11-23T11:00:00Z'));
    expect(missingOrganization.organizationKnown).toBe(false);
  });

  it('records every grant a deleted user loses, then the deletion', async () => {
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id] }], context('2026-11-23T11:00:00Z'));
    await applyMembers(db(), initech!.id, [{ userId: alice!.id, organizationRoleIds: [] }], context('2026-11-23T11:00:00Z'));
    await db().delete(accessChanges);
    const result = await removeUsers(db(), [alice!.id], context('2026-11-23T11:30:00Z'));
    expect(result.changes.map((change) => `${change.kind}:${change.organizationId ?? ''}`).sort()).toEqual(
      [`member.removed:${acme!.id}`, `member.removed:${initech!.id}`, `member_role.revoked:${acme!.id}`, 'user.deleted:'].sort(),
    );
    expect(await db().select().from(organizationMembers)).toEqual([]);
    // A snapshot observed before the deletion cannot bring the user back.
    const resurrect = await applyUsers(db(), [alice!], context('2026-11-23T11:20:00Z', 'reconcile'));
    expect(resurrect.changes).toEqual([]);
    expect(await db().select().from(users).where(eq(users.id, alice!.id))).toEqual([]);
  });

  it('writes the users a page brings, compared with the stored copies under the lock', async () => {
    // Stored before the write (as by a concurrent writer since the page was compared): an older copy of
    // alice, an equal copy of bob; carol is new; dave's deletion was recorded after the snapshot.
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com', isSuspended: true };
    const dave = { ...alice!, id: 'user-dave', username: 'dave', primaryEmail: 'dave@example.com' };
    await removeUsers(db(), [dave.id], context('2026-11-23T12:00:00Z'));
    await db().delete(accessChanges).where(sql`${accessChanges.kind} <> 'user.deleted'`);
    const renamed = { ...alice!, name: 'Alice Renamed', isSuspended: true, updatedAt: alice!.updatedAt + 1000 };
    const observed = context('2026-11-23T11:00:00Z', 'baseline');
    const byId = new Map([renamed, bob!, carol, dave].map((user) => [user.id, toUserRow(user, observed.observedAt)]));
    const ids = [...byId.keys()];
    const result = await applyTransaction(db(), observed, (tx) => writeUsers(tx, byId, ids, observed), { entity: 'user', ids });
    expect(result.changes).toEqual([
      { kind: 'user.updated', userId: alice!.id, details: { fields: ['name'] } },
      { kind: 'user.suspended', userId: alice!.id },
      { kind: 'user.created', userId: carol.id, details: { username: 'carol', primaryEmail: 'carol@example.com' } },
      { kind: 'user.suspended', userId: carol.id },
    ].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0)));
    expect(result.rowsWritten).toBe(2);
    expect([...result.held].sort()).toEqual([alice!.id, bob!.id, carol.id].sort());
    const stored = await db().select({ id: users.id, name: users.name, isSuspended: users.isSuspended }).from(users).orderBy(asc(users.id));
    expect(stored).toEqual(
      [
        { id: alice!.id, name: 'Alice Renamed', isSuspended: true },
        { id: bob!.id, name: bob!.name, isSuspended: bob!.isSuspended },
        { id: carol.id, name: carol.name, isSuspended: true },
      ].sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
    // The older copy written again changes nothing and records nothing.
    const older = new Map([[alice!.id, toUserRow(alice!, observed.observedAt)]]);
    const again = await applyTransaction(db(), observed, (tx) => writeUsers(tx, older, [alice!.id], observed), { entity: 'user', ids: [alice!.id] });
    expect(again).toEqual({ changes: [], rowsWritten: 0, held: new Set([alice!.id]) });
  });

  it('compares a user new to a page again under the lock: a copy a webhook stored meanwhile is updated, its creation recorded once', async () => {
    // Two connections: PGlite's one cannot hold a transaction open beside another.
    if (!database.url) return;
    const carol = { ...alice!, id: 'user-carol', username: 'carol', primaryEmail: 'carol@example.com' };
    const renamed = { ...carol, name: 'Carol Renamed', updatedAt: carol.updatedAt + 1000 };
    // The webhook holds carol's entity lock (as its apply does) while the page reads her as not stored,
    // then stores her and records her creation, and commits while the page waits for the lock.
    const webhook = database.separatePool(1);
    let page: ReturnType<typeof applyUsers> = Promise.resolve({ changes: [], rowsWritten: 0 });
    try {
      await webhook.db.transaction(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended('user:' || ${carol.id}, 0))`);
        page = applyUsers(db(), [renamed], context('2026-11-23T11:05:00Z', 'baseline'));
        page.catch(() => {});
        await waitForLockWait();
        await tx.insert(users).values(toUserRow(carol, at('2026-11-23T11:00:00Z')));
        await tx.insert(accessChanges).values({ kind: 'user.created', source: 'webhook', userId: carol.id, observedAt: at('2026-11-23T11:00:00Z') });
      });
      expect((await page).changes).toEqual([{ kind: 'user.updated', userId: carol.id, details: { fields: ['name'] } }]);
    } finally {
      await webhook.close();
    }
    expect(await changes()).toEqual([
      { kind: 'user.created', userId: carol.id, organizationId: null, organizationRoleId: null, source: 'webhook' },
      { kind: 'user.updated', userId: carol.id, organizationId: null, organizationRoleId: null, source: 'baseline' },
    ]);
    expect(await db().select({ name: users.name }).from(users).where(eq(users.id, carol.id))).toEqual([{ name: 'Carol Renamed' }]);
  });

  it('leaves a tombstone for a deletion that arrives before the creation', async () => {
    const late = { ...alice!, id: 'latecomer001' };
    const early = await removeUsers(db(), [late.id], context('2026-11-23T11:10:00Z'));
    expect(early.changes).toEqual([{ kind: 'user.deleted', userId: late.id, details: { stored: false } }]);
    // User.Created, observed before the deletion but processed after it, must not create the user.
    const created = await applyUsers(db(), [late], context('2026-11-23T11:00:00Z'));
    expect(created.changes).toEqual([]);
    expect(await db().select().from(users).where(eq(users.id, late.id))).toEqual([]);
  });

  it('strips a deleted organization role from every member and says so', async () => {
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id] }, { userId: bob!.id, organizationRoleIds: [admin!.id, viewer!.id] }], context('2026-11-23T11:00:00Z'));
    await db().delete(accessChanges);
    const result = await removeOrganizationRoles(db(), [admin!.id], context('2026-11-23T11:30:00Z'));
    expect(result.changes.filter((change) => change.kind === 'member_role.revoked')).toHaveLength(2);
    expect((await db().select().from(organizationMemberRoles)).map((row) => row.organizationRoleId)).toEqual([viewer!.id]);
  });

  it('ends every membership of a deleted organization', async () => {
    await applyMembers(db(), acme!.id, [{ userId: alice!.id, organizationRoleIds: [admin!.id] }], context('2026-11-23T11:00:00Z'));
    const result = await removeOrganizations(db(), [acme!.id], context('2026-11-23T11:30:00Z'));
    expect(result.changes.map((change) => change.kind)).toEqual(['member_role.revoked', 'member.removed', 'organization.deleted']);
    expect(await db().select().from(organizationMembers)).toEqual([]);
  });

  it('updates an organization only from a snapshot newer than the stored one', async () => {
    await applyOrganizations(db(), [{ ...acme!, name: 'Acme Renamed' }], context('2026-11-23T12:00:00Z'));
    const older = await applyOrganizations(db(), [{ ...acme!, name: 'Acme Old' }], context('2026-11-23T11:00:00Z', 'reconcile'));
    expect(older.changes).toEqual([]);
    const [stored] = await db().select().from(organizations).where(eq(organizations.id, acme!.id));
    expect(stored?.name).toBe('Acme Renamed');
  });
});
