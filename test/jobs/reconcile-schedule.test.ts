import { afterEach, describe, expect, it, vi } from 'vitest';
import { AppError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { scheduleReconcile } from '../../src/jobs/reconcile-schedule.js';

describe('scheduleReconcile', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fires on the cron expression in its time zone, and keeps going after a failed or skipped run', async () => {
    vi.useFakeTimers({ now: new Date('2026-11-23T01:59:30Z') });
    const starts: string[] = [];
    let outcome: 'ok' | 'fail' | 'busy' = 'fail';
    const schedule = scheduleReconcile({ cron: '0 3 * * *', timezone: 'Europe/Berlin', logger: silentLogger }, async () => {
      starts.push(new Date().toISOString());
      if (outcome === 'fail') throw new Error('Logto is down');
      if (outcome === 'busy') throw new AppError(409, 'reconcile_running', 'busy');
    });
    try {
      // 03:00 in Berlin is 02:00 UTC in winter.
      expect(schedule.nextRunAt()?.toISOString()).toBe('2026-11-23T02:00:00.000Z');
      await vi.advanceTimersByTimeAsync(20_000);
      expect(starts).toEqual([]);
      await vi.advanceTimersByTimeAsync(15_000);
      expect(starts).toHaveLength(1);
      expect(starts[0]!.startsWith('2026-11-23T02:00:0')).toBe(true);
      outcome = 'busy';
      await vi.advanceTimersByTimeAsync(24 * 3600 * 1000);
      outcome = 'ok';
      await vi.advanceTimersByTimeAsync(24 * 3600 * 1000);
      expect(starts.map((start) => start.slice(0, 16))).toEqual(['2026-11-23T02:00', '2026-11-24T02:00', '2026-11-25T02:00']);
      expect(schedule.nextRunAt()?.toISOString()).toBe('2026-11-26T02:00:00.000Z');
    } finally {
      await schedule.stop();
    }
  });
});
