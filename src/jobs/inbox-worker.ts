import type { Config } from '../config.js';
import { claimDeliveries, claimableCount, inboxDepth, markFailed, markProcessed, type Delivery } from '../db/inbox.js';
import { metrics } from '../metrics.js';
import type { SyncDeps } from '../sync/context.js';
import { createEventHandlers } from '../sync/events/index.js';

export type InboxWorkerOptions = {
  /** How often the inbox is polled when nothing woke the worker (deliveries taken by another replica's router). */
  pollIntervalMs?: number;
  /** Deliveries processed at once. */
  concurrency?: number;
  /** A claimed delivery not finished within this time is claimed again (its worker is presumed dead). */
  leaseMs?: number;
  /** Backoff of failed attempts: base·2^(attempt−1) with full jitter, capped. */
  retryBaseMs?: number;
  retryCapMs?: number;
};

export type InboxWorker = {
  start(): void;
  /** Finishes the deliveries in hand; the rest stay in the inbox for the next start or another replica. */
  stop(): Promise<void>;
  wake(): void;
  /** Resolves when nothing is claimable and nothing is in hand (for tests and benchmarks). */
  drain(): Promise<void>;
};

/**
 * Applies inbox deliveries through the event handlers. Claims use SKIP LOCKED and leases, so any number of
 * replicas can run one; failures are retried with backoff and end as dead letters an operator can retry.
 */
export const createInboxWorker = (deps: SyncDeps & { config: Config }, options: InboxWorkerOptions = {}): InboxWorker => {
  const db = deps.database.db;
  const pollIntervalMs = options.pollIntervalMs ?? 500;
  const concurrency = options.concurrency ?? 8;
  const leaseMs = options.leaseMs ?? 120_000;
  const retryBaseMs = options.retryBaseMs ?? 1000;
  const retryCapMs = options.retryCapMs ?? 300_000;
  const maxAttempts = deps.config.webhooks.maxAttempts;
  const handlers = createEventHandlers(deps);
  const log = deps.logger.child({ component: 'inbox-worker' });

  let running = false;
  let timer: NodeJS.Timeout | null = null;
  let loop: Promise<void> | null = null;
  let wakeRequested = false;
  const inHand = new Set<Promise<void>>();

  const processDelivery = async (delivery: Delivery) => {
    const context = { deliveryId: delivery.id, event: delivery.event, attempt: delivery.attempts };
    try {
      const outcome = await handlers.handle({ id: delivery.id, event: delivery.event, payload: delivery.payload });
      await markProcessed(db, delivery.id, outcome);
      metrics.webhookProcessed.inc({ event: delivery.event, outcome });
      log.debug({ ...context, outcome }, 'delivery processed');
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      const dead = delivery.attempts >= maxAttempts;
      const retryInMs = Math.random() * Math.min(retryCapMs, retryBaseMs * 2 ** (delivery.attempts - 1));
      await markFailed(db, delivery.id, message, dead ? { dead: true } : { dead: false, retryInMs }).catch((markError: unknown) =>
        // The lease expires and the delivery is claimed again: nothing is lost.
        log.error({ ...context, err: markError }, 'could not record the failure'),
      );
      metrics.webhookProcessed.inc({ event: delivery.event, outcome: dead ? 'dead' : 'retry' });
      (dead ? log.error : log.warn).call(log, { ...context, error: message }, dead ? 'delivery is a dead letter' : 'delivery failed; will retry');
    }
  };

  const cycle = async () => {
    while (running) {
      wakeRequested = false;
      const free = concurrency - inHand.size;
      const claimed = free > 0 ? await claimDeliveries(db, free, leaseMs) : [];
      for (const delivery of claimed) {
        const work: Promise<void> = processDelivery(delivery).finally(() => {
          inHand.delete(work);
          // A freed slot may have more work waiting.
          wake();
        });
        inHand.add(work);
      }
      metrics.inboxDepth.set(await inboxDepth(db));
      if (claimed.length === 0 || inHand.size >= concurrency) {
        if (wakeRequested) continue;
        await new Promise<void>((resolve) => {
          timer = setTimeout(resolve, pollIntervalMs);
          waiting = resolve;
        });
        waiting = null;
      }
    }
  };

  let waiting: (() => void) | null = null;
  const wake = () => {
    wakeRequested = true;
    if (waiting) {
      if (timer) clearTimeout(timer);
      waiting();
    }
  };

  const startLoop = () => {
    loop = cycle().catch((error: unknown) => {
      log.error({ err: error }, 'inbox worker loop failed; restarting');
      if (running) setTimeout(startLoop, pollIntervalMs);
    });
  };

  return {
    start() {
      if (running) return;
      running = true;
      startLoop();
    },
    async stop() {
      running = false;
      wake();
      await loop;
      await Promise.all([...inHand]);
    },
    wake,
    async drain() {
      if (!running) throw new Error('the inbox worker is not running');
      for (;;) {
        wake();
        await Promise.all([...inHand]);
        if (inHand.size === 0 && (await claimableCount(db)) === 0) return;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
  };
};
