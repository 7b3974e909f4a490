import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pairGrantIntervals } from '../../src/db/queries/history.js';
import type { AccessChange } from '../../src/db/queries/changes.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, walk, type TestApp } from './harness.js';
import { at, insertChanges, seedTenant } from './seed.js';

type ChangeBody = { id: number; kind: string; source: string; userId: string | null; organizationId: string | null; at: string };

describe('change log and history', () => {
  let database: TestDatabase;
  let t: TestApp;
  let changes: Awaited<ReturnType<typeof insertChanges>>;
  beforeAll(async () => {
    database = await createTestDatabase();
    await seedTenant(database.db);
    t = await createTestApp(database.db);
    changes = await insertChanges(database.db, [
      { kind: 'user.created', source: 'baseline', userId: 'alice', at: at('2024-03-01T00:00:00Z') },
      { kind: 'member.added', source: 'baseline', userId: 'alice', organizationId: 'acme', at: at('2024-03-01T00:00:00Z') },
      { kind: 'member_role.granted', source: 'baseline', userId: 'alice', organizationId: 'acme', organizationRoleId: 'role-member', at: at('2024-03-01T00:00:00Z') },
      { kind: 'member_role.granted', source: 'sweep', userId: 'alice', organizationId: 'acme', organizationRoleId: 'role-admin', at: at('2024-03-02T00:00:00Z') },
      { kind: 'member.added', source: 'webhook', userId: 'bob', organizationId: 'acme', at: at('2024-03-05T00:00:00Z'), deliveryId: 7 },
      {
        kind: 'member.added',
        source: 'provision',
        actor: 'ops-key',
        userId: 'alice',
        organizationId: 'globex',
        at: at('2024-04-01T00:00:00Z'),
        details: { note: 'first' },
      },
      { kind: 'member.removed', source: 'webhook', userId: 'alice', organizationId: 'globex', at: at('2024-04-10T00:00:00Z') },
      { kind: 'member.added', source: 'reconcile', userId: 'alice', organizationId: 'globex', at: at('2024-04-20T00:00:00Z'), syncRunId: 3 },
      { kind: 'member_role.granted', source: 'sweep', userId: 'alice', organizationId: 'globex', organizationRoleId: 'role-viewer', at: at('2024-04-21T00:00:00Z') },
      { kind: 'member_role.revoked', source: 'sweep', userId: 'alice', organizationId: 'acme', organizationRoleId: 'role-member', at: at('2024-05-01T00:00:00Z') },
      { kind: 'organization.updated', source: 'webhook', organizationId: 'acme', at: at('2024-05-02T00:00:00Z') },
      // zed was deleted: only history is left of them.
      { kind: 'member.added', source: 'baseline', userId: 'zed', organizationId: 'acme', at: at('2024-01-01T00:00:00Z') },
      { kind: 'member_role.granted', source: 'baseline', userId: 'zed', organizationId: 'acme', organizationRoleId: 'role-admin', at: at('2024-01-01T00:00:00Z') },
      { kind: 'user.deleted', source: 'webhook', userId: 'zed', at: at('2024-02-01T00:00:00Z') },
    ]);
  });
  afterAll(async () => {
    await database.drop();
  });

  const fetchIds = async (query: string) =>
    ((await t.get(`/v1/changes${query}`).expect(200)).body.data as ChangeBody[]).map((change) => change.id);
  const idsWhere = (predicate: (change: (typeof changes)[number]) => boolean) =>
    changes.filter(predicate).map((change) => change.id).reverse();

  describe('GET /v1/changes', () => {
    it('lists every change newest first, with its fields', async () => {
      const response = await t.get('/v1/changes').expect(200);
      expect(response.body.data.map((change: ChangeBody) => change.id)).toEqual(changes.map((change) => change.id).reverse());
      const provisioned = changes[5]!;
      expect(response.body.data.find((change: ChangeBody) => change.id === provisioned.id)).toEqual({
        id: provisioned.id,
        at: provisioned.at.toISOString(),
        observedAt: '2024-04-01T00:00:00.000Z',
        kind: 'member.added',
        source: 'provision',
        actor: 'ops-key',
        userId: 'alice',
        organizationId: 'globex',
        organizationRoleId: null,
        details: { note: 'first' },
        syncRunId: null,
        deliveryId: null,
      });
    });

    it('filters by userId, organizationId and source, combined', async () => {
      expect(await fetchIds('?userId=bob')).toEqual(idsWhere((change) => change.userId === 'bob'));
      expect(await fetchIds('?organizationId=globex')).toEqual(idsWhere((change) => change.organizationId === 'globex'));
      expect(await fetchIds('?source=sweep')).toEqual(idsWhere((change) => change.source === 'sweep'));
      expect(await fetchIds('?userId=alice&organizationId=acme&source=sweep')).toEqual(
        idsWhere((change) => change.userId === 'alice' && change.organizationId === 'acme' && change.source === 'sweep'),
      );
    });

    it('filters by since (inclusive) and until (exclusive) on the recording time', async () => {
      const middle = changes[6]!.at;
      const later = changes[9]!.at;
      expect(await fetchIds(`?since=${middle.toISOString()}`)).toEqual(idsWhere((change) => change.at >= middle));
      expect(await fetchIds(`?until=${middle.toISOString()}`)).toEqual(idsWhere((change) => change.at < middle));
      expect(await fetchIds(`?since=${middle.toISOString()}&until=${later.toISOString()}`)).toEqual(
        idsWhere((change) => change.at >= middle && change.at < later),
      );
      expect(await fetchIds('?since=2999-01-01')).toEqual([]);
      expect(await fetchIds(`?until=2000-01-01T00:00:00%2B02:00`)).toEqual([]);
    });

    it('pages newest first without repeating or skipping', async () => {
      const { items, pages } = await walk<ChangeBody>(async (cursor) =>
        (await t.get(`/v1/changes?limit=4${cursor ? `&cursor=${cursor}` : ''}`).expect(200)).body,
      );
      expect(pages).toBe(4);
      expect(items.map((change) => change.id)).toEqual(changes.map((change) => change.id).reverse());
    });

    it('rejects bad filters with a 400 naming the parameter', async () => {
      for (const [query, name] of [
        ['since=yesterday', 'since'],
        ['since=2024-13-45', 'since'],
        ['until=2024-01-01T10:00:00', 'until'],
        ['since=2024-02-01&until=2024-01-01', 'until'],
        ['source=manual', 'source'],
        ['userId=no%20pe', 'userId'],
        ['limit=0', 'limit'],
        ['cursor=WyJhIl0', 'cursor'],
      ] as const) {
        const response = await t.get(`/v1/changes?${query}`);
        expectProblem(response, 400, 'invalid_params');
        expect(invalidParamNames(response), query).toEqual([name]);
      }
    });
  });

  describe('GET /v1/users/:id/history', () => {
    it('pairs grants and revokes into intervals, oldest first', async () => {
      const response = await t.get('/v1/users/alice/history').expect(200);
      expect(response.body).toEqual({
        data: [
          { organizationId: 'acme', organizationRoleId: null, grantedAt: '2024-03-01T00:00:00.000Z', revokedAt: null, grantedBy: 'baseline', revokedBy: null },
          { organizationId: 'acme', organizationRoleId: 'role-member', grantedAt: '2024-03-01T00:00:00.000Z', revokedAt: '2024-05-01T00:00:00.000Z', grantedBy: 'baseline', revokedBy: 'sweep' },
          { organizationId: 'acme', organizationRoleId: 'role-admin', grantedAt: '2024-03-02T00:00:00.000Z', revokedAt: null, grantedBy: 'sweep', revokedBy: null },
          { organizationId: 'globex', organizationRoleId: null, grantedAt: '2024-04-01T00:00:00.000Z', revokedAt: '2024-04-10T00:00:00.000Z', grantedBy: 'provision', revokedBy: 'webhook' },
          { organizationId: 'globex', organizationRoleId: null, grantedAt: '2024-04-20T00:00:00.000Z', revokedAt: null, grantedBy: 'reconcile', revokedBy: null },
          { organizationId: 'globex', organizationRoleId: 'role-viewer', grantedAt: '2024-04-21T00:00:00.000Z', revokedAt: null, grantedBy: 'sweep', revokedBy: null },
        ],
        nextCursor: null,
      });
    });

    it('pages intervals', async () => {
      const { items, pages } = await walk<{ grantedAt: string }>(async (cursor) =>
        (await t.get(`/v1/users/alice/history?limit=4${cursor ? `&cursor=${cursor}` : ''}`).expect(200)).body,
      );
      expect(pages).toBe(2);
      expect(items).toHaveLength(6);
    });

    it('works for a deleted user: the deletion ends every open grant', async () => {
      expect((await t.get('/v1/users/zed/history').expect(200)).body.data).toEqual([
        { organizationId: 'acme', organizationRoleId: null, grantedAt: '2024-01-01T00:00:00.000Z', revokedAt: '2024-02-01T00:00:00.000Z', grantedBy: 'baseline', revokedBy: 'webhook' },
        { organizationId: 'acme', organizationRoleId: 'role-admin', grantedAt: '2024-01-01T00:00:00.000Z', revokedAt: '2024-02-01T00:00:00.000Z', grantedBy: 'baseline', revokedBy: 'webhook' },
      ]);
    });

    it('answers an empty list for a user without history, and 404 for an unknown user without history', async () => {
      expect((await t.get('/v1/users/dave/history').expect(200)).body).toEqual({ data: [], nextCursor: null });
      expectProblem(await t.get('/v1/users/nobody/history'), 404, 'not_found');
    });

    it('ends the intervals of a deleted organization (the writer logs each member\'s revokes)', async () => {
      await insertChanges(database.db, [
        { kind: 'member.added', source: 'webhook', userId: 'bob', organizationId: 'doomed', at: at('2024-06-01T00:00:00Z') },
        { kind: 'member_role.granted', source: 'sweep', userId: 'bob', organizationId: 'doomed', organizationRoleId: 'role-admin', at: at('2024-06-02T00:00:00Z') },
        { kind: 'member_role.revoked', source: 'webhook', userId: 'bob', organizationId: 'doomed', organizationRoleId: 'role-admin', at: at('2024-06-03T00:00:00Z'), details: { reason: 'organization.deleted' } },
        { kind: 'member.removed', source: 'webhook', userId: 'bob', organizationId: 'doomed', at: at('2024-06-03T00:00:00Z'), details: { reason: 'organization.deleted' } },
        { kind: 'organization.deleted', source: 'webhook', organizationId: 'doomed', at: at('2024-06-03T00:00:00Z') },
      ]);
      const intervals = (await t.get('/v1/users/bob/history').expect(200)).body.data as { organizationId: string; revokedAt: string | null }[];
      expect(intervals.filter((interval) => interval.organizationId === 'doomed')).toEqual([
        { organizationId: 'doomed', organizationRoleId: null, grantedAt: '2024-06-01T00:00:00.000Z', revokedAt: '2024-06-03T00:00:00.000Z', grantedBy: 'webhook', revokedBy: 'webhook' },
        { organizationId: 'doomed', organizationRoleId: 'role-admin', grantedAt: '2024-06-02T00:00:00.000Z', revokedAt: '2024-06-03T00:00:00.000Z', grantedBy: 'sweep', revokedBy: 'webhook' },
      ]);
    });
  });

  describe('pairGrantIntervals', () => {
    const change = (id: number, kind: string, fields: Partial<AccessChange> = {}): AccessChange => ({
      id,
      at: new Date(Date.UTC(2024, 0, id)),
      observedAt: new Date(Date.UTC(2024, 0, id)),
      kind,
      source: 'webhook',
      actor: null,
      userId: 'u',
      organizationId: 'o',
      organizationRoleId: null,
      details: null,
      syncRunId: null,
      deliveryId: null,
      ...fields,
    });

    it('ignores a repeated grant while open, closes roles with the membership, and keeps a revoke without grant', () => {
      const intervals = pairGrantIntervals([
        change(1, 'member_role.revoked', { organizationRoleId: 'r0' }),
        change(2, 'member.added'),
        change(3, 'member.added', { source: 'reconcile' }),
        change(4, 'member_role.granted', { organizationRoleId: 'r1' }),
        change(5, 'member.removed'),
      ]);
      expect(intervals.map(({ key, organizationRoleId, grantedAt, revokedAt }) => ({ key, organizationRoleId, granted: grantedAt?.getUTCDate() ?? null, revoked: revokedAt?.getUTCDate() ?? null }))).toEqual([
        { key: 1, organizationRoleId: 'r0', granted: null, revoked: 1 },
        { key: 2, organizationRoleId: null, granted: 2, revoked: 5 },
        { key: 4, organizationRoleId: 'r1', granted: 4, revoked: 5 },
      ]);
    });

    it('ends everything in an organization at organization.deleted, and everything at user.deleted', () => {
      const intervals = pairGrantIntervals([
        change(1, 'member.added'),
        change(2, 'member_role.granted', { organizationRoleId: 'r1' }),
        change(3, 'member.added', { organizationId: 'p' }),
        change(4, 'organization.deleted', { userId: null }),
        change(5, 'user.deleted', { organizationId: null }),
      ]);
      expect(intervals.map((interval) => [interval.organizationId, interval.organizationRoleId, interval.revokedAt?.getUTCDate()])).toEqual([
        ['o', null, 4],
        ['o', 'r1', 4],
        ['p', null, 5],
      ]);
    });
  });
});
