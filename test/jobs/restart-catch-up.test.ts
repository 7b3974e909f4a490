import { describe, expect, it } from 'vitest';
import { createFreshnessHold, hookLogWindowMs, planRestart, type RestartFacts } from '../../src/jobs/restart-catch-up.js';

const now = new Date('2026-03-10T12:00:00.000Z');
const ago = (ms: number) => new Date(now.getTime() - ms);
const minute = 60_000;
const hour = 60 * minute;

const facts = (overrides: Partial<RestartFacts> = {}): RestartFacts => ({
  lastDeliveryReceivedAt: ago(10 * minute),
  lastScanAt: ago(7 * minute),
  lastFullSyncStartedAt: ago(5 * hour),
  lifecycle: { state: 'running', startedAt: ago(6 * hour).toISOString() },
  ...overrides,
});

describe('planning the catch-up after a stop', () => {
  it('after a short crash with a hook: scans from the older of last delivery and last scan, holds at the later evidence, no reconcile', () => {
    expect(planRestart(facts(), { now, hookConfigured: true })).toEqual({
      synced: true,
      knownGoodAt: ago(7 * minute),
      scanSince: ago(10 * minute),
      reconcile: null,
    });
    const onlyDeliveries = planRestart(facts({ lastScanAt: null }), { now, hookConfigured: true });
    expect(onlyDeliveries).toMatchObject({ knownGoodAt: ago(10 * minute), scanSince: ago(10 * minute) });
  });

  it('reconciles when the service was down longer than the hook logs reach, clean stop or not', () => {
    const old = { lastDeliveryReceivedAt: ago(30 * hour), lastScanAt: ago(26 * hour), lastFullSyncStartedAt: ago(40 * hour) };
    const crashed = planRestart(facts(old), { now, hookConfigured: true });
    expect(crashed.reconcile).toMatch(/^down for 26\.0 h, longer than Logto keeps hook logs \(24 h\)/);
    expect(crashed.knownGoodAt).toEqual(ago(26 * hour));
    const stopped = planRestart(facts({ ...old, lifecycle: { state: 'stopped', stoppedAt: ago(25 * hour).toISOString(), inboxEmpty: true } }), {
      now,
      hookConfigured: true,
    });
    expect(stopped.reconcile).toMatch(/^down for 25\.0 h/);
  });

  it('measures the downtime from a clean stop when there is one, and from the last evidence after a crash', () => {
    // Quiet tenant: nothing received or scanned for 30 h, but the process ran until an hour ago and stopped cleanly.
    const quiet = { lastDeliveryReceivedAt: ago(30 * hour), lastScanAt: null, lastFullSyncStartedAt: ago(28 * hour) };
    expect(planRestart(facts({ ...quiet, lifecycle: { state: 'stopped', stoppedAt: ago(hour).toISOString(), inboxEmpty: true } }), { now, hookConfigured: true }).reconcile).toBeNull();
    expect(planRestart(facts(quiet), { now, hookConfigured: true }).reconcile).toMatch(/^down for 28\.0 h/);
    expect(planRestart(facts({ ...quiet, lastFullSyncStartedAt: ago(23 * hour) }), { now, hookConfigured: true }).reconcile).toBeNull();
    expect(planRestart(facts(quiet), { now, hookConfigured: true, logWindowMs: 72 * hour }).reconcile).toBeNull();
  });

  it('without a hook id, reconciles unless the last stop was clean with an empty inbox', () => {
    expect(planRestart(facts(), { now, hookConfigured: false }).reconcile).toMatch(/^no LOGTO_HOOK_ID/);
    const clean = { lifecycle: { state: 'stopped' as const, stoppedAt: ago(2 * minute).toISOString(), inboxEmpty: true } };
    expect(planRestart(facts(clean), { now, hookConfigured: false }).reconcile).toBeNull();
    const leftWork = { lifecycle: { state: 'stopped' as const, stoppedAt: ago(2 * minute).toISOString(), inboxEmpty: false } };
    expect(planRestart(facts(leftWork), { now, hookConfigured: false }).reconcile).toMatch(/^no LOGTO_HOOK_ID/);
    expect(planRestart(facts({ lifecycle: null }), { now, hookConfigured: false }).reconcile).toMatch(/^no LOGTO_HOOK_ID/);
  });

  it('never synced: nothing to hold or reconcile (the baseline runs), the scan reads its default window', () => {
    expect(planRestart(facts({ lastFullSyncStartedAt: null, lastDeliveryReceivedAt: null, lastScanAt: null, lifecycle: null }), { now, hookConfigured: false })).toEqual({
      synced: false,
      knownGoodAt: null,
      scanSince: null,
      reconcile: null,
    });
  });

  it('the log window is a day', () => {
    expect(hookLogWindowMs).toBe(24 * hour);
  });
});

describe('the freshness hold', () => {
  it('caps at the earliest time held, and lifts as each reason is released', () => {
    const hold = createFreshnessHold();
    expect(hold.cap()).toBeNull();
    hold.hold('scan', ago(5 * minute));
    hold.hold('reconcile', ago(30 * hour));
    expect(hold.cap()).toEqual(ago(30 * hour));
    hold.release('reconcile');
    expect(hold.cap()).toEqual(ago(5 * minute));
    hold.release('scan');
    hold.release('scan');
    expect(hold.cap()).toBeNull();
  });
});
