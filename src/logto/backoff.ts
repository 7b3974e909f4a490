/** Pure helpers for retry timing; no I/O, so they are tested alone. */

export type BackoffOptions = {
  /** First retry waits about this long (between half of it and all of it). */
  baseMs: number;
  /** No computed wait exceeds this. */
  capMs: number;
  /** A `Retry-After` longer than this is not waited for: the request fails instead. */
  maxRetryAfterMs: number;
};

export const defaultBackoff: BackoffOptions = { baseMs: 250, capMs: 10_000, maxRetryAfterMs: 120_000 };

/** How long a request keeps being retried on network errors, 5xx and 429: a Logto restart fits in it. */
export const defaultRetryWindowMs = 120_000;

/**
 * Exponential backoff with "equal jitter" (AWS architecture blog, "Exponential Backoff And Jitter"): a
 * uniform wait in [c/2, c) with c = min(cap, base·2^retry). Unlike full jitter, a wait is never near
 * zero and each one is at least the previous one's upper bound, so the waits of one request really
 * grow until the cap, while concurrent retries still spread. `retry` is 0 for the first retry.
 */
export const backoffDelay = (
  retry: number,
  options: Pick<BackoffOptions, 'baseMs' | 'capMs'>,
  random: () => number = Math.random,
): number => {
  const ceiling = Math.min(options.capMs, options.baseMs * 2 ** Math.max(0, retry));
  return Math.floor(ceiling / 2 + (random() * ceiling) / 2);
};

/**
 * The wait before retry number `retry` (0-based) of a request first sent at `startedAt`, or null to
 * give up: the retry budget is a time window (what a restart of Logto needs), with `maxRetries` as a
 * plain cap. `Retry-After` is honoured as asked; a wait that would end after the window is shortened
 * to a last attempt at its end, except a `Retry-After`, which is not cut short (then we give up).
 */
export const retryWait = (input: {
  retry: number;
  maxRetries: number;
  startedAt: number;
  now: number;
  windowMs: number;
  retryAfterMs: number | null;
  backoff: Pick<BackoffOptions, 'baseMs' | 'capMs'>;
  random?: () => number;
}): number | null => {
  if (input.retry >= input.maxRetries) return null;
  const remaining = input.startedAt + input.windowMs - input.now;
  if (remaining <= 0) return null;
  if (input.retryAfterMs !== null) return input.retryAfterMs <= remaining ? input.retryAfterMs : null;
  return Math.min(remaining, backoffDelay(input.retry, input.backoff, input.random));
};

/**
 * The retry waits of one request first sent now, under the client's settings: `wait(retry, retryAfterMs)`
 * is `retryWait` for retry number `retry`, measured against the request's own window.
 */
export const retryWindow = (
  settings: { maxRetries: number; retryWindowMs?: number | undefined },
  backoff: Pick<BackoffOptions, 'baseMs' | 'capMs'>,
) => {
  const startedAt = performance.now();
  return (retry: number, retryAfterMs: number | null): number | null =>
    retryWait({
      retry,
      maxRetries: settings.maxRetries,
      startedAt,
      now: performance.now(),
      windowMs: settings.retryWindowMs ?? defaultRetryWindowMs,
      retryAfterMs,
      backoff,
    });
};

/**
 * Parses an HTTP `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
 * Returns the wait in milliseconds (a date in the past gives 0), or null when absent or unparseable.
 */
export const parseRetryAfter = (value: string | undefined | null, now: number = Date.now()): number | null => {
  if (value === undefined || value === null) return null;
  const text = value.trim();
  if (text === '') return null;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  // Only something that looks like a date: Date.parse accepts odd inputs such as "1".
  if (!/[a-z]/i.test(text)) return null;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - now);
};

/** `Total-Number` header: a non-negative integer, else null (absent or malformed). */
export const parseTotalNumber = (value: string | undefined | null): number | null => {
  if (value === undefined || value === null) return null;
  const text = value.trim();
  if (!/^\d+$/.test(text)) return null;
  return Number(text);
};

/**
 * When to refresh a token that lives `expiresInSeconds`: at 80 % of its life or 60 s before it
 * expires, whichever is sooner; a very short-lived token (under two minutes) is refreshed at half life
 * instead of at once. Returns milliseconds after issue.
 */
export const tokenRefreshAfterMs = (expiresInSeconds: number): number => {
  const lifetime = Math.max(0, expiresInSeconds) * 1000;
  const lead = Math.max(0.2 * lifetime, Math.min(60_000, 0.5 * lifetime));
  return Math.max(0, lifetime - lead);
};
