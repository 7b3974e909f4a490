import type { Config } from '../config.js';
import {
  claimableCount,
  claimDeliveries,
  extendLeases,
  markFailed,
  settleDeliveries,
  unsettledCount,
  type Delivery,
  type RetryPolicy,
} from '../db/inbox.js';
import { metrics } from '../metrics.js';
import type { SyncDeps } from '../sync/context.js';
import { createBatcher } from '../sync/events/batcher.js';
import {
  createEventHandlers,
  deliveryEntityKey,
  eventLabel,
  PermanentDeliveryError,
  type EventHandlers,
} from '../sync/events/index.js';

export type InboxWorkerOptions = {
  /** How often the inbox is polled when nothing woke the worker (deliveries stored by another replica). Default 250 ms. */
  pollIntervalMs?: number;
  /**
   * Deliveries in hand at once. Default 1000: their handlers run concurrently, so user snapshots are
   * applied and user reads sent to Logto in batches, and their statuses are written in batches.
   */
  concurrency?: number;
  /** Deliveries claimed by one statement. Default 500. */
  claimBatchSize?: number;
  /** A claimed delivery whose worker stops renewing its lease for this long is claimed again. Default 60 s. */
  leaseMs?: number;
  /** Backoff of failed attempts: base·2^(attempt−1), capped, with jitter. Defaults 1 s and 5 min. */
  retryBaseMs?: number;
  retryCapMs?: number;
  /** The handlers (tests inject their own); default: `createEventHandlers(deps)`. */
  handlers?: EventHandlers;
};

