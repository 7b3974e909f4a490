import { describe, expect, it } from 'vitest';
import { backoffDelay, parseRetryAfter, parseTotalNumber, retryWait, tokenRefreshAfterMs } from '../../src/logto/backoff.js';
import { shouldRetry } from '../../src/logto/http.js';
import { basicAuthorization } from '../../src/logto/token.js';

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-23T19:44:58.000Z');

  it('reads delay-seconds', () => {
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('7', now)).toBe(7000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
  });

  it('accepts fractional seconds some proxies send', () => {
    expect(parseRetryAfter('1.5', now)).toBe(1500);
  });

  it('reads an HTTP-date relative to now', () => {
    expect(parseRetryAfter('Mon, 23 Nov 2026 19:45:08 GMT', now)).toBe(10_000);
  });

  it('turns a date in the past into no wait', () => {
    expect(parseRetryAfter('Mon, 23 Nov 2026 19:40:00 GMT', now)).toBe(0);
  });

  it('returns null when absent or unparseable', () => {
    expect(parseRetryAfter(undefined, now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
    expect(parseRetryAfter('', now)).toBeNull();
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter('-5', now)).toBeNull();
    expect(parseRetryAfter('1e3', now)).toBeNull();
  });
});

describe('backoffDelay (equal jitter)', () => {
  const options = { baseMs: 250, capMs: 10_000 };

  it('stays within [c/2, c) with c = min(cap, base·2^retry)', () => {
    for (let retry = 0; retry < 12; retry += 1) {
      const ceiling = Math.min(10_000, 250 * 2 ** retry);
      expect(backoffDelay(retry, options, () => 0)).toBe(Math.floor(ceiling / 2));
      const high = backoffDelay(retry, options, () => 0.999_999);
      expect(high).toBeLessThan(ceiling);
      expect(high).toBeGreaterThanOrEqual(ceiling * 0.99);
    }
  });

  it('grows: every wait is at least the largest the previous retry could draw, until the cap', () => {
    for (let retry = 1; retry < 12; retry += 1) {
      expect(backoffDelay(retry, options, () => 0)).toBeGreaterThanOrEqual(
        Math.min(backoffDelay(retry - 1, options, () => 0.999_999), 5000),
      );
    }
    expect(backoffDelay(30, options, () => 0.5)).toBe(7500);
  });

  it('spreads concurrent retries (jitter)', () => {
    const samples = new Set(Array.from({ length: 50 }, () => backoffDelay(4, options)));
    expect(samples.size).toBeGreaterThan(10);
  });
});

describe('retryWait', () => {
  const base = { maxRetries: 100, startedAt: 0, windowMs: 120_000, retryAfterMs: null, backoff: { baseMs: 250, capMs: 10_000 } };

  it('keeps retrying with growing waits until the window is spent: a two-minute restart fits', () => {
    let now = 0;
    const waits: number[] = [];
    for (let retry = 0; ; retry += 1) {
      const wait = retryWait({ ...base, retry, now, random: () => 0.5 });
      if (wait === null) break;
      waits.push(wait);
      now += wait;
    }
    expect(now).toBe(120_000);
    expect(waits.slice(0, 6)).toEqual([187, 375, 750, 1500, 3000, 6000]);
    expect(Math.max(...waits)).toBeLessThan(10_000);
  });

  it('honours Retry-After inside the window and gives up when it asks to wait beyond it', () => {
    expect(retryWait({ ...base, retry: 0, now: 0, retryAfterMs: 30_000 })).toBe(30_000);
    expect(retryWait({ ...base, retry: 0, now: 100_000, retryAfterMs: 30_000 })).toBeNull();
  });

  it('stops at maxRetries', () => {
    expect(retryWait({ ...base, maxRetries: 2, retry: 2, now: 0 })).toBeNull();
  });
});

describe('parseTotalNumber', () => {
  it('reads a non-negative integer header', () => {
    expect(parseTotalNumber('22')).toBe(22);
    expect(parseTotalNumber('0')).toBe(0);
  });

  it('ignores missing or malformed values', () => {
    expect(parseTotalNumber(undefined)).toBeNull();
    expect(parseTotalNumber('')).toBeNull();
    expect(parseTotalNumber('-1')).toBeNull();
    expect(parseTotalNumber('12abc')).toBeNull();
  });
});

describe('tokenRefreshAfterMs', () => {
  it('refreshes a one-hour token at 80 % of its life', () => {
    expect(tokenRefreshAfterMs(3600)).toBe(2_880_000);
  });

  it('refreshes 60 s before expiry when that comes first', () => {
    expect(tokenRefreshAfterMs(200)).toBe(140_000);
  });

  it('refreshes very short tokens at half life instead of on every call', () => {
    expect(tokenRefreshAfterMs(30)).toBe(15_000);
    expect(tokenRefreshAfterMs(0)).toBe(0);
  });
});

describe('shouldRetry', () => {
  it('retries reads on 429, 5xx, timeouts and network errors, never on other 4xx', () => {
    for (const status of [429, 500, 502, 503, 504]) expect(shouldRetry(true, { status })).toBe(true);
    for (const status of [400, 403, 404, 409, 422]) expect(shouldRetry(true, { status })).toBe(false);
    expect(shouldRetry(true, { reason: 'timeout', code: 'timeout' })).toBe(true);
    expect(shouldRetry(true, { reason: 'network', code: 'ECONNRESET' })).toBe(true);
  });

  it('retries a non-idempotent POST only where it certainly did not run', () => {
    expect(shouldRetry(false, { status: 429 })).toBe(true);
    expect(shouldRetry(false, { status: 503 })).toBe(true);
    expect(shouldRetry(false, { reason: 'refused', code: 'ECONNREFUSED' })).toBe(true);
    expect(shouldRetry(false, { status: 500 })).toBe(false);
    expect(shouldRetry(false, { status: 504 })).toBe(false);
    expect(shouldRetry(false, { reason: 'timeout', code: 'timeout' })).toBe(false);
    expect(shouldRetry(false, { reason: 'network', code: 'ECONNRESET' })).toBe(false);
  });
});

describe('basicAuthorization', () => {
  it('form-urlencodes id and secret before base64 (RFC 6749 §2.3.1)', () => {
    const header = basicAuthorization('app id', 'p@ss:w/rd+');
    const decoded = Buffer.from(header.replace(/^Basic /, ''), 'base64').toString('utf8');
    expect(decoded).toBe('app+id:p%40ss%3Aw%2Frd%2B');
  });
});
