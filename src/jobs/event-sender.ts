import { Webhook } from 'svix';
import { accessEventOf, webhookIdOf } from '../db/access-events.js';
import { createChangeFrontier } from '../db/change-frontier.js';
import type { Database } from '../db/client.js';
import { signingSecrets } from '../db/event-subscriptions.js';
import {
  claimOutboxFromFrontier,
  outboxFrontierStart,
  disableFailingSubscriptions,
  extendOutboxLeases,
  openOutboxCount,
  outboxBacklog,
  refreshOutboxStatistics,
  deliveredAttempt,
  settleAttempts,
  type AttemptResult,
  type ClaimedOutboxRow,
  type ClaimedSubscription,
  type Release,
} from '../db/outbox.js';
import type { Logger } from '../logger.js';
import { metrics } from '../metrics.js';
import { createClaimLoop } from './claim-loop.js';
import { createDeliveryClient, describeDeliveryError } from './delivery-client.js';

/** Like Svix: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; then the delivery has failed. */
export const defaultRetryScheduleMs = [0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

export type EventSenderOptions = {
  /** How often the outbox is polled when nothing woke the sender (rows written by another replica). Default 500 ms. */
  pollIntervalMs?: number;
  /** Deliveries in hand at once (sent, or waiting in a chain behind an earlier one). Default 256. */
  concurrency?: number;
  /** A claim whose sender stops renewing it for this long is claimed again. Default 60 s. */
  leaseMs?: number;
  /** The wait before each attempt (the first is the wait before attempt 1); its length is the attempt budget. */
  retryScheduleMs?: number[];
  /** A subscription whose every attempt failed for this long is disabled. Default 5 days. */
  disableAfterMs?: number;
  /** Per request, for connecting and for the answer's headers. Default 15 s. */
  timeoutMs?: number;
  /** Keep-alive connections per subscriber origin at the most. Default 32. */
  connectionsPerOrigin?: number;
  /** Send to private, loopback and link-local addresses (internal deployments, tests). */
  allowPrivateUrls?: boolean;
};

export type EventSender = {
  start(): void;
  /** Finishes the deliveries in hand; the rest stay in the outbox. */
  stop(): Promise<void>;
  wake(): void;
  /** Resolves when nothing due is left to send (with `includeDelayed`, also nothing scheduled for a retry). */
  drain(options?: { includeDelayed?: boolean }): Promise<void>;
};

/** How long the first result of a group waits for others before the group is written back. */
const settleGatherMs = 5;

/**
 * Sends the outbox as Standard Webhooks, signed with svix. Rows are claimed with SKIP LOCKED under a
 * renewed lease, so any number of replicas run a sender and a dead one's rows are sent again (at least
 * once; the `webhook-id` lets receivers drop repeats). Results are written back in groups: one statement
 * for all the attempts that finished while the previous group was being written.
 */
export const createEventSender = (deps: { db: Database; logger: Logger }, options: EventSenderOptions = {}): EventSender => {
  const { db } = deps;
  const log = deps.logger.child({ component: 'event-sender' });
  const pollIntervalMs = options.pollIntervalMs ?? 500;
  const concurrency = Math.max(1, options.concurrency ?? 256);
  const claimThreshold = Math.max(1, Math.floor(concurrency / 4));
  const leaseMs = options.leaseMs ?? 60_000;
  const schedule = options.retryScheduleMs ?? defaultRetryScheduleMs;
  const disableAfterMs = options.disableAfterMs ?? 5 * 24 * 60 * 60 * 1000;
  const allowPrivate = options.allowPrivateUrls ?? false;
  const client = createDeliveryClient({
    timeoutMs: options.timeoutMs ?? 15_000,
    connectionsPerOrigin: options.connectionsPerOrigin ?? 32,
    allowPrivateUrls: allowPrivate,
  });
  const signers = new Map<string, Webhook>();
  const signerFor = (secret: string) => {
    let signer = signers.get(secret);
    if (!signer) {
      if (signers.size > 1000) signers.clear();
      signer = new Webhook(secret);
      signers.set(secret, signer);
    }
    return signer;
  };

  let lastBacklogAt = 0;
  let lastDisableCheckAt = 0;
  let lastAnalyzeAt = 0;

  // ---- writing results back in groups ----
  let results: { result: AttemptResult | Release; resolve: () => void }[] = [];
  let flushing: Promise<void> | null = null;
  const flush = async () => {
    while (results.length > 0) {
      // Each statement is a round trip that wakes PostgreSQL, and on a busy machine the wake-ups cost more
      // than the rows: results finishing within a few milliseconds share one, unless a claim's worth is in.
      if (results.length < claimThreshold) await new Promise((resolve) => setTimeout(resolve, settleGatherMs));
      const group = results;
      results = [];
      try {
        await settleAttempts(db, group.map((entry) => entry.result));
        if (group.some((entry) => 'ok' in entry.result && !entry.result.ok) && Date.now() - lastDisableCheckAt > 1000) {
          lastDisableCheckAt = Date.now();
          const disabled = await disableFailingSubscriptions(db, disableAfterMs);
          for (const id of disabled) log.warn({ subscriptionId: id }, 'subscription disabled: every delivery failed for too long');
        }
      } catch (error) {
        // The leases run out and the rows are sent again: at least once, never lost.
        log.error({ err: error }, 'could not record delivery results');
      }
      for (const entry of group) entry.resolve();
    }
    flushing = null;
  };
  const record = (result: AttemptResult | Release) =>
    new Promise<void>((resolve) => {
      results.push({ result, resolve });
      flushing ??= flush();
    });

  const send = async (row: ClaimedOutboxRow, subscription: ClaimedSubscription | null, payload: string): Promise<AttemptResult> => {
    const base = { claim: { id: row.id, attempts: row.attempts }, subscriptionId: row.subscriptionId, payload };
    const retry = (status: number | null, error: string | null): AttemptResult => {
      const retryInMs = row.attempts < schedule.length ? schedule[row.attempts]! : null;
      return { ...base, status, error, ok: false, retryInMs };
    };
    if (!subscription) return { ...base, status: null, error: 'subscription deleted', ok: false, retryInMs: null };
    const started = process.hrtime.bigint();
    try {
      const now = new Date();
      const webhookId = webhookIdOf(row.changeId);
      const signature = signingSecrets(subscription, now)
        .map((secret) => signerFor(secret).sign(webhookId, now, payload))
        .join(' ');
      const status = await client.post(subscription.url, payload, {
        'content-type': 'application/json',
        'user-agent': 'logto-access-sync',
        'webhook-id': webhookId,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': signature,
      });
      if (status >= 200 && status < 300) return deliveredAttempt(row, status);
      return retry(status, `HTTP ${status}`);
    } catch (error) {
      return retry(null, describeDeliveryError(error).slice(0, 500));
    } finally {
      metrics.eventSendDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    }
  };

  /**
   * The bodies of rows never sent yet are built now, once per change (its subscriptions share it), from
   * the change and the entities' fields the claim read with them; retries reuse the body of their first attempt.
   */
  const bodiesFor = (rows: ClaimedOutboxRow[]): Map<number, string> => {
    const bodies = new Map<number, string>();
    for (const row of rows) {
      if (row.payload || !row.change || bodies.has(row.change.id)) continue;
      const event = accessEventOf(row.change, row.entities);
      if (event) bodies.set(row.change.id, JSON.stringify(event));
    }
    return new Map(rows.map((row) => [row.id, row.payload ?? bodies.get(row.changeId) ?? '{}']));
  };

  /**
   * Sends the claimed rows, each chain in order: a row waits until the rows claimed before it about the
   * same user or organization of its subscription are sent and recorded; if one of those was not
   * delivered, it is handed back unsent, to wait in the outbox behind the retry as before. Rows of
   * different chains go out at once.
   */
  const dispatch = (rows: ClaimedOutboxRow[], bodies: Map<number, string>) => {
    const chainEnds = new Map<string, Promise<boolean>>();
    for (const row of rows) {
      const keys = [
        row.userId === null ? null : `${row.subscriptionId}\u0000user\u0000${row.userId}`,
        row.organizationId === null ? null : `${row.subscriptionId}\u0000organization\u0000${row.organizationId}`,
      ].filter((key): key is string => key !== null);
      const before = keys.flatMap((key) => chainEnds.get(key) ?? []);
      // The slot is given back once the attempt's result is queued for settlement, not once it is written:
      // waiting for the group's statement kept every slot idle for a gather and a round trip after its
      // answer came. The row stays `processing` under its lease until settled, so no claim takes it (or a
      // later row of its chains) meanwhile; drain and stop still wait for the settlement (`pending`).
      let freeSlot!: () => void;
      const slotFree = new Promise<void>((resolve) => (freeSlot = resolve));
      const delivered = (async () => {
        try {
          if (before.length > 0 && !(await Promise.all(before)).every(Boolean)) {
            const released = record({ release: { id: row.id, attempts: row.attempts, previousAttemptAt: row.previousAttemptAt } });
            freeSlot();
            await released;
            return false;
          }
          const result = await send(row, row.subscription, bodies.get(row.id)!);
          metrics.eventDeliveries.inc({ outcome: result.ok ? 'delivered' : result.retryInMs === null ? 'failed' : 'retry' });
          if (!result.ok) log.debug({ deliveryId: row.id, attempt: row.attempts, error: result.error }, 'event delivery failed');
          const recorded = record(result);
          freeSlot();
          await recorded;
          return result.ok;
        } finally {
          freeSlot();
        }
      })();
      for (const key of keys) chainEnds.set(key, delivered);
      loop.track(row.id, row, slotFree);
    }
  };

  /**
   * The backlog gauge, and the outbox statistics refreshed when a backlog arrived after they were taken.
   * Read before a claim (at most once a second) rather than after it: a claim planned on statistics from
   * before a burst can take seconds, and the refresh that cures it must not wait for that claim to end.
   */
  const updateBacklog = async (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastBacklogAt < 1000) return;
    lastBacklogAt = now;
    const backlog = await outboxBacklog(db);
    metrics.eventBacklog.reset();
    for (const entry of backlog) metrics.eventBacklog.set({ subscription: entry.subscriptionId }, entry.open);
    const open = backlog.reduce((sum, entry) => sum + entry.open, 0);
    if (now - lastAnalyzeAt >= 30_000 && (await refreshOutboxStatistics(db, open))) {
      lastAnalyzeAt = now;
      log.info({ open }, 'outbox statistics refreshed for its backlog');
    }
  };

  const frontier = createChangeFrontier(db, () => outboxFrontierStart(db), { giveUpAfterMs: 30_000 });
  /** Whether the last claim saw a change beyond a gap after the frontier. */
  let frontierGap = false;

  const loop = createClaimLoop<ClaimedOutboxRow>({
    log,
    what: 'outbox rows',
    pollIntervalMs,
    concurrency,
    leaseMs,
    claim: async (free) => {
      // Every settled delivery frees a slot and wakes the loop; claiming for each one alone would pay a
      // claim, a body build and their round trips per row. While most slots are busy, wait for more to free.
      if (free < claimThreshold) return 0;
      await updateBacklog(false);
      // Only changes up to the frontier: an earlier change about the same entity may still be committing.
      // The claim itself extends the frontier over the ids that follow it without a gap; only after it saw
      // a gap (or before the first claim) does the frontier's own reading, with its gap watch, go first.
      const from = frontierGap ? null : frontier.current();
      const claimed = await claimOutboxFromFrontier(db, free, leaseMs, from ?? (await frontier.advance()));
      frontier.reachedWithoutGap(claimed.reached);
      frontierGap = claimed.gap;
      const rows = claimed.rows;
      if (rows.length === 0) return 0;
      try {
        dispatch(rows, bodiesFor(rows));
      } catch (error) {
        // Claimed but not sent: their leases run out and they are claimed again.
        log.error({ err: error }, 'could not prepare claimed deliveries');
      }
      return rows.length;
    },
    renewLeases: (claims) => extendOutboxLeases(db, claims, leaseMs),
    remaining: (includeDelayed) => openOutboxCount(db, { claimableOnly: !includeDelayed }),
    afterClaim: async (force) => {
      if (force) await updateBacklog(true);
    },
    pending: () => flushing,
  });
  const { start, stop, wake, drain } = loop;
  return { start, stop, wake, drain };
};