export type InboxWorker = {
  start(): void;
  /** Finishes the deliveries in hand; the rest stay in the inbox for the next start or another replica. */
  stop(): Promise<void>;
  /** Claims at once instead of waiting for the next poll (the receiver calls it after each commit). */
  wake(): void;
  /**
   * Resolves when nothing is claimable and nothing is in hand (for tests and tools). Works whether or not
   * the worker was started. With `includeDelayed`, it also waits for deliveries scheduled for a retry.
   */
  drain(options?: { includeDelayed?: boolean }): Promise<void>;
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const describeError = (error: unknown): string => {
  if (error instanceof Error) {
    const status = (error as { status?: unknown }).status;
    return `${error.name}: ${error.message}${typeof status === 'number' ? ` (status ${status})` : ''}`;
  }
  return String(error);
};

/**
 * Applies inbox deliveries through the event handlers. Batches are claimed with SKIP LOCKED under a
 * lease that is renewed while a delivery is worked on, so any number of replicas can run a worker and a
 * crashed one's deliveries are claimed again. Deliveries are processed concurrently (up to a thousand in
 * hand); those about the same entity run in the order they were received. Because their handlers run
 * together, the user snapshots of many deliveries are applied in one transaction, the users they need
 * read from Logto go out 100 per request, and their outcomes are written by one statement; each delivery
 * still settles on its own. Failures are retried with backoff and end as dead letters an operator can
 * retry; a payload that can never apply is a dead letter at once.
 */
export const createInboxWorker = (deps: SyncDeps & { config: Config }, options: InboxWorkerOptions = {}): InboxWorker => {
  const db = deps.database.db;
  const pollIntervalMs = options.pollIntervalMs ?? 250;
  const concurrency = Math.max(1, options.concurrency ?? 1000);
  const claimBatchSize = Math.max(1, options.claimBatchSize ?? 500);
  const leaseMs = options.leaseMs ?? 60_000;
  const policy: RetryPolicy = {
    maxAttempts: deps.config.webhooks.maxAttempts,
    baseMs: options.retryBaseMs ?? 1000,
    capMs: options.retryCapMs ?? 300_000,
  };
  // A dead replica's member re-read claims run out with its delivery claims, not a minute later.
  const handlers = options.handlers ?? createEventHandlers(deps, { resyncLeaseMs: leaseMs });
  const log = deps.logger.child({ component: 'inbox-worker' });

  let running = false;
  let loop: Promise<void> | null = null;
  let wakeRequested = false;
  let interruptSleep: (() => void) | null = null;
  let claiming = 0;
  let heartbeat: NodeJS.Timeout | null = null;
  let lastDepthAt = 0;
  /** Deliveries claimed by this worker and not yet settled. */
  const inHand = new Map<number, { delivery: Delivery; done: Promise<void> }>();
  /** Callers waiting for the loop to find nothing to do (`drain`). */
  const idleWaiters: (() => void)[] = [];
  /** The last delivery queued per entity key: the next one about that entity waits for it. */
  const chains = new Map<string, Promise<void>>();
  /** Outcomes of the deliveries handled in one turn, written by one statement. */
  const statuses = createBatcher<{ claim: Delivery; status: 'applied' | 'ignored' }, boolean>({
    maxSize: 1000,
    run: async (settled) => {
      const held = await settleDeliveries(db, settled);
      return settled.map(({ claim }) => held.has(claim.id));
    },
  });

  const settle = async (delivery: Delivery, claimedAt: number) => {
    const context = { deliveryId: delivery.id, event: delivery.event, attempt: delivery.attempts };
    const label = eventLabel(delivery.event);
    try {
      const outcome = await handlers.handle({
        id: delivery.id,
        event: delivery.event,
        payload: delivery.payload,
        channel: delivery.channel,
        receivedAt: delivery.receivedAt,
        claimedAt,
      });
      const held = await statuses.add({ claim: delivery, status: outcome });
      metrics.webhookProcessed.inc({ event: label, outcome });
      if (!held) log.warn(context, 'delivery processed after its lease was taken over; the other claim settles it');
      else log.debug({ ...context, outcome }, 'delivery processed');
    } catch (error) {
      const message = describeError(error);
      const permanent = error instanceof PermanentDeliveryError;
      try {
        const outcome = await markFailed(db, delivery, message, policy, { permanent });
        metrics.webhookProcessed.inc({ event: label, outcome: outcome.dead ? 'dead' : 'retry' });
        if (outcome.dead) log.error({ ...context, error: message }, 'delivery is a dead letter');
        else log.warn({ ...context, error: message, retryInMs: outcome.retryInMs }, 'delivery failed; will retry');
      } catch (markError) {
        // The lease expires and the delivery is claimed again: nothing is lost.
        log.error({ ...context, error: message, err: markError }, 'delivery failed and the failure could not be recorded');
      }
    }
  };

  const dispatch = (delivery: Delivery, claimedAt: number) => {
    const key = deliveryEntityKey(delivery);
    const before = key ? chains.get(key) : undefined;
    const done: Promise<void> = (before ?? Promise.resolve())
      .then(() => settle(delivery, claimedAt))
      .finally(() => {
        inHand.delete(delivery.id);
        if (key && chains.get(key) === done) chains.delete(key);
        // A freed slot may have more work waiting.
        wake();
      });
    if (key) chains.set(key, done);
    inHand.set(delivery.id, { delivery, done });
  };

  /** One claim of as many deliveries as there are free slots; returns how many were claimed. */
  const claimOnce = async (): Promise<{ claimed: number; free: number }> => {
    const free = Math.min(claimBatchSize, concurrency - inHand.size);
    if (free <= 0) return { claimed: 0, free };
    claiming += 1;
    try {
      // Before the claim: every delivery it returns was received before this moment.
      const claimedAt = Date.now();
      const claimed = await claimDeliveries(db, free, leaseMs);
      for (const delivery of claimed) dispatch(delivery, claimedAt);
      return { claimed: claimed.length, free };
    } finally {
      claiming -= 1;
    }
  };

  const updateDepth = async (force = false) => {
    const now = Date.now();
    if (!force && now - lastDepthAt < 1000) return;
    lastDepthAt = now;
    metrics.inboxDepth.set(await unsettledCount(db));
  };

  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        interruptSleep = null;
        resolve();
      }
      interruptSleep = done;
    });

  const cycle = async () => {
    while (running) {
      wakeRequested = false;
      let more = false;
      try {
        const { claimed, free } = await claimOnce();
        more = free > 0 && claimed === free;
        await updateDepth();
      } catch (error) {
        log.error({ err: error }, 'could not claim deliveries; trying again');
        await pause(Math.max(pollIntervalMs, 1000));
        continue;
      }
      if (!running) break;
      if (more && inHand.size < concurrency) continue;
      if (inHand.size === 0 && !more) for (const resolve of idleWaiters.splice(0)) resolve();
      if (wakeRequested) continue;
      await pause(pollIntervalMs);
    }
  };

  function wake() {
    wakeRequested = true;
    interruptSleep?.();
  }

  const renewLeases = () => {
    const claims = [...inHand.values()].map(({ delivery }) => delivery);
    extendLeases(db, claims, leaseMs).catch((error: unknown) => log.warn({ err: error }, 'could not renew the leases in hand'));
  };

  return {
    start() {
      if (running) return;
      running = true;
      heartbeat = setInterval(renewLeases, Math.max(50, Math.floor(leaseMs / 3)));
      heartbeat.unref();
      loop = cycle();
    },
    async stop() {
      running = false;
      wake();
      await loop;
      loop = null;
      for (const resolve of idleWaiters.splice(0)) resolve();
      await Promise.all([...inHand.values()].map((entry) => entry.done));
      if (heartbeat) clearInterval(heartbeat);
      heartbeat = null;
      await updateDepth(true).catch(() => {});
    },
    wake,
    async drain(drainOptions = {}) {
      for (;;) {
        if (running) {
          // Wait for a pass of the loop that claimed nothing and has nothing in hand.
          const idle = new Promise<void>((resolve) => idleWaiters.push(resolve));
          wake();
          await idle;
        } else {
          await claimOnce();
        }
        await Promise.all([...inHand.values()].map((entry) => entry.done));
        if (inHand.size === 0 && claiming === 0) {
          const left = drainOptions.includeDelayed ? await unsettledCount(db) : await claimableCount(db);
          if (left === 0 && inHand.size === 0 && claiming === 0) {
            await updateDepth(true);
            return;
          }
        }
        await sleep(10);
      }
    },
  };
};
