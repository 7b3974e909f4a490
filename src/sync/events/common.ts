import { z } from 'zod';
import { plainRecord, type LogtoUser } from '../../logto/index.js';
import type { ChangeContext } from '../apply/index.js';
import type { SyncDeps } from '../context.js';
import type { Batcher } from './batcher.js';
import type { MembershipDeltas } from './membership-deltas.js';
import type { OrganizationResync } from './organization-resync.js';
import type { UserReads } from './user-reads.js';
import type { UserSnapshot, UserSnapshotOutcome } from '../apply/index.js';

/** A stored delivery as the handlers see it. */
export type EventDelivery = {
  id: number;
  event: string;
  payload: Record<string, unknown>;
  /** 'logto', 'svix' or 'recent_logs'. Recovered bodies went through Logto's log sanitiser: their `data` is re-read. */
  channel?: string;
  receivedAt?: Date;
  /**
   * Epoch ms (this process's clock) of a moment after the delivery was received: when the worker began
   * the claim that returned it. A read from Logto started after it saw the change the delivery announces.
   */
  claimedAt?: number;
};

/** `applied`: the access state now reflects the event. `ignored`: nothing this service follows. */
export type EventOutcome = 'applied' | 'ignored';

/**
 * What handlers share in one process: the coalescers of organization member re-reads and user reads, the
 * batcher that applies the user snapshots of many deliveries in one transaction, and the order of the
 * membership deltas of each organization.
 */
export type EventHandlerDeps = SyncDeps & {
  resync: OrganizationResync;
  userReads: UserReads;
  userSnapshots: Batcher<UserSnapshot, UserSnapshotOutcome>;
  membershipDeltas: MembershipDeltas;
};

export type EventHandler = (deps: EventHandlerDeps, delivery: EventDelivery) => Promise<EventOutcome>;

/** The context of changes made without an observation time of their own yet. */
export type BaseContext = Omit<ChangeContext, 'observedAt'>;

/**
 * A delivery that can never be applied as it stands (a known event whose payload lacks what it needs):
 * retrying would not help, so the worker makes it a dead letter at once.
 */
export class PermanentDeliveryError extends Error {
  override readonly name = 'PermanentDeliveryError';
}

/** Fields every Logto payload may carry; other keys pass through. */
export const envelopeSchema = z.looseObject({
  event: z.string(),
  createdAt: z.string().optional(),
  userAgent: z.string().nullish(),
  matchedRoute: z.string().optional(),
  params: z.record(z.string(), z.unknown()).optional(),
  data: z.unknown().optional(),
});
export type Envelope = z.infer<typeof envelopeSchema>;

const optionalText = (value: unknown) => value === undefined || typeof value === 'string';

/**
 * `parsePayload(envelopeSchema, delivery)` without zod's copy of a payload that already fits (each
 * delivery's envelope, its params rebuilt on the way): the payload comes back as it is, not a copy, as
 * zod would return it (no default to fill in, nothing to drop). Anything else is zod's to answer.
 */
export const parseEnvelope = (delivery: EventDelivery): Envelope => {
  const payload = delivery.payload;
  const fits =
    plainRecord(payload) &&
    typeof payload.event === 'string' &&
    optionalText(payload.createdAt) &&
    (payload.userAgent === null || optionalText(payload.userAgent)) &&
    optionalText(payload.matchedRoute) &&
    (payload.params === undefined || plainRecord(payload.params));
  return fits ? (payload as Envelope) : parsePayload(envelopeSchema, delivery);
};

/** Parses a payload; a known event whose payload does not fit is a permanent failure, with the offending paths named. */
export const parsePayload = <S extends z.ZodType>(schema: S, delivery: EventDelivery): z.output<S> => {
  const result = schema.safeParse(delivery.payload);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => `${issue.path.map(String).join('.') || 'payload'}: ${issue.message}`);
  throw new PermanentDeliveryError(`${delivery.event} payload is not usable (${issues.join('; ')})`);
};

/** `source: 'webhook'`, the delivery and the caller Logto recorded (its user agent). */
export const baseContext = (delivery: EventDelivery, envelope: Pick<Envelope, 'userAgent'>): BaseContext => ({
  source: 'webhook',
  deliveryId: delivery.id,
  actor: envelope.userAgent ?? null,
});

/** When the event's information was true in Logto: the payload's `createdAt` (set when Logto dispatched it). */
export const eventTime = (delivery: EventDelivery, envelope: Pick<Envelope, 'createdAt'>): Date => {
  const parsed = envelope.createdAt ? Date.parse(envelope.createdAt) : Number.NaN;
  if (Number.isFinite(parsed)) return new Date(parsed);
  return delivery.receivedAt ?? new Date();
};

export const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

export const stringField = (record: unknown, key: string): string | undefined => {
  if (!isRecord(record)) return undefined;
  const value = record[key];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
};

/** True when `data` can be trusted as a snapshot: not a recovered (sanitised) body. */
export const trustsData = (delivery: EventDelivery): boolean => delivery.channel !== 'recent_logs';

/** When a read from Logto is recent enough for this delivery (see `EventDelivery.claimedAt`). */
export const readNotBefore = (delivery: EventDelivery): number => delivery.claimedAt ?? Date.now();

/** Reads one user from Logto (coalesced and batched with the reads of other deliveries) and applies it; gone from Logto: removed. */
export const refreshUser = (deps: EventHandlerDeps, delivery: EventDelivery, userId: string, base: BaseContext) =>
  deps.userReads.refresh(userId, base, readNotBefore(delivery));

/** Fetches users the database lacks (batched with other deliveries' reads) and applies them; returns the ids Logto still has. */
export const fetchUnknownUsers = async (
  deps: EventHandlerDeps,
  delivery: EventDelivery,
  userIds: string[],
  base: BaseContext,
): Promise<string[]> => {
  const results = await Promise.all([...new Set(userIds)].map((userId) => refreshUser(deps, delivery, userId, base)));
  return results.flatMap((result) => (result.user ? [result.user.id] : []));
};
