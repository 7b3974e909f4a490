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
import { createClaimLoop } from './claim-loop.js';

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
  /**
   * While deliveries trickle in, claims start at most this often (ms). Default 10: at 1,000 arrivals/s a
   * claim takes about ten, and their snapshots, transaction and settlement are shared, instead of each
   * arrival's wake costing a claim and a transaction of its own. A lone delivery is claimed at once.
   */
  claimSpacingMs?: number;
  /**
   * While deliveries handed to their handlers are still being applied, those claimed at intake meanwhile
   * wait for them (see `handOver`), but no longer than this since the previous turn (ms). Default 20: a
   * handler waiting on Logto's request budget must not hold up every other delivery, and under 1,000
   * arrivals/s turns 40 ms apart put the wait itself above the 50 ms visibility budget (loaded p95 81-152 ms
   * at 40, 39-55 ms at 20; 10 ms gained nothing more). When nothing is being applied, a delivery is handed
   * over at once.
   */
  handOverSpacingMs?: number;
  /** A claimed delivery whose worker stops renewing its lease for this long is claimed again. Default 60 s. */
  leaseMs?: number;
  /** Backoff of failed attempts: base·2^(attempt−1), capped, with jitter. Defaults 1 s and 5 min. */
  retryBaseMs?: number;
  retryCapMs?: number;
  /** The handlers (tests inject their own); default: `createEventHandlers(deps)`. */
  handlers?: EventHandlers;
};

/**
 * The receiver's side of claiming at intake: `begin` before storing a delivery says whether to store it
 * claimed by this worker (`claim`, for `leaseMs`); `finish` is called once the insert is over, with the
 * delivery stored claimed (now in hand), or null (stored pending, a duplicate, or not stored).
 */
