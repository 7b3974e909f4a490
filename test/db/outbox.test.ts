import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { eventOutbox, organizationRoles, organizations, users } from '../../db/schema.js';
import { accessEventOf, buildAccessEvents } from '../../src/db/access-events.js';
import { rows, type DatabaseHandle } from '../../src/db/client.js';
import { deleteEventSubscription } from '../../src/db/event-subscriptions.js';
import { claimOutbox, claimOutboxFromFrontier, deliveredAttempt, settleAttempts } from '../../src/db/outbox.js';
import { recordChanges } from '../../src/sync/apply/changes.js';
import { createEventSubscription } from '../../src/sync/event-subscriptions.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** The outbox's writes, as PostgreSQL counts them: updates, and those that wrote no index entry (HOT). */
const outboxUpdates = async (session: DatabaseHandle) => {
  // A backend reports its counts when it goes idle; forced, they are visible to its next statement.
  await session.db.execute(sql`select pg_stat_force_next_flush()`);
  await session.db.execute(sql`select pg_stat_clear_snapshot()`);
  const [row] = await rows<{ updated: string; hot: string }>(
    session.db,
    sql`select n_tup_upd as updated, n_tup_hot_upd as hot from pg_stat_user_tables where relid = 'event_outbox'::regclass`,
  );
  return { updated: Number(row!.updated), hot: Number(row!.hot) };
};

