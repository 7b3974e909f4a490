import type { Logger } from '../logger.js';

export type ClaimLoopOptions<Claim> = {
  log: Logger;
  /** What is claimed, for the log line of a failed claim ("deliveries", "outbox rows"). */
  what: string;
  /** How often the table is polled when nothing woke the loop (rows written by another replica). */
  pollIntervalMs: number;
  /** Claims in hand at once. */
  concurrency: number;
  /** Claimed by one statement at the most. Default: as many as there are free slots. */
  claimBatchSize?: number;
  /** A claim whose holder stops renewing it for this long is claimed again; renewed every third of it. */
  leaseMs: number;
  /**
   * While rows trickle in (each write wakes the loop), claims start at most this often (ms), so that a
   * claim takes what arrived meanwhile instead of one row at a time. A wake after a quiet spell, and a
   * claim that came back full (a backlog), claim at once. Default 0: every wake claims at once.
   */
  claimSpacingMs?: number;
  /** Claims up to `free` rows, hands each to `track`, and returns how many it claimed. */
  claim(free: number): Promise<number>;
  renewLeases(claims: Claim[]): Promise<void>;
  /** Rows still to do: due now, or with `includeDelayed` also those scheduled for a retry. */
  remaining(includeDelayed: boolean): Promise<number>;
  /** After each claim, and with `force` on drain and stop: gauges that need not be read on every pass. */
  afterClaim?(force: boolean): Promise<void>;
  /** Work that outlives the claims in hand (results written back in groups); awaited by drain and stop. */
  pending?(): Promise<void> | null;
  /**
   * Whether finishing a claim can make other rows claimable (default true: an outbox row waits for the
   * earlier rows of its entities), so that every finished claim wakes the loop. When false, rows become
   * claimable only by arriving (their writer wakes the loop) or with time (the poll), and a finished claim
   * wakes the loop only when it had run out of slots, or when a drain waits and nothing is left in hand:
   * under a stream of arrivals, a wake per finished claim made about one claim in four come back empty.
   */
  finishingMakesClaimable?: boolean;
};

export type ClaimLoop<Claim> = {
  start(): void;
  /** Finishes the claims in hand; the rest stay in the table for the next start or another replica. */
  stop(): Promise<void>;
  /** Claims at once instead of waiting for the next poll. */
  wake(): void;
  /** Resolves when nothing is left to do and nothing is in hand; works whether or not the loop was started. */
  drain(options?: { includeDelayed?: boolean }): Promise<void>;
  /** Holds `claim` (its lease renewed) until `done` settles; a freed slot wakes the loop. */
  track(id: number, claim: Claim, done: Promise<void>, reserved?: boolean): void;
  /**
   * Sets a slot aside for a row claimed outside the loop (stored already claimed): false when the loop is
   * not running or has no slot free. The slot is filled by `track` with `reserved` true, or given back by
   * `release`; claims leave it free meanwhile.
   */
  reserve(): boolean;
  release(): void;
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Sleeps `ms`; `register` is given the function that ends the sleep early (and null once it has ended). */
const endableSleep = (ms: number, register: (end: (() => void) | null) => void) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(end, ms);
    function end() {
      clearTimeout(timer);
      register(null);
      resolve();
    }
    register(end);
  });

/**
 * The loop shared by the inbox worker and the event sender: claim what there is room for (rows claimed
 * with SKIP LOCKED under a lease), keep claiming while claims come back full, sleep until the next poll or
 * a wake, and renew the leases of what is in hand so that only a dead holder's rows are claimed again.
 */
export const createClaimLoop = <Claim>(options: ClaimLoopOptions<Claim>): ClaimLoop<Claim> => {
  const { log, pollIntervalMs, concurrency, leaseMs } = options;
  const claimBatchSize = options.claimBatchSize ?? Number.POSITIVE_INFINITY;
  const claimSpacingMs = Math.max(0, options.claimSpacingMs ?? 0);
  const finishingMakesClaimable = options.finishingMakesClaimable ?? true;
  let lastClaimAt = Number.NEGATIVE_INFINITY;
  let endSpacing: (() => void) | null = null;
  let running = false;
  let loop: Promise<void> | null = null;
  let wakeRequested = false;
  let interruptSleep: (() => void) | null = null;
  let claiming = 0;
  let reserved = 0;
  let heartbeat: NodeJS.Timeout | null = null;
  const inHand = new Map<number, { claim: Claim; done: Promise<void> }>();
  /** Callers waiting for a pass of the loop that found nothing to do (`drain`). */
  const idleWaiters: (() => void)[] = [];

  const claimOnce = async (): Promise<{ claimed: number; free: number }> => {
    const free = Math.min(claimBatchSize, concurrency - inHand.size - reserved);
    if (free <= 0) return { claimed: 0, free };
    claiming += 1;
    try {
      return { claimed: await options.claim(free), free };
    } finally {
      claiming -= 1;
    }
  };

  /** Wakes end a pause; only stop ends the spacing between claims (gathering wakes is its point). */
  const pause = (ms: number) => endableSleep(ms, (end) => (interruptSleep = end));
  const spacing = (ms: number) => endableSleep(ms, (end) => (endSpacing = end));

  const cycle = async () => {
    let more = false;
    while (running) {
      const early = lastClaimAt + claimSpacingMs - performance.now();
      if (!more && early > 0) await spacing(early);
      if (!running) break;
      wakeRequested = false;
      lastClaimAt = performance.now();
      more = false;
      try {
        const { claimed, free } = await claimOnce();
        more = free > 0 && claimed === free;
        await options.afterClaim?.(false);
      } catch (error) {
        log.error({ err: error }, `could not claim ${options.what}; trying again`);
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
    const claims = [...inHand.values()].map(({ claim }) => claim);
    if (claims.length === 0) return;
    options.renewLeases(claims).catch((error: unknown) => log.warn({ err: error }, 'could not renew the leases in hand'));
  };

  const settleInHand = async () => {
    await Promise.all([...inHand.values()].map((entry) => entry.done));
    await options.pending?.();
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
      endSpacing?.();
      wake();
      await loop;
      loop = null;
      for (const resolve of idleWaiters.splice(0)) resolve();
      await settleInHand();
      if (heartbeat) clearInterval(heartbeat);
      heartbeat = null;
      await options.afterClaim?.(true).catch(() => {});
    },
    wake,
    async drain(drainOptions = {}) {
      for (;;) {
        if (running) {
          const idle = new Promise<void>((resolve) => idleWaiters.push(resolve));
          wake();
          await idle;
        } else {
          await claimOnce();
        }
        await settleInHand();
        if (inHand.size === 0 && claiming === 0 && reserved === 0) {
          const left = await options.remaining(drainOptions.includeDelayed ?? false);
          if (left === 0 && inHand.size === 0 && claiming === 0 && reserved === 0) {
            await options.afterClaim?.(true);
            return;
          }
        }
        await sleep(10);
      }
    },
    reserve() {
      if (!running || inHand.size + reserved >= concurrency) return false;
      reserved += 1;
      return true;
    },
    release() {
      reserved = Math.max(0, reserved - 1);
    },
    track(id, claim, done, fromReserve = false) {
      if (fromReserve) reserved = Math.max(0, reserved - 1);
      const held = done.finally(() => {
        const wasFull = inHand.size >= concurrency;
        inHand.delete(id);
        if (finishingMakesClaimable || wasFull || (inHand.size === 0 && idleWaiters.length > 0)) wake();
      });
      inHand.set(id, { claim, done: held });
    },
  };
};
