import { setTimeout as sleep } from 'node:timers/promises';
import PQueue from 'p-queue';

/** Monotonic milliseconds: a wall-clock step must not open or close the window. */
const now = (): number => performance.now();

export type RateBudgetOptions = {
  /** Requests in flight at once. */
  concurrency: number;
  /** At most `requests` sends in any window of `intervalMs`. */
  requests: number;
  intervalMs: number;
};

/**
 * The request budget shared by every caller of one client: every API attempt (retries included)
 * runs through `run`. Token requests do not.
 *
 * - p-queue bounds concurrency and applies `intervalCap`/`interval`. Its windows are fixed, though:
 *   a burst at the end of one window plus one at the start of the next can put 2× the cap inside one
 *   interval, and Logto Cloud does not say how its firewall counts. So each task also takes a slot in
 *   a sliding window as it starts sending: no `intervalMs` span ever holds more than `requests` sends.
 * - `pauseFor` holds every send back (after a 429: the limit is per tenant, not per caller).
 */
export class RateBudget {
  readonly #queue: PQueue;
  readonly #requests: number;
  readonly #intervalMs: number;
  /** Start times of the latest sends, ascending; only the last `requests` matter. */
  #sent: number[] = [];
  #pausedUntil = 0;

  constructor(options: RateBudgetOptions) {
    if (!(options.concurrency >= 1) || !(options.requests >= 1) || !(options.intervalMs >= 1)) {
      throw new RangeError('Logto rate budget needs concurrency, requests and intervalMs of at least 1');
    }
    this.#requests = options.requests;
    this.#intervalMs = options.intervalMs;
    this.#queue = new PQueue({
      concurrency: options.concurrency,
      intervalCap: options.requests,
      interval: options.intervalMs,
    });
  }

  /** Runs `send` inside the budget; it holds a concurrency slot until it settles. */
  async run<T>(send: () => Promise<T>): Promise<T> {
    return this.#queue.add(
      async () => {
        // Wait for a slot, then take it at the time the send really starts: a timer that fires late
        // (a busy event loop) must not let the next sends bunch up behind this one.
        for (let wait = this.#earliest() - now(); wait > 0; wait = this.#earliest() - now()) await sleep(wait);
        this.#take(now());
        return send();
      },
      { throwOnTimeout: true },
    );
  }

  /** Holds back every send (queued or new) until at least `ms` from now. */
  pauseFor(ms: number): void {
    this.#pausedUntil = Math.max(this.#pausedUntil, now() + ms);
  }

  get pending(): number {
    return this.#queue.pending;
  }

  get queued(): number {
    return this.#queue.size;
  }

  /** The earliest time another send fits: after any pause, and once the window holds fewer than the cap. */
  #earliest(): number {
    const oldest = this.#sent.length >= this.#requests ? this.#sent[this.#sent.length - this.#requests] : undefined;
    return Math.max(this.#pausedUntil, oldest === undefined ? 0 : oldest + this.#intervalMs);
  }

  /**
   * Records a send. Times only grow (a slot is checked and taken with no await in between), so the
   * entry `requests` places back is the oldest that can still be inside the window.
   */
  #take(at: number): void {
    this.#sent.push(at);
    if (this.#sent.length > this.#requests) this.#sent.splice(0, this.#sent.length - this.#requests);
  }
}
