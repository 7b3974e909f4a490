import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { webhookDeliveries } from '../../db/schema.js';
import { rows } from '../../src/db/client.js';
import { contentHash, findDelivery, insertDelivery, type DeliveryInput } from '../../src/db/inbox.js';
import { createDeliveryStore } from '../../src/webhooks/delivery-store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** The receiver's inbox writes: deliveries verified in one turn of the event loop share one insert. */
describe('the receiver storing deliveries that arrive together', () => {
  let database: TestDatabase;
  const input = (n: number, extra = ''): DeliveryInput => {
    const payload = { event: 'User.Data.Updated', createdAt: `2026-01-01T00:00:00.${String(n).padStart(3, '0')}Z`, params: { userId: `u${n}` } };
    const text = extra ? `${JSON.stringify(payload).slice(0, -1)},${extra}}` : JSON.stringify(payload);
    return { dedupKey: `test:${n}`, channel: 'logto', payload, payloadText: text };
  };
  /** Each row with the transaction that wrote it (`xmin`): rows of one insert share it. */
  const written = () =>
    rows<{ id: string; dedup_key: string; status: string; attempts: number; lease_until: string | null; writer: string; leased_secs: number | null }>(
      database.db,
      sql`select id::text, dedup_key, status, attempts, lease_until::text, xmin::text as writer,
            extract(epoch from lease_until - received_at)::float8 as leased_secs
          from ${webhookDeliveries} order by id`,
    );

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });
  beforeEach(async () => {
    await database.db.delete(webhookDeliveries);
  });

  it('stores them with one insert, in the order received, each claimed or pending as asked, and answers each as if alone', async () => {
    const earlier = await insertDelivery(database.db, input(99));
    const store = createDeliveryStore(database.db);
    // In one turn: claimed and pending ones, a repeat of one of them, and one already stored.
    const asked = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => ({ input: input(n), leaseMs: n % 2 === 0 ? 30_000 : null }));
    const results = await Promise.all([
      ...asked.map(({ input: one, leaseMs }) => store.store(one, leaseMs)),
      store.store(input(3), 30_000),
      store.store(input(99), null),
    ]);

    const stored = (await written()).filter((row) => row.dedup_key !== 'test:99');
    expect(stored.map((row) => row.dedup_key)).toEqual(asked.map(({ input: one }) => one.dedupKey));
    expect(new Set(stored.map((row) => row.writer)).size).toBe(1);
    stored.forEach((row, index) => {
      const claimed = asked[index]!.leaseMs !== null;
      expect(results[index]).toMatchObject({ id: Number(row.id), duplicate: false });
      expect(row).toMatchObject({ status: claimed ? 'processing' : 'pending', attempts: claimed ? 1 : 0 });
      if (claimed) expect(row.leased_secs).toBeCloseTo(30, 1);
      else expect(row.lease_until).toBeNull();
    });
    expect(results[8]).toEqual({ id: results[2]!.id, duplicate: true });
    expect(results[9]).toEqual({ id: earlier.id, duplicate: true });

    // A claimed one comes back as a claim returns it, its payload the object given.
    for (const [index, result] of results.slice(0, 8).entries()) {
      if (asked[index]!.leaseMs === null) {
        expect(result.delivery).toBeUndefined();
        continue;
      }
      const row = await findDelivery(database.db, result.id);
      expect(result.delivery).toEqual({ ...row, payload: asked[index]!.input.payload });
      expect(row!.payload).toEqual(asked[index]!.input.payload);
      expect(row!.contentHash).toBe(contentHash(asked[index]!.input.payload));
    }
  });

  it('stores a lone delivery at once by itself, and the others of a batch the database refuses one of', async () => {
    const store = createDeliveryStore(database.db);
    const alone = await store.store(input(1), null);
    expect(alone).toMatchObject({ duplicate: false });

    // Valid JSON that PostgreSQL cannot hold as jsonb (a number beyond numeric's range).
    const refused = input(2, '"n":1e1000000');
    const outcomes = await Promise.allSettled([store.store(input(3), 30_000), store.store(refused, null), store.store(input(4), null)]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    // Stored again one at a time and concurrently (as single inserts always were): in no particular order.
    expect((await written()).map((row) => row.dedup_key).sort()).toEqual(['test:1', 'test:3', 'test:4']);
  });
});
