import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { organizationMemberRoles, organizationMembers, users } from '../../db/schema.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, walk, type TestApp } from './harness.js';
import { insertChanges, insertMemberships, insertOrganizations, insertRoles, insertUsers } from './seed.js';

/*
 * Keyset pagination under concurrent writes: between pages, rows are inserted that sort before the
 * cursor (never seen: the walk is past them) and after it (seen once), and a row already seen is
 * deleted. Every row present for the whole walk must come exactly once.
 */
describe('pagination under concurrent inserts and deletes', () => {
  let database: TestDatabase;
  let t: TestApp;
  beforeAll(async () => {
    database = await createTestDatabase();
    t = await createTestApp(database.db);
    await insertOrganizations(database.db, [{ id: 'org', name: 'Org' }, { id: 'org2', name: 'Org 2' }]);
    await insertRoles(database.db, [{ id: 'role', name: 'role' }]);
    const ids = Array.from({ length: 30 }, (_, index) => `m${String(index * 10).padStart(4, '0')}`); // m0000 … m0290
    await insertUsers(database.db, ids.map((id) => ({ id, username: id })));
    await insertMemberships(
      database.db,
      ids.flatMap((id, index) => [
        { organizationId: 'org', userId: id, since: new Date(), roles: [{ id: 'role', since: new Date() }] },
        ...(index % 2 === 0 ? [{ organizationId: 'org2', userId: id, since: new Date(), roles: [{ id: 'role', since: new Date() }] }] : []),
      ]),
    );
  });
  afterAll(async () => {
    await database.drop();
  });

  const pageOf = (path: string) => async (cursor: string | null) =>
    (await t.get(`${path}${path.includes('?') ? '&' : '?'}limit=7${cursor ? `&cursor=${cursor}` : ''}`).expect(200)).body;

  const counts = (values: string[]) => values.reduce((map, value) => map.set(value, (map.get(value) ?? 0) + 1), new Map<string, number>());

  it('GET /v1/users and GET /v1/organizations/:id/members see every stable row exactly once', async () => {
    for (const [path, addToOrg] of [
      ['/v1/users', false],
      ['/v1/organizations/org/members', true],
    ] as const) {
      const before = (await database.db.select({ id: users.id }).from(users)).map((row) => row.id);
      const inserted: { behind: string[]; ahead: string[] } = { behind: [], ahead: [] };
      const deleted: string[] = [];
      const { items, pages } = await walk<{ id: string }>(pageOf(path), async (pageIndex, page) => {
        const last = page.at(-1)!.id; // e.g. m0060
        const behind = `${last.slice(0, -1)}${path.length}${pageIndex}`.replace(/^m/, 'a'); // sorts before every m…
        const justBehind = `${last}-${path.length}`.replace(/^m/, 'l'); // before the cursor too
        const ahead = `n-${pageIndex}-${path.length}`; // after every m…
        await insertUsers(database.db, [{ id: behind }, { id: justBehind }, { id: ahead }]);
        if (addToOrg) {
          await insertMemberships(database.db, [behind, justBehind, ahead].map((userId) => ({ organizationId: 'org', userId, since: new Date() })));
        }
        inserted.behind.push(behind, justBehind);
        inserted.ahead.push(ahead);
        // Delete one row already returned.
        const gone = page[0]!.id;
        // Its memberships first, as the apply functions do (no foreign key cascades them).
        await database.db.delete(organizationMembers).where(eq(organizationMembers.userId, gone));
        await database.db.delete(users).where(eq(users.id, gone));
        deleted.push(gone);
      });
      expect(pages).toBeGreaterThan(3);
      const seen = counts(items.map((item) => item.id));
      const stable = before.filter((id) => id.startsWith('m'));
      for (const id of stable) expect(seen.get(id), `${path} ${id}`).toBe(1);
      for (const id of inserted.ahead) expect(seen.get(id), `${path} ${id}`).toBe(1);
      for (const id of inserted.behind) expect(seen.has(id), `${path} ${id}`).toBe(false);
      expect([...seen.values()].every((count) => count === 1)).toBe(true);
      // Restore the deleted rows for the next list.
      await insertUsers(database.db, deleted.map((id) => ({ id, username: id })));
      await insertMemberships(database.db, deleted.map((userId) => ({ organizationId: 'org', userId, since: new Date() })));
    }
  });

  it('GET /v1/organization-roles/:id/members walks (organization, user) keys exactly once', async () => {
    await insertRoles(database.db, [{ id: 'role2', name: 'role2' }]);
    const grantees = Array.from({ length: 20 }, (_, index) => `g${String(index).padStart(3, '0')}`);
    await insertUsers(database.db, grantees.map((id) => ({ id })));
    await insertMemberships(
      database.db,
      grantees.flatMap((userId, index) =>
        (index % 2 === 0 ? ['org', 'org2'] : ['org2']).map((organizationId) => ({
          organizationId,
          userId,
          since: new Date(),
          roles: [{ id: 'role2', since: new Date() }],
        })),
      ),
    );
    const stable = new Set(grantees.flatMap((userId, index) => (index % 2 === 0 ? [`org/${userId}`, `org2/${userId}`] : [`org2/${userId}`])));
    const removed = new Set<string>();
    const { items } = await walk<{ id: string; organization: { id: string } }>(pageOf('/v1/organization-roles/role2/members'), async (pageIndex, page) => {
      const last = page.at(-1)!;
      // In the cursor's organization: a grant sorting after the cursor, and one before it.
      const ahead = `gz-${pageIndex}`;
      const behind = `f-${pageIndex}`; // before every g… in any collation
      await insertUsers(database.db, [{ id: ahead }, { id: behind }]);
      await insertMemberships(database.db, [
        { organizationId: last.organization.id, userId: ahead, since: new Date(), roles: [{ id: 'role2', since: new Date() }] },
        { organizationId: last.organization.id, userId: behind, since: new Date(), roles: [{ id: 'role2', since: new Date() }] },
      ]);
      // Remove a membership already seen, with its role (as every deletion of a membership does).
      const first = page[0]!;
      await database.db
        .delete(organizationMemberRoles)
        .where(and(eq(organizationMemberRoles.organizationId, first.organization.id), eq(organizationMemberRoles.userId, first.id)));
      await database.db
        .delete(organizationMembers)
        .where(and(eq(organizationMembers.organizationId, first.organization.id), eq(organizationMembers.userId, first.id)));
      removed.add(`${first.organization.id}/${first.id}`);
    });
    const keys = items.map((item) => `${item.organization.id}/${item.id}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(removed.size).toBeGreaterThan(2);
    expect(keys.filter((key) => stable.has(key)).sort()).toEqual([...stable].sort());
    expect(keys.filter((key) => key.includes('/gz-')).length).toBeGreaterThan(0);
    expect(keys.filter((key) => key.includes('/f-'))).toEqual([]);
  });

  it('GET /v1/changes (newest first) never repeats or skips while the log grows', async () => {
    const original = await insertChanges(
      database.db,
      Array.from({ length: 25 }, (_, index) => ({ kind: 'member.added', source: 'baseline', userId: `c${index}`, organizationId: 'org' })),
    );
    const originalIds = new Set(original.map((change) => change.id));
    const { items } = await walk<{ id: number }>(pageOf('/v1/changes?source=baseline'), async () => {
      await insertChanges(database.db, [{ kind: 'member.removed', source: 'baseline', userId: 'late', organizationId: 'org' }]);
    });
    const ids = items.map((item) => item.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.filter((id) => originalIds.has(id))).toEqual([...originalIds].sort((a, b) => b - a));
    expect(ids.every((id, index) => index === 0 || id < ids[index - 1]!)).toBe(true);
  });
});
