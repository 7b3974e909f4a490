import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { coalescedWake } from '../../src/webhooks/coalesced-wake.js';

describe('waking the worker after deliveries', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('wakes at once after a quiet spell, then once per interval however many deliveries arrive, and after the last one', () => {
    let woken = 0;
    const wake = coalescedWake(() => (woken += 1), 10, () => {});
    wake();
    expect(woken).toBe(1);
    for (let delivery = 0; delivery < 50; delivery += 1) wake();
    expect(woken).toBe(1);
    vi.advanceTimersByTime(10);
    expect(woken).toBe(2);
    for (let tick = 0; tick < 10; tick += 1) {
      for (let delivery = 0; delivery < 5; delivery += 1) wake();
      vi.advanceTimersByTime(10);
    }
    expect(woken).toBe(12);
    vi.advanceTimersByTime(1000);
    expect(woken).toBe(12);
    wake();
    expect(woken).toBe(13);
  });

  it('with no interval wakes on every delivery', () => {
    let woken = 0;
    const wake = coalescedWake(() => (woken += 1), 0, () => {});
    for (let delivery = 0; delivery < 5; delivery += 1) wake();
    expect(woken).toBe(5);
  });

  it('reports a failing wake and keeps waking', () => {
    const errors: unknown[] = [];
    let calls = 0;
    const wake = coalescedWake(
      () => {
        calls += 1;
        throw new Error('worker gone');
      },
      10,
      (error) => errors.push(error),
    );
    wake();
    wake();
    vi.advanceTimersByTime(10);
    expect(calls).toBe(2);
    expect(errors).toHaveLength(2);
  });
});