export type IntakeTicket = { claim: boolean; leaseMs: number; finish(claimed: Delivery | null): void };
export type InboxIntake = { begin(delivery: Pick<Delivery, 'event' | 'payload'>): IntakeTicket };

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
  intake: InboxIntake;
};

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

  let lastDepthAt = 0;
  /**
   * Claiming at intake keeps deliveries in the order received. Once the worker had no room for one, it
   * is behind (`caughtUp` false): deliveries are stored pending and claimed in order until a claim comes
   * back with room to spare (as at a start, for what a previous process left). And a delivery about an
   * entity this process stored a delivery pending for, still unclaimed, is stored pending too, or it
   * would be applied before that earlier one: an entity's entry goes once a claim with room to spare
   * began after its last pending store ended (that claim took it, or another replica did).
   */
  let caughtUp = false;
  const pendingEntities = new Map<string, { storing: number; lastStoredAt: number }>();
  /** Counts pending stores as they end, the clock of `lastStoredAt`. */
  let pendingStoresEnded = 0;
  let stopping = false;
  const claimSpacingMs = options.claimSpacingMs ?? 10;
  const handOverSpacingMs = options.handOverSpacingMs ?? 20;
  /**
   * Deliveries handed over at intake go in turns: while nothing handed to the handlers is still being
   * applied, at once (with the others stored by the same insert); otherwise in the next turn, at most
   * every `handOverSpacingMs`, as claims wait for the next claim. A lone delivery waits for nothing (turns
   * spaced by the clock alone held each one up to 40 ms, 14 ms at the median), and under 1,000 arrivals/s
   * a turn's snapshots share a transaction and their outcomes a statement, where one turn per delivery
   * left the worker behind (so did a turn as soon as the previous one was applied: 783 arrivals/s taken
   * instead of 1,000). Their slots stay reserved meanwhile.
   */
  let handedOver: Delivery[] = [];
  let handOverTimer: NodeJS.Timeout | null = null;
  let handOverSoon: NodeJS.Immediate | null = null;
  let lastHandOverAt = Number.NEGATIVE_INFINITY;
  /** Deliveries dispatched (handed over or claimed) whose handlers have not returned yet. */
  let applying = 0;
  const handOverNow = () => {
    if (handOverTimer) clearTimeout(handOverTimer);
    if (handOverSoon) clearImmediate(handOverSoon);
    handOverTimer = null;
    handOverSoon = null;
    lastHandOverAt = performance.now();
    const turn = handedOver;
    handedOver = [];
    // A claim's clock: every delivery of the turn was received (its row committed) before this moment.
    const claimedAt = Date.now();
    for (const delivery of turn) dispatch(delivery, claimedAt, true);
  };
  const handOver = (delivery: Delivery) => {
    handedOver.push(delivery);
    if (handOverTimer || handOverSoon) return;
    // After the deliveries of the same insert have been handed over too (they finish in one turn of the event loop).
    if (applying === 0) handOverSoon = setImmediate(handOverNow);
    else handOverTimer = setTimeout(handOverNow, Math.max(0, lastHandOverAt + handOverSpacingMs - performance.now()));
  };
  const handlerReturned = () => {
    applying -= 1;
  };
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
      const outcome = await handlers
        .handle({
          id: delivery.id,
          event: delivery.event,
          payload: delivery.payload,
          channel: delivery.channel,
          receivedAt: delivery.receivedAt,
          claimedAt,
        })
        .finally(handlerReturned);
      const held = await statuses.add({ claim: delivery, status: outcome });
      metrics.webhookProcessed.inc({ event: label, outcome });
      if (!held) log.warn(context, 'delivery processed after its lease was taken over; the other claim settles it');
      // Built only when written: a line per delivery is debug, and every delivery passes here.
      else if (log.isLevelEnabled('debug')) log.debug({ ...context, outcome }, 'delivery processed');
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

  const dispatch = (delivery: Delivery, claimedAt: number, reserved = false) => {
    applying += 1;
    const key = deliveryEntityKey(delivery);
    const before = key ? chains.get(key) : undefined;
    const done: Promise<void> = (before ?? Promise.resolve())
      .then(() => settle(delivery, claimedAt))
      .finally(() => {
        if (key && chains.get(key) === done) chains.delete(key);
      });
    if (key) chains.set(key, done);
    loop.track(delivery.id, delivery, done, reserved);
  };

  const updateDepth = async (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastDepthAt < 1000) return;
    lastDepthAt = now;
    metrics.inboxDepth.set(await unsettledCount(db));
  };

  const loop = createClaimLoop<Delivery>({
    log,
    what: 'deliveries',
    pollIntervalMs,
    concurrency,
    claimBatchSize,
    leaseMs,
    claimSpacingMs,
    // A delivery becomes claimable when it is stored (the receiver wakes the worker) or due again (the poll).
    finishingMakesClaimable: false,
    claim: async (free) => {
      // Before the claim: every delivery it returns was received before this moment.
      const claimedAt = Date.now();
      const startedAfter = pendingStoresEnded;
      const claimed = await claimDeliveries(db, free, leaseMs);
      for (const delivery of claimed) dispatch(delivery, claimedAt);
      // Not full: it took every delivery that was claimable when it started, among them all that this
      // process had stored pending before it started. Stored pending since, or still being stored: not yet.
      if (claimed.length < free) {
        caughtUp = true;
        for (const [key, entity] of pendingEntities) {
          if (entity.storing === 0 && entity.lastStoredAt <= startedAfter) pendingEntities.delete(key);
        }
      }
      return claimed.length;
    },
    renewLeases: (claims) => extendLeases(db, claims, leaseMs),
    remaining: (includeDelayed) => (includeDelayed ? unsettledCount(db) : claimableCount(db)),
    afterClaim: updateDepth,
  });

  const intake: InboxIntake = {
    begin(delivery) {
      const key = deliveryEntityKey(delivery);
      const held = key !== null && pendingEntities.has(key);
      const claim = caughtUp && !held && loop.reserve();
      // No room: behind. Until a claim catches up, every delivery waits its turn in the inbox (claims take
      // them in the order received); claiming new ones at intake meanwhile starved the older ones.
      if (caughtUp && !held && !claim) caughtUp = false;
      const entity = claim || key === null ? null : (pendingEntities.get(key) ?? { storing: 0, lastStoredAt: 0 });
      if (entity) {
        entity.storing += 1;
        pendingEntities.set(key!, entity);
      }
      let finished = false;
      return {
        claim,
        leaseMs,
        finish(claimed) {
          if (finished) return;
          finished = true;
          if (entity) {
            entity.storing -= 1;
            pendingStoresEnded += 1;
            entity.lastStoredAt = pendingStoresEnded;
          } else if (claim) {
            if (claimed && !stopping) handOver(claimed);
            // A duplicate or a failed insert; or stopping (a request outlived the grace period): the lease
            // of what was stored runs out and any worker claims it.
            else loop.release();
          }
        },
      };
    },
  };

  const { start, wake, drain } = loop;
  const stop = () => {
    stopping = true;
    handOverNow();
    return loop.stop();
  };
  return {
    start: () => {
      stopping = false;
      caughtUp = false;
      pendingEntities.clear();
      start();
    },
    stop,
    wake,
    drain,
    intake,
  };
};
