import type { Database } from './client.js';
import { claimedAtIntake, contentHash, eventName, type Delivery, type DeliveryInput, type StoredAtIntake } from './inbox.js';
import { arrayLiteral, prepared, preparedRows } from './prepared.js';
import { isoSql } from './queries/json-text.js';

/**
 * Many verified deliveries stored by one statement, each pending or already claimed (its own lease), as
 * `insertDelivery` and `insertClaimedDelivery` store one. The receiver gathers the requests that arrive
 * together: one insert and one commit for all of them instead of one each, where that round trip, its
 * commit and the driver's work around it were most of what a delivery cost beside the worker applying it.
 */
export type BatchItem = { input: DeliveryInput; leaseMs: number | null };
export type BatchResult = { id: number; duplicate: false; delivery?: Delivery } | { id: number; duplicate: true; delivery?: undefined };

// Rows in array order (`ordinality`), so ids follow the order the deliveries were received in; a row
// with a lease is stored as a claim would leave it (processing, attempt 1), the others as the defaults do.
const insertBatchStatement = prepared(
  'insert_webhook_deliveries_batch',
  `insert into webhook_deliveries (dedup_key, content_hash, event, channel, payload, status, attempts, lease_until)
   select d.dedup_key, d.content_hash, d.event, d.channel, d.payload,
     case when d.lease is null then 'pending' else 'processing' end,
     case when d.lease is null then 0 else 1 end,
     now() + make_interval(secs => d.lease)
   from rows from (unnest($1::text[]), unnest($2::text[]), unnest($3::text[]), unnest($4::text[]), jsonb_array_elements($5::jsonb),
     unnest($6::float8[])) with ordinality as d(dedup_key, content_hash, event, channel, payload, lease, n)
   order by d.n
   on conflict (dedup_key) do nothing
   returning id::text as id, dedup_key, ${isoSql('received_at')} as received_at, ${isoSql('next_attempt_at')} as next_attempt_at,
     ${isoSql('lease_until')} as lease_until`,
);
const deliveriesByDedupKeyStatement = prepared(
  'find_webhook_deliveries_by_dedup_keys',
  'select id::text as id, dedup_key from webhook_deliveries where dedup_key = any($1::text[])',
);

/**
 * Stores `items` (their dedup keys distinct) in one statement and answers each as the one-row functions
 * would: a new row's id, with the delivery as a claim returns it when it was given a lease; or the
 * existing row's id with `duplicate: true` (a duplicate is never claimed).
 */
export const insertDeliveries = async (db: Database, items: BatchItem[]): Promise<BatchResult[]> => {
  const hashes = items.map(({ input }) => contentHash(input.payload));
  const events = items.map(({ input }) => eventName(input.payload));
  const inserted = await preparedRows<StoredAtIntake & { dedup_key: string }>(
    db,
    insertBatchStatement,
    [
      arrayLiteral(items.map(({ input }) => input.dedupKey)),
      arrayLiteral(hashes),
      arrayLiteral(events),
      arrayLiteral(items.map(({ input }) => input.channel)),
      // The payloads as one JSON array of their texts as received: nothing to escape, and one parse.
      `[${items.map(({ input }) => input.payloadText ?? JSON.stringify(input.payload)).join(',')}]`,
      arrayLiteral(items.map(({ leaseMs }) => (leaseMs === null ? null : leaseMs / 1000))),
    ],
  );
  const byKey = new Map(inserted.map((row) => [row.dedup_key, row]));
  const missing = items.filter(({ input }) => !byKey.has(input.dedupKey)).map(({ input }) => input.dedupKey);
  const existing =
    missing.length === 0
      ? new Map<string, number>()
      : new Map(
          (await preparedRows<{ id: string; dedup_key: string }>(db, deliveriesByDedupKeyStatement, [arrayLiteral(missing)])).map((row) => [
            row.dedup_key,
            Number(row.id),
          ]),
        );
  return items.map(({ input, leaseMs }, index): BatchResult => {
    const row = byKey.get(input.dedupKey);
    if (!row) {
      const id = existing.get(input.dedupKey);
      if (id === undefined) throw new Error('a delivery conflicted on its dedup key but the existing row was not found');
      return { id, duplicate: true };
    }
    const id = Number(row.id);
    if (leaseMs === null) return { id, duplicate: false };
    return { id, duplicate: false, delivery: claimedAtIntake(input, hashes[index]!, events[index]!, row) };
  });
};
