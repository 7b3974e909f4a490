import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { webhookDeliveries } from '../../db/schema.js';
import {
  claimDeliveries,
  contentHash,
  extendLeases,
  findByContentHash,
  findDelivery,
  inboxStats,
  insertDelivery,
  insertRecoveredDelivery,
  listDeadLetters,
  markApplied,
  markFailed,
  markIgnored,
  retryDeadLetter,
  retryDelayMs,
  settleDeliveries,
} from '../../src/db/inbox.js';
import { rows } from '../../src/db/client.js';
import { toJsonbOrder } from '../../src/simulator/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const policy = { maxAttempts: 3, baseMs: 1000, capMs: 60_000 };
const payload = (n: number) => ({ event: 'User.Created', createdAt: `2026-01-01T00:00:0${n}.000Z`, data: { id: `u${n}`, name: 'é' } });

describe('the inbox queries', () => {
  let database: TestDatabase;
  const db = () => database.db;
  const store = (n: number) => insertDelivery(db(), { dedupKey: `sha256:${n}`, channel: 'logto', payload: payload(n) });
  /** Makes every stored delivery due now (as if its backoff had passed). */
  const makeDue = () => db().update(webhookDeliveries).set({ nextAttemptAt: sql`now() - interval '1 second'` });

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });
  beforeEach(async () => {
    await db().delete(webhookDeliveries);
  });

  it('hashes content independently of key order, and finds a delivery by it', async () => {
    const a = { event: 'X', data: { b: 1, a: [{ y: 2, x: 1 }] } };
    const b = toJsonbOrder({ data: { a: [{ x: 1, y: 2 }], b: 1 }, event: 'X' });
    expect(contentHash(a)).toBe(contentHash(b));
    expect(contentHash(a)).not.toBe(contentHash({ ...a, event: 'Y' }));
    const { id } = await insertDelivery(db(), { dedupKey: 'k', channel: 'logto', payload: a });
    expect((await findByContentHash(db(), contentHash(b)))?.id).toBe(id);
    expect(await findByContentHash(db(), contentHash({ other: true }))).toBeNull();
  });

  it('stores a recovered delivery once, and not at all when the same content arrived already', async () => {
    const received = await store(1);
    const recovered = await insertRecoveredDelivery(db(), { logId: 'log1', payload: toJsonbOrder(payload(1)) as Record<string, unknown> });
    expect(recovered).toEqual({ id: received.id, duplicate: true });
    const fresh = await insertRecoveredDelivery(db(), { logId: 'log2', payload: payload(2) });
    expect(fresh.duplicate).toBe(false);
    expect(await insertRecoveredDelivery(db(), { logId: 'log2', payload: payload(2) })).toEqual({ id: fresh.id, duplicate: true });
    const row = await findDelivery(db(), fresh.id);
    expect(row).toMatchObject({ dedupKey: 'log:log2', channel: 'recent_logs', event: 'User.Created', status: 'pending' });
  });

  it('claims in id order, each delivery once, even when claims run at the same time', async () => {
    for (let n = 1; n <= 9; n += 1) await store(n);
    const claims = await Promise.all([claimDeliveries(db(), 4, 60_000), claimDeliveries(db(), 4, 60_000), claimDeliveries(db(), 4, 60_000)]);
    const ids = claims.flat().map((delivery) => delivery.id);
    expect(ids).toHaveLength(9);
    expect(new Set(ids).size).toBe(9);
    for (const claim of claims) expect(claim.map((d) => d.id)).toEqual([...claim.map((d) => d.id)].sort((x, y) => x - y));
    expect(claims.flat().every((delivery) => delivery.status === 'processing' && delivery.attempts === 1 && delivery.leaseUntil)).toBe(true);
    expect(await claimDeliveries(db(), 10, 60_000)).toEqual([]);
  });

  it('claims and renews leases with HOT updates (no indexed column changes), only the settlement adds index entries', async () => {
    // A database of its own: its statistics count only this test's updates.
    const own = await createTestDatabase();
    const db = () => own.db;
    const store = (n: number) => insertDelivery(db(), { dedupKey: `sha256:${n}`, channel: 'logto', payload: payload(n) });
    /** The table's row updates, all and HOT, once the backends have reported them (about once a second). */
    const updates = async () => {
      const [row] = await rows<{ all: number; hot: number }>(
        db(),
        sql`select n_tup_upd::int as "all", n_tup_hot_upd::int as hot from pg_stat_user_tables where relname = 'webhook_deliveries'`,
      );
      return row!;
    };
    const settledUpdates = async (expectedAll: number) => {
      for (let reads = 0; ; reads += 1) {
        const counts = await updates();
        if (counts.all >= expectedAll || reads > 100) return counts;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    const before = await updates();
    for (let n = 1; n <= 5; n += 1) await store(n);
    const claimed = await claimDeliveries(db(), 5, 60_000);
    await extendLeases(db(), claimed, 60_000);
    await settleDeliveries(db(), claimed.map((claim) => ({ claim, status: 'applied' as const })));
    const after = await settledUpdates(before.all + 15);
    expect({ all: after.all - before.all, hot: after.hot - before.hot }).toEqual({ all: 15, hot: 10 });
    // Inserts leave room in each page for the version a claim writes beside the old one.
    const [options] = await rows<{ reloptions: string[] | string }>(db(), sql`select reloptions from pg_class where relname = 'webhook_deliveries'`);
    expect(String(options!.reloptions)).toContain('fillfactor=70');
    await own.drop();
  });

  it('skips rows another transaction holds locked', async () => {
    await store(1);
    await store(2);
    await db().transaction(async (tx) => {
      await tx.execute(sql`select id from ${webhookDeliveries} where dedup_key = 'sha256:1' for update`);
      if (database.driver === 'pglite') return; // one connection: nothing else can run meanwhile
      const claimed = await claimDeliveries(db(), 10, 60_000);
      expect(claimed.map((delivery) => delivery.dedupKey)).toEqual(['sha256:2']);
    });
  });

  it('claims again a delivery whose lease ran out (its worker died), counting the attempt', async () => {
    const { id } = await store(1);
    const [first] = await claimDeliveries(db(), 1, 1);
    expect(first?.id).toBe(id);
    await db().update(webhookDeliveries).set({ leaseUntil: sql`now() - interval '1 second'` });
    const [again] = await claimDeliveries(db(), 1, 60_000);
    expect(again).toMatchObject({ id, attempts: 2, status: 'processing' });
    // The first claim can no longer settle it; the current one can.
    expect(await markApplied(db(), first!)).toBe(false);
    expect(await markApplied(db(), again!)).toBe(true);
    expect((await findDelivery(db(), id))?.status).toBe('applied');
  });

  it('renews the lease of a delivery in hand, and only for the current claim', async () => {
    const { id } = await store(1);
    const [claim] = await claimDeliveries(db(), 1, 1000);
    const before = (await findDelivery(db(), id))!.leaseUntil!.getTime();
    await extendLeases(db(), [claim!], 600_000);
    const after = (await findDelivery(db(), id))!.leaseUntil!.getTime();
    expect(after).toBeGreaterThan(before + 500_000);
    await extendLeases(db(), [{ id, attempts: 99 }], 1);
    expect((await findDelivery(db(), id))!.leaseUntil!.getTime()).toBe(after);
  });

  it('settles many claims in one statement, only those still held', async () => {
    for (let n = 1; n <= 4; n += 1) await store(n);
    const claims = await claimDeliveries(db(), 4, 60_000);
    const held = await settleDeliveries(db(), [
      { claim: claims[0]!, status: 'applied' },
      { claim: claims[1]!, status: 'ignored' },
      // Taken over by another worker since: a later claim counts another attempt.
      { claim: { id: claims[2]!.id, attempts: claims[2]!.attempts + 1 }, status: 'applied' },
    ]);
    expect([...held].sort((a, b) => a - b)).toEqual([claims[0]!.id, claims[1]!.id]);
    const statuses = await Promise.all(claims.map(async (claim) => (await findDelivery(db(), claim.id))!));
    expect(statuses.map((row) => row.status)).toEqual(['applied', 'ignored', 'processing', 'processing']);
    expect(statuses[0]).toMatchObject({ leaseUntil: null, lastError: null });
    expect(statuses[0]!.processedAt).toBeInstanceOf(Date);
  });

  it('marks deliveries applied or ignored', async () => {
    await store(1);
    await store(2);
    const [one, two] = await claimDeliveries(db(), 2, 60_000);
    await markApplied(db(), one!);
    await markIgnored(db(), two!);
    const rows = await db().select().from(webhookDeliveries).orderBy(webhookDeliveries.id);
    expect(rows.map((row) => [row.status, row.leaseUntil, row.processedAt instanceof Date])).toEqual([
      ['applied', null, true],
      ['ignored', null, true],
    ]);
  });

  it('backs off exponentially with jitter, never to zero and never past the cap', () => {
    const delays = [1, 2, 3, 4].map((attempt) => [retryDelayMs(attempt, policy, () => 0), retryDelayMs(attempt, policy, () => 0.5)]);
    expect(delays).toEqual([
      [500, 750],
      [1000, 1500],
      [2000, 3000],
      [4000, 6000],
    ]);
    expect(retryDelayMs(30, policy, () => 0.999)).toBeLessThanOrEqual(60_000);
    expect(retryDelayMs(30, policy, () => 0)).toBe(30_000);
  });

  it('retries a failed delivery later, makes it a dead letter after the last attempt, and lets an operator retry it', async () => {
    const { id } = await store(1);
    for (let attempt = 1; attempt <= policy.maxAttempts; attempt += 1) {
      const [claim] = await claimDeliveries(db(), 1, 60_000);
      expect(claim).toMatchObject({ id, attempts: attempt });
      const outcome = await markFailed(db(), claim!, `Logto is down (${attempt})`, policy);
      const row = (await findDelivery(db(), id))!;
      if (attempt < policy.maxAttempts) {
        expect(outcome).toEqual({ dead: false, retryInMs: expect.any(Number) });
        expect(row.status).toBe('pending');
        expect(row.nextAttemptAt.getTime()).toBeGreaterThan(Date.now() + 100);
        // Not claimable before its time.
        expect(await claimDeliveries(db(), 1, 60_000)).toEqual([]);
        await makeDue();
      } else {
        expect(outcome).toEqual({ dead: true });
        expect(row).toMatchObject({ status: 'dead', lastError: 'Logto is down (3)' });
      }
    }
    expect((await listDeadLetters(db())).map((row) => row.id)).toEqual([id]);
    expect((await inboxStats(db())).dead).toBe(1);
    expect(await claimDeliveries(db(), 1, 60_000)).toEqual([]);
    expect(await retryDeadLetter(db(), id)).toBe(true);
    expect(await retryDeadLetter(db(), id)).toBe(false);
    const [retried] = await claimDeliveries(db(), 1, 60_000);
    expect(retried).toMatchObject({ id, attempts: 1 });
  });

  it('makes a permanent failure a dead letter at once', async () => {
    const { id } = await store(1);
    const [claim] = await claimDeliveries(db(), 1, 60_000);
    expect(await markFailed(db(), claim!, 'payload is not usable', policy, { permanent: true })).toEqual({ dead: true });
    expect((await findDelivery(db(), id))?.status).toBe('dead');
  });

  it('reports depth, the oldest unsettled delivery and the dead letters', async () => {
    expect(await inboxStats(db())).toEqual({ depth: 0, oldestPendingReceivedAt: null, dead: 0 });
    const { id: first } = await store(1);
    await store(2);
    await store(3);
    await db().update(webhookDeliveries).set({ receivedAt: new Date('2026-01-01T00:00:00Z') }).where(eq(webhookDeliveries.id, first));
    const [claim] = await claimDeliveries(db(), 1, 60_000);
    await markFailed(db(), claim!, 'broken', policy, { permanent: true });
    const stats = await inboxStats(db());
    expect(stats.depth).toBe(2);
    expect(stats.dead).toBe(1);
    expect(stats.oldestPendingReceivedAt!.getTime()).toBeGreaterThan(new Date('2026-01-01T00:00:00Z').getTime());
  });
});
