import type { Database } from '../db/client.js';
import { insertClaimedDelivery, insertDelivery, type Delivery, type DeliveryInput } from '../db/inbox.js';
import { insertDeliveries, type BatchItem, type BatchResult } from '../db/inbox-batch.js';

export type StoredDelivery = { id: number; duplicate: boolean; delivery?: Delivery };

export type DeliveryStore = {
  /**
   * Commits a verified delivery to the inbox (claimed for `leaseMs` when given, else pending) and
   * resolves once it is committed; rejects when it could not be stored.
   */
  store(input: DeliveryInput, leaseMs: number | null): Promise<StoredDelivery>;
};

export type DeliveryStoreOptions = {
  /** Deliveries stored by one statement at the most. Default 200. */
  maxBatch?: number;
  /**
   * Inserts in flight at once. Default 2: requests arriving while they run wait for the next one and go
   * with it, so under load a delivery waits at most about one insert, and each insert takes many.
   */
  maxInFlight?: number;
};

type Waiting = { item: BatchItem; resolve: (stored: StoredDelivery) => void; reject: (error: unknown) => void };

/** One delivery on its own, by the one-row statements (claimed at intake, or pending). */
const storeOne = (db: Database, { input, leaseMs }: BatchItem): Promise<StoredDelivery> =>
  leaseMs === null ? insertDelivery(db, input) : insertClaimedDelivery(db, input, leaseMs);

/**
 * Gathers the deliveries the receiver verifies in one turn of the event loop, and those that arrive while
 * the inserts before them are in flight, into one insert (`insertDeliveries`): a lone delivery goes at
 * once, by itself. Under a stream of deliveries each one otherwise cost an insert, a commit and the
 * driver's round trip of its own, most of what receiving it cost. Every delivery is still committed before
 * its request is answered. Two requests with the same body (one dedup key) in one batch are stored once:
 * the later one is the duplicate. A batch that fails is stored again one delivery at a time, so a delivery
 * the database refuses fails alone and the others of its batch are stored.
 */
export const createDeliveryStore = (db: Database, options: DeliveryStoreOptions = {}): DeliveryStore => {
  const maxBatch = Math.max(1, options.maxBatch ?? 200);
  const maxInFlight = Math.max(1, options.maxInFlight ?? 2);
  let waiting: Waiting[] = [];
  let inFlight = 0;
  let scheduled = false;

  const run = async (batch: Waiting[]) => {
    if (batch.length === 1) {
      const [only] = batch as [Waiting];
      await storeOne(db, only.item).then(only.resolve, only.reject);
      return;
    }
    // The first of each dedup key is stored; a later one with the same key is that row's duplicate.
    const firstByKey = new Map<string, number>();
    const distinct: Waiting[] = [];
    const repeats: [Waiting, number][] = [];
    for (const entry of batch) {
      const first = firstByKey.get(entry.item.input.dedupKey);
      if (first === undefined) {
        firstByKey.set(entry.item.input.dedupKey, distinct.length);
        distinct.push(entry);
      } else repeats.push([entry, first]);
    }
    let results: BatchResult[];
    try {
      results = await insertDeliveries(
        db,
        distinct.map((entry) => entry.item),
      );
    } catch {
      // One at a time: a delivery the database refuses (or an outage) fails on its own account.
      await Promise.all(distinct.map((entry) => storeOne(db, entry.item).then(entry.resolve, entry.reject)));
      for (const [entry] of repeats) storeOne(db, entry.item).then(entry.resolve, entry.reject);
      return;
    }
    distinct.forEach((entry, index) => entry.resolve(results[index]!));
    for (const [entry, first] of repeats) entry.resolve({ id: results[first]!.id, duplicate: true });
  };

  const flush = () => {
    scheduled = false;
    while (waiting.length > 0 && inFlight < maxInFlight) {
      const batch = waiting.slice(0, maxBatch);
      waiting = waiting.slice(batch.length);
      inFlight += 1;
      void run(batch).finally(() => {
        inFlight -= 1;
        flush();
      });
    }
  };

  return {
    store(input, leaseMs) {
      return new Promise<StoredDelivery>((resolve, reject) => {
        waiting.push({ item: { input, leaseMs }, resolve, reject });
        if (!scheduled && inFlight < maxInFlight) {
          scheduled = true;
          // After the other requests read in this turn of the event loop have been verified.
          setImmediate(flush);
        }
      });
    },
  };
};