describe('the event outbox', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
    await createEventSubscription(database.db, { url: 'http://127.0.0.1:9/events' }, { allowPrivateUrls: true });
  });
  afterAll(async () => {
    await database.drop();
  });

  it('claims rows without writing index entries (HOT updates), and keeps them open until settled', async () => {
    await recordChanges(
      database.db,
      Array.from({ length: 20 }, (_, index) => ({ kind: 'user.updated' as const, userId: `hot_user_${index}` })),
      { source: 'webhook', observedAt: new Date() },
    );
    const session = database.separatePool(1);
    try {
      const before = await outboxUpdates(session);
      const claimed = await claimOutbox(session.db, 100, 60_000, Number.MAX_SAFE_INTEGER);
      expect(claimed).toHaveLength(20);
      const after = await outboxUpdates(session);
      expect(after.updated - before.updated).toBe(20);
      expect(after.hot - before.hot).toBe(20);

      const open = await database.db.$count(eventOutbox, sql`${eventOutbox.open}`);
      expect(open).toBe(20);
      await settleAttempts(session.db, claimed.map((row) => deliveredAttempt(row, 204)));
      expect(await database.db.$count(eventOutbox, sql`${eventOutbox.open}`)).toBe(0);
      expect(await database.db.$count(eventOutbox, sql`${eventOutbox.status} = 'delivered'`)).toBe(20);
    } finally {
      await session.close();
    }
  });

  it('claims and settles rows by their primary key, without reading the delivered history', async () => {
    const change = (prefix: string, count: number) =>
      recordChanges(
        database.db,
        Array.from({ length: count }, (_, index) => ({ kind: 'user.updated' as const, userId: `${prefix}_${index}` })),
        { source: 'webhook', observedAt: new Date() },
      );
    // A history of delivered rows, the bulk of a live outbox.
    for (let batch = 0; batch < 30; batch += 1) await change(`history_${batch}`, 200);
    for (;;) {
      const claimed = await claimOutbox(database.db, 500, 60_000, Number.MAX_SAFE_INTEGER);
      if (claimed.length === 0) break;
      await settleAttempts(database.db, claimed.map((row) => deliveredAttempt(row, 204)));
    }
    // A claim as large as the sender's (256 rows at the most), where reading the table costs the least against probing the key.
    await change('by_key', 256);
    const session = database.separatePool(1);
    try {
      const read = async () => {
        await session.db.execute(sql`select pg_stat_force_next_flush()`);
        await session.db.execute(sql`select pg_stat_clear_snapshot()`);
        const [row] = await rows<{ read: string }>(
          session.db,
          sql`select coalesce(seq_tup_read, 0) as read from pg_stat_user_tables where relid = 'event_outbox'::regclass`,
        );
        return Number(row!.read);
      };
      const before = await read();
      const claimed = await claimOutbox(session.db, 256, 60_000, Number.MAX_SAFE_INTEGER);
      expect(claimed).toHaveLength(256);
      await settleAttempts(session.db, claimed.map((row) => deliveredAttempt(row, 204)));
      // A sequential scan of the outbox would read its 6,000 delivered rows per statement.
      expect((await read()) - before).toBe(0);
      expect(await database.db.$count(eventOutbox, sql`${eventOutbox.open}`)).toBe(0);
    } finally {
      await session.close();
    }
  });

  it('leaves its connection usable after a settlement that fails inside its transaction', async () => {
    const session = database.separatePool(1);
    try {
      // An attempt count out of the column's range fails the statement between the begin and the commit.
      await expect(settleAttempts(session.db, [{ release: { id: 1, attempts: 99_999_999_999, previousAttemptAt: null } }])).rejects.toThrow(/out of range/);
      const [row] = await rows<{ ok: number }>(session.db, sql`select 1 as ok`);
      expect(row!.ok).toBe(1);
    } finally {
      await session.close();
    }
  });

  it('settles failures, retries and hand-backs with their text kept byte for byte', async () => {
    await recordChanges(
      database.db,
      [
        { kind: 'user.updated', userId: 'settle_user_a' },
        { kind: 'user.updated', userId: 'settle_user_b' },
        { kind: 'user.updated', userId: 'settle_user_c' },
      ],
      { source: 'webhook', observedAt: new Date() },
    );
    const [failed, retried, handedBack] = await claimOutbox(database.db, 10, 60_000, Number.MAX_SAFE_INTEGER);
    const awkward = 'refused: "quoted", back\\slash, {braces}, NULL';
    const payload = '{"type":"user.updated","data":{"name":"A \\"B\\" \\\\ C, {D}"}}';
    const previousAttemptAt = new Date('2026-01-02T03:04:05.678Z');
    await settleAttempts(database.db, [
      { claim: { id: failed!.id, attempts: failed!.attempts }, subscriptionId: failed!.subscriptionId, payload, status: null, error: awkward, ok: false, retryInMs: null },
      { claim: { id: retried!.id, attempts: retried!.attempts }, subscriptionId: retried!.subscriptionId, payload: 'NULL', status: 500, error: 'HTTP 500', ok: false, retryInMs: 300_000 },
      { release: { id: handedBack!.id, attempts: handedBack!.attempts, previousAttemptAt } },
    ]);
    const byId = async (id: number) => (await database.db.select().from(eventOutbox).where(eq(eventOutbox.id, id)))[0]!;

    const failedRow = await byId(failed!.id);
    expect(failedRow).toMatchObject({ status: 'failed', open: false, lastError: awkward, payload, lastStatus: null, leaseUntil: null });

    const retriedRow = await byId(retried!.id);
    expect(retriedRow).toMatchObject({ status: 'pending', open: true, payload: 'NULL', lastStatus: 500, attempts: 1 });
    const wait = retriedRow.nextAttemptAt.getTime() - retriedRow.lastAttemptAt!.getTime();
    expect(wait).toBeGreaterThan(299_000);
    expect(wait).toBeLessThan(301_000);

    const handedBackRow = await byId(handedBack!.id);
    expect(handedBackRow).toMatchObject({ status: 'pending', open: true, attempts: 0, lastAttemptAt: previousAttemptAt, leaseUntil: null });
  });

  it('prepares the scan and the update of a claim once per PostgreSQL connection (none on PGlite), and claims with them again', async () => {
    await recordChanges(
      database.db,
      Array.from({ length: 3 }, (_, index) => ({ kind: 'user.updated' as const, userId: `prepared_user_${index}` })),
      { source: 'webhook', observedAt: new Date() },
    );
    const session = database.separatePool(1);
    const preparedClaims = async () =>
      (
        await rows<{ name: string; generic_plans: string | number; custom_plans: string | number }>(
          session.db,
          sql`select name, generic_plans, custom_plans from pg_prepared_statements where name like 'las_claim%' order by name`,
        )
      ).map((row) => ({ statement: row.name.replace(/_[0-9a-f]{16}$/, ''), executions: Number(row.generic_plans) + Number(row.custom_plans) }));
    try {
      // On embedded PGlite, in this process, the statements are run with their arguments written in: there
      // is no round trip to save, and nothing is prepared.
      const onServer = inject('databaseMode') === 'postgres';
      const first = await claimOutbox(session.db, 1, 60_000, Number.MAX_SAFE_INTEGER);
      expect(await preparedClaims()).toEqual(
        onServer
          ? [
              { statement: 'las_claim', executions: 1 },
              { statement: 'las_claimed', executions: 1 },
            ]
          : [],
      );
      // Rows left open by the tests before may come first: the second claim takes what is left.
      const second = await claimOutbox(session.db, 100, 60_000, Number.MAX_SAFE_INTEGER);
      expect(await preparedClaims()).toEqual(
        onServer
          ? [
              { statement: 'las_claim', executions: 2 },
              { statement: 'las_claimed', executions: 2 },
            ]
          : [],
      );
      const claimed = [...first, ...second].filter((row) => row.userId?.startsWith('prepared_user_'));
      expect(claimed.map((row) => row.userId).sort()).toEqual(['prepared_user_0', 'prepared_user_1', 'prepared_user_2']);
    } finally {
      await session.close();
    }
  });

  it('claims from a frontier up to the first missing change id only, with the subscription and change that sending needs', async () => {
    const context = { source: 'webhook' as const, observedAt: new Date() };
    const [last] = await rows<{ id: string }>(database.db, sql`select coalesce(max(id), 0)::text as id from access_changes`);
    const frontier = Number(last!.id);
    const [first] = await recordChanges(database.db, [{ kind: 'user.updated', userId: 'frontier_user_a' }], context);
    // A change whose transaction rolled back leaves its id missing for good; until the frontier's gap
    // watch steps over it, nothing after it may be claimed (an earlier change could still be committing).
    await database.db
      .transaction(async (tx) => {
        await recordChanges(tx, [{ kind: 'user.updated', userId: 'frontier_user_b' }], context);
        tx.rollback();
      })
      .catch(() => {});
    const [third] = await recordChanges(database.db, [{ kind: 'user.updated', userId: 'frontier_user_c' }], context);
    expect(third).toBeGreaterThan(first! + 1);
    const mine = (claimed: { rows: { userId: string | null }[] }) => claimed.rows.filter((row) => row.userId?.startsWith('frontier_user_'));

    const held = await claimOutboxFromFrontier(database.db, 100, 60_000, frontier);
    expect(held).toMatchObject({ reached: first, gap: true });
    expect(mine(held)).toHaveLength(1);
    const [claimed] = mine(held) as Awaited<ReturnType<typeof claimOutboxFromFrontier>>['rows'];
    expect(claimed).toMatchObject({
      changeId: first,
      subscription: { url: 'http://127.0.0.1:9/events', previousSecret: null, previousSecretExpiresAt: null },
      change: { id: first, kind: 'user.updated', userId: 'frontier_user_a', source: 'webhook', organizationId: null },
    });
    expect(claimed!.subscription!.secret).toMatch(/^whsec_/);
    expect(claimed!.change!.at).toBeInstanceOf(Date);

    // Past the gap (the watch stepped over it), the next change is claimed and the frontier reaches it.
    const next = await claimOutboxFromFrontier(database.db, 100, 60_000, third! - 1);
    expect(next).toMatchObject({ reached: third, gap: false });
    expect(mine(next).map((row) => row.userId)).toEqual(['frontier_user_c']);
  });
  it('leaves no row of a deleted subscription, even one queued by a transaction still open when the delete began', async () => {
    const doomed = await createEventSubscription(database.db, { url: 'http://127.0.0.1:9/doomed' }, { allowPrivateUrls: true });
    const rowsOf = (id: string) => database.db.$count(eventOutbox, eq(eventOutbox.subscriptionId, id));
    const context = { source: 'webhook' as const, observedAt: new Date() };
    const writer = database.separatePool(1);
    let commit!: () => void;
    let queued!: () => void;
    const committing = new Promise<void>((resolve) => (commit = resolve));
    const written = new Promise<void>((resolve) => (queued = resolve));
    try {
      const open = writer.db.transaction(async (tx) => {
        await recordChanges(tx, [{ kind: 'user.updated', userId: 'doomed_user_a' }], context);
        queued();
        await committing;
      });
      await written;
      let deleted: boolean | undefined;
      const deleting = deleteEventSubscription(database.db, doomed.id).then((result) => (deleted = result));
      // The delete waits for the writer, which holds the subscription until it commits.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(deleted).toBeUndefined();
      commit();
      await open;
      await deleting;
      expect(deleted).toBe(true);
      expect(await rowsOf(doomed.id)).toBe(0);

      // Changes after the delete queue nothing for it; the other subscription still gets its row.
      const [later] = await recordChanges(database.db, [{ kind: 'user.updated', userId: 'doomed_user_b' }], context);
      expect(await rowsOf(doomed.id)).toBe(0);
      expect(await database.db.$count(eventOutbox, eq(eventOutbox.changeId, later!))).toBe(1);
      expect(await deleteEventSubscription(database.db, doomed.id)).toBe(false);
    } finally {
      commit();
      await writer.close();
    }
  });
  it('reads a change once per claim, with one of its rows, however many subscriptions share it', async () => {
    const second = await createEventSubscription(database.db, { url: 'http://127.0.0.1:9/second' }, { allowPrivateUrls: true });
    try {
      const [changeId] = await recordChanges(database.db, [{ kind: 'user.updated', userId: 'shared_user' }], {
        source: 'webhook',
        observedAt: new Date(),
      });
      const claimed = (await claimOutbox(database.db, 100, 60_000, Number.MAX_SAFE_INTEGER)).filter((row) => row.changeId === changeId);
      expect(claimed.map((row) => row.subscriptionId).sort()).toHaveLength(2);
      const carriers = claimed.filter((row) => row.change !== null);
      expect(carriers).toHaveLength(1);
      expect(carriers[0]!.change).toMatchObject({ id: changeId, kind: 'user.updated', userId: 'shared_user' });
      expect(claimed.every((row) => row.subscription !== null && row.payload === null)).toBe(true);
    } finally {
      await deleteEventSubscription(database.db, second.id);
    }
  });
  it('reads with each change the fields of its user, organization and role, giving the body the change log gives', async () => {
    const observedAt = new Date('2026-11-30T10:00:00.000Z');
    await database.db.insert(users).values({
      id: 'body_user',
      username: 'body',
      primaryEmail: 'body@example.com',
      name: 'Body "quoted"',
      isSuspended: true,
      customData: { plan: 'pro', seats: 3, nested: { on: true } },
      profile: { givenName: 'B' },
      applicationId: 'app_1',
      lastSignInAt: new Date('2026-11-29T08:07:06.543Z'),
      createdAt: new Date('2026-01-02T03:04:05.678Z'),
      updatedAt: new Date('2026-11-28T00:00:00.001Z'),
      raw: {},
      observedAt,
    });
    await database.db.insert(organizations).values({
      id: 'body_org',
      name: 'Body org',
      description: null,
      customData: { tier: 'gold' },
      isMfaRequired: true,
      createdAt: new Date('2025-05-06T07:08:09.010Z'),
      raw: {},
      observedAt,
    });
    await database.db.insert(organizationRoles).values({ id: 'body_role', name: 'admin', description: 'Admins', type: 'User', raw: {}, observedAt });
    const changeIds = await recordChanges(
      database.db,
      [
        { kind: 'member_role.granted', userId: 'body_user', organizationId: 'body_org', organizationRoleId: 'body_role' },
        { kind: 'user.updated', userId: 'body_user', details: { fields: ['name'] } },
        { kind: 'organization.updated', organizationId: 'body_org' },
        { kind: 'organization_role.updated', organizationRoleId: 'body_role' },
        { kind: 'user.deleted', userId: 'body_user_gone' },
      ],
      { source: 'webhook', observedAt },
    );
    const carriers = (await claimOutbox(database.db, 100, 60_000, Number.MAX_SAFE_INTEGER)).filter(
      (row) => changeIds.includes(row.changeId) && row.change !== null,
    );
    expect(carriers.map((row) => row.changeId)).toEqual(changeIds);
    const expected = await buildAccessEvents(
      database.db,
      carriers.map((row) => row.change!),
    );
    expect(carriers.map((row) => accessEventOf(row.change!, row.entities))).toEqual(expected);
    expect(expected[0]!.data).toMatchObject({
      user: { id: 'body_user', isSuspended: true, customData: { plan: 'pro', seats: 3, nested: { on: true } }, lastSignInAt: '2026-11-29T08:07:06.543Z' },
      organization: { id: 'body_org', isMfaRequired: true, createdAt: '2025-05-06T07:08:09.010Z' },
      organizationRole: { id: 'body_role', name: 'admin', type: 'User' },
    });
    expect(expected[4]!.data.user).toBeUndefined();
    // Byte for byte, as receivers see it.
    expect(carriers.map((row) => JSON.stringify(accessEventOf(row.change!, row.entities)))).toEqual(expected.map((event) => JSON.stringify(event)));
  });
});
