/** Pure helpers for retry timing; no I/O, so they are tested alone. */

export type BackoffOptions = {
  /** First retry waits up to this long (full jitter). */
  baseMs: number;
  /** No computed wait exceeds this. */
  capMs: number;
  /** A `Retry-After` longer than this is not waited for: the request fails instead. */
  maxRetryAfterMs: number;
};

export const defaultBackoff: BackoffOptions = { baseMs: 250, capMs: 10_000, maxRetryAfterMs: 120_000 };

/**
 * Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
 * a uniform wait in [0, min(cap, base·2^retry)). `retry` is 0 for the first retry.
 */
export const backoffDelay = (
  retry: number,
  options: Pick<BackoffOptions, 'baseMs' | 'capMs'>,
  random: () => number = Math.random,
): number => {
  const ceiling = Math.min(options.capMs, options.baseMs * 2 ** Math.max(0, retry));
  return Math.floor(random() * ceiling);
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
