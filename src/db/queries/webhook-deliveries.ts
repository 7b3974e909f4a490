import { and, desc, eq, lt } from 'drizzle-orm';
import { webhookDeliveries } from '../../../db/schema.js';
import type { Database } from '../client.js';
import { fetchSize, toPaged, type Page, type Paged } from './pagination.js';

/** A delivery that exhausted its attempts. */
export type DeadLetter = {
  id: number;
  event: string;
  channel: string;
  receivedAt: Date;
  attempts: number;
  lastError: string | null;
  processedAt: Date | null;
  payload: Record<string, unknown>;
};

export type DeadLetterCursor = [id: number];

/** Dead deliveries, newest first, along the partial index on the dead letters' ids. */
export const listDeadLetters = async (db: Database, page: Page<DeadLetterCursor>): Promise<Paged<DeadLetter, DeadLetterCursor>> => {
  const rows = await db
    .select({
      id: webhookDeliveries.id,
      event: webhookDeliveries.event,
      channel: webhookDeliveries.channel,
      receivedAt: webhookDeliveries.receivedAt,
      attempts: webhookDeliveries.attempts,
      lastError: webhookDeliveries.lastError,
      processedAt: webhookDeliveries.processedAt,
      payload: webhookDeliveries.payload,
    })
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.outcome, 'dead'), page.after ? lt(webhookDeliveries.id, page.after[0]) : undefined))
    .orderBy(desc(webhookDeliveries.id))
    .limit(fetchSize(page));
  return toPaged(rows, page, (row) => [row.id]);
};
