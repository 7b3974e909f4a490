import { createHash } from 'node:crypto';
import { and, eq, inArray, sql } from 'drizzle-orm';
import { webhookDeliveries } from '../../db/schema.js';
import { rows, type Database } from './client.js';

export type Delivery = typeof webhookDeliveries.$inferSelect;
export type DeliveryChannel = 'logto' | 'svix' | 'recent_logs';

const canonical = (value: unknown): unknown =>
  Array.isArray(value)
    ? value.map(canonical)
    : value && typeof value === 'object'
      ? Object.fromEntries(
          Object.entries(value as Record<string, unknown>)
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([key, inner]) => [key, canonical(inner)]),
        )
      : value;

/** SHA-256 of the payload with keys sorted: the same event hashes alike however it was serialised. */
export const contentHash = (payload: unknown): string =>
  createHash('sha256').update(JSON.stringify(canonical(payload))).digest('hex');

export const event = (payload: Record<string, unknown>): string =>
  typeof payload.event === 'string' && payload.event.length > 0 ? payload.event.slice(0, 200) : 'unknown';

/**
 * Stores a verified delivery; a second delivery with the same dedup key is not stored again, and the
 * first one's id is returned with `duplicate: true`.
 */
export const insertDelivery = async (
  db: Database,
  input: { dedupKey: string; channel: DeliveryChannel; payload: Record<string, unknown> },
): Promise<{ id: number; duplicate: boolean }> => {
  const [inserted] = await db
    .insert(webhookDeliveries)
    .values({
      dedupKey: input.dedupKey,
      contentHash: contentHash(input.payload),
      event: event(input.payload),
      channel: input.channel,
      payload: input.payload,
    })
    .onConflictDoNothing({ target: webhookDeliveries.dedupKey })
    .returning({ id: webhookDeliveries.id });
  if (inserted) return { id: inserted.id, duplicate: false };
  const [existing] = await db
    .select({ id: webhookDeliveries.id })
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.dedupKey, input.dedupKey));
  return { id: existing!.id, duplicate: true };
};

/**
 * A delivery recovered from Logto's hook logs. Logto stores the body re-serialised (jsonb key order), so
 * the raw-body hash cannot match; the content hash recognises a delivery we did receive after all.
 */
export const insertRecoveredDelivery = async (
  db: Database,
  input: { logId: string; payload: Record<string, unknown> },
): Promise<{ id: number; duplicate: boolean }> => {
  const [known] = await db
    .select({ id: webhookDeliveries.id })
    .from(webhookDeliveries)
    .where(eq(webhookDeliveries.contentHash, contentHash(input.payload)))
    .limit(1);
  if (known) return { id: known.id, duplicate: true };
  return insertDelivery(db, { dedupKey: `log:${input.logId}`, channel: 'recent_logs', payload: input.payload });
};

/**
 * Claims up to `limit` deliveries for this worker: pending ones that are due, and processing ones whose
 * lease ran out (their worker died). SKIP LOCKED lets any number of workers claim side by side.
 */
export const claimDeliveries = async (db: Database, limit: number, leaseMs: number): Promise<Delivery[]> => {
  const claimed = await rows<{ id: number }>(
    db,
    sql`update ${webhookDeliveries} set status = 'processing', attempts = attempts + 1,
          lease_until = now() + make_interval(secs => ${leaseMs / 1000})
        where id in (
          select id from ${webhookDeliveries}
          where (status = 'pending' or (status = 'processing' and lease_until < now())) and next_attempt_at <= now()
          order by id limit ${limit}
          for update skip locked)
        returning id`,
  );
  if (claimed.length === 0) return [];
  return db
    .select()
    .from(webhookDeliveries)
    .where(inArray(webhookDeliveries.id, claimed.map((row) => Number(row.id))))
    .orderBy(webhookDeliveries.id);
};

export const markProcessed = async (db: Database, id: number, status: 'applied' | 'ignored'): Promise<void> => {
  await db
    .update(webhookDeliveries)
    .set({ status, processedAt: new Date(), leaseUntil: null, lastError: null })
    .where(eq(webhookDeliveries.id, id));
};

/** Schedules another attempt after `retryInMs`, or ends the delivery as a dead letter. */
export const markFailed = async (
  db: Database,
  id: number,
  error: string,
  outcome: { dead: true } | { dead: false; retryInMs: number },
): Promise<void> => {
  await db
    .update(webhookDeliveries)
    .set({
      status: outcome.dead ? 'dead' : 'pending',
      lastError: error.slice(0, 2000),
      leaseUntil: null,
      processedAt: outcome.dead ? new Date() : null,
      nextAttemptAt: outcome.dead ? sql`now()` : sql`now() + make_interval(secs => ${outcome.retryInMs / 1000})`,
    })
    .where(eq(webhookDeliveries.id, id));
};

/** Puts a dead letter back in the queue with a fresh attempt budget. */
export const retryDeadLetter = async (db: Database, id: number): Promise<boolean> => {
  const updated = await db
    .update(webhookDeliveries)
    .set({ status: 'pending', attempts: 0, nextAttemptAt: sql`now()`, lastError: null, processedAt: null })
    .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.status, 'dead')))
    .returning({ id: webhookDeliveries.id });
  return updated.length > 0;
};

export const inboxDepth = async (db: Database): Promise<number> => {
  const [row] = await rows<{ depth: number }>(
    db,
    sql`select count(*)::int as depth from ${webhookDeliveries} where status in ('pending', 'processing')`,
  );
  return row?.depth ?? 0;
};

/** Deliveries a worker could claim right now (due pending ones, or processing ones with an expired lease). */
export const claimableCount = async (db: Database): Promise<number> => {
  const [row] = await rows<{ count: number }>(
    db,
    sql`select count(*)::int as count from ${webhookDeliveries}
        where (status = 'pending' or (status = 'processing' and lease_until < now())) and next_attempt_at <= now()`,
  );
  return row?.count ?? 0;
};

export const findDelivery = async (db: Database, id: number): Promise<Delivery | null> =>
  (await db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)))[0] ?? null;
