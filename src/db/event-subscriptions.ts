import { desc, eq, sql } from 'drizzle-orm';
import { accessChanges, eventOutbox, eventSubscriptions } from '../../db/schema.js';
import { rows, type Database } from './client.js';

export type EventSubscription = typeof eventSubscriptions.$inferSelect;

export type NewEventSubscription = {
  id: string;
  url: string;
  description: string | null;
  eventTypes: string[] | null;
  kinds: string[] | null;
  secret: string;
};

/** Stores a subscription that receives the changes recorded from now on. */
export const insertEventSubscription = async (db: Database, input: NewEventSubscription): Promise<EventSubscription> => {
  const [lastChange] = await rows<{ id: string | number | null }>(db, sql`select max(id) as id from ${accessChanges}`);
  const [created] = await db
    .insert(eventSubscriptions)
    .values({ ...input, startChangeId: Number(lastChange?.id ?? 0) })
    .returning();
  return created!;
};

export const findEventSubscription = async (db: Database, id: string): Promise<EventSubscription | null> =>
  (await db.select().from(eventSubscriptions).where(eq(eventSubscriptions.id, id)))[0] ?? null;

/** Subscriptions, newest first. */
export const listEventSubscriptions = async (
  db: Database,
  page: { limit: number; beforeCreatedAt?: { createdAt: Date; id: string } | undefined },
): Promise<EventSubscription[]> =>
  db
    .select()
    .from(eventSubscriptions)
    .where(
      page.beforeCreatedAt
        ? sql`(${eventSubscriptions.createdAt}, ${eventSubscriptions.id}) < (${page.beforeCreatedAt.createdAt.toISOString()}::timestamptz, ${page.beforeCreatedAt.id})`
        : undefined,
    )
    .orderBy(desc(eventSubscriptions.createdAt), desc(eventSubscriptions.id))
    .limit(page.limit);

export type EventSubscriptionPatch = {
  url?: string;
  eventTypes?: string[] | null;
  kinds?: string[] | null;
  description?: string | null;
  enabled?: boolean;
};

/** Re-enabling clears the reason it was disabled and its failure streak. */
export const updateEventSubscription = async (
  db: Database,
  id: string,
  patch: EventSubscriptionPatch,
): Promise<EventSubscription | null> => {
  const [updated] = await db
    .update(eventSubscriptions)
    .set({
      ...patch,
      ...(patch.enabled === true ? { disabledReason: null, failingSince: null } : {}),
      ...(patch.enabled === false ? { disabledReason: 'disabled through the API' } : {}),
      updatedAt: new Date(),
    })
    .where(eq(eventSubscriptions.id, id))
    .returning();
  return updated ?? null;
};

/**
 * Deletes a subscription and its deliveries in one transaction (no foreign key cascades them: see
 * `insertChangesWithEvents`). The subscription goes first: its delete waits for every transaction that
 * locked it to queue rows, and the rows those committed are then seen by the second statement; a writer
 * that comes after finds the subscription gone and queues nothing for it.
 */
export const deleteEventSubscription = async (db: Database, id: string): Promise<boolean> =>
  db.transaction(async (tx) => {
    const deleted = await tx.delete(eventSubscriptions).where(eq(eventSubscriptions.id, id)).returning({ id: eventSubscriptions.id });
    if (deleted.length === 0) return false;
    await tx.delete(eventOutbox).where(eq(eventOutbox.subscriptionId, id));
    return true;
  });

/** The new secret signs from now on; the current one keeps signing beside it until `previousUntil`. */
export const rotateEventSubscriptionSecret = async (
  db: Database,
  id: string,
  secret: string,
  previousUntil: Date,
): Promise<EventSubscription | null> => {
  const [updated] = await db
    .update(eventSubscriptions)
    .set({
      previousSecret: sql`${eventSubscriptions.secret}`,
      previousSecretExpiresAt: previousUntil,
      secret,
      updatedAt: new Date(),
    })
    .where(eq(eventSubscriptions.id, id))
    .returning();
  return updated ?? null;
};

/** The secrets that sign a message sent at `now`: the current one, and the previous one while it lasts. */
export const signingSecrets = (subscription: Pick<EventSubscription, 'secret' | 'previousSecret' | 'previousSecretExpiresAt'>, now: Date): string[] =>
  subscription.previousSecret && subscription.previousSecretExpiresAt && subscription.previousSecretExpiresAt > now
    ? [subscription.secret, subscription.previousSecret]
    : [subscription.secret];

export const findEventSubscriptions = async (db: Database, ids: string[]): Promise<EventSubscription[]> =>
  ids.length === 0
    ? []
    : db
        .select()
        .from(eventSubscriptions)
        .where(sql`${eventSubscriptions.id} in (${sql.join(ids.map((id) => sql`${id}`), sql`, `)})`);
