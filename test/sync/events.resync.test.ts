import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/logger.js';
import type { LogtoClient } from '../../src/logto/index.js';
import type { DatabaseHandle } from '../../src/db/client.js';
import { createMembershipDeltas } from '../../src/sync/events/membership-deltas.js';
import { createOrganizationResync, type OrganizationRefreshResult } from '../../src/sync/events/organization-resync.js';

type Call = { organizationId: string; deliveryId: number | null | undefined; resolve: (value: OrganizationRefreshResult) => void; reject: (error: Error) => void };

/** A re-read per call that finishes only when the test says so. */
const controlledRefresh = () => {
  const calls: Call[] = [];
  const refresh = (_deps: unknown, organizationId: string, base: { deliveryId?: number | null }) =>
    new Promise<OrganizationRefreshResult>((resolve, reject) => calls.push({ organizationId, deliveryId: base.deliveryId, resolve, reject }));
  return { calls, refresh };
};

const result = (membersChecked: number): OrganizationRefreshResult => ({
  changes: [],
  rowsWritten: 0,
  membersChecked,
  memberRolesChecked: 0,
  organizationFound: true,
});

const deps = { database: {} as DatabaseHandle, logto: {} as LogtoClient, logger: silentLogger };
const base = (deliveryId: number) => ({ source: 'webhook' as const, deliveryId, actor: null });
const settled = () => new Promise((resolve) => setImmediate(resolve));

describe('the coalescer of organization member re-reads', () => {
  it('joins requests made while one is queued, and schedules exactly one more after the one in flight', async () => {
    const { calls, refresh } = controlledRefresh();
    const resync = createOrganizationResync(deps, refresh as never);
    const a = resync.request('org1', base(1));
    const b = resync.request('org1', base(2));
    const c = resync.request('org1', base(3));
    expect(b).toBe(c);
    expect(calls.map((call) => call.deliveryId)).toEqual([1]);

    calls[0]!.resolve(result(1));
    expect(await a).toEqual(result(1));
    await settled();
    // The queued re-read starts once the first is done, on behalf of the first request that queued it.
    expect(calls.map((call) => call.deliveryId)).toEqual([1, 2]);
    const d = resync.request('org1', base(4));
    const e = resync.request('org1', base(5));
    expect(d).toBe(e);
    expect(d).not.toBe(b);

    calls[1]!.resolve(result(2));
    expect(await b).toEqual(result(2));
    await settled();
    expect(calls.map((call) => call.deliveryId)).toEqual([1, 2, 4]);
    calls[2]!.resolve(result(3));
    expect(await e).toEqual(result(3));
    expect(resync.started()).toBe(3);

    // Idle again: the next request starts at once.
    const f = resync.request('org1', base(6));
    expect(calls).toHaveLength(4);
    calls[3]!.resolve(result(4));
    expect(await f).toEqual(result(4));
  });

  it('keeps organizations apart', async () => {
    const { calls, refresh } = controlledRefresh();
    const resync = createOrganizationResync(deps, refresh as never);
    const one = resync.request('org1', base(1));
    const two = resync.request('org2', base(2));
    expect(calls.map((call) => call.organizationId)).toEqual(['org1', 'org2']);
    calls[0]!.resolve(result(1));
    calls[1]!.resolve(result(2));
    expect(await one).toEqual(result(1));
    expect(await two).toEqual(result(2));
  });

  it('runs the queued re-read even when the one in flight fails, and reports each outcome to its own requesters', async () => {
    const { calls, refresh } = controlledRefresh();
    const resync = createOrganizationResync(deps, refresh as never);
    const failing = resync.request('org1', base(1));
    const queued = resync.request('org1', base(2));
    calls[0]!.reject(new Error('Logto is down'));
    await expect(failing).rejects.toThrow('Logto is down');
    await settled();
    expect(calls).toHaveLength(2);
    calls[1]!.resolve(result(7));
    expect(await queued).toEqual(result(7));
  });

  it('applies the deltas of one organization in order, and starts its re-read only after the deltas queued before it', async () => {
    const { calls, refresh } = controlledRefresh();
    const membershipDeltas = createMembershipDeltas();
    const resync = createOrganizationResync(deps, refresh as never, { membershipDeltas });
    const applied: string[] = [];
    let finishFirst: () => void = () => {};
    const first = membershipDeltas.apply('org1', async () => {
      await new Promise<void>((resolve) => (finishFirst = resolve));
      applied.push('first');
    });
    const second = membershipDeltas.apply('org1', async () => {
      applied.push('second');
    });
    const read = resync.request('org1', base(1));
    const elsewhere = resync.request('org2', base(2));
    await settled();
    // Another organization's re-read does not wait; this one's waits for both deltas.
    expect(calls.map((call) => call.organizationId)).toEqual(['org2']);
    expect(applied).toEqual([]);
    finishFirst();
    await Promise.all([first, second]);
    await settled();
    expect(applied).toEqual(['first', 'second']);
    expect(calls.map((call) => call.organizationId)).toEqual(['org2', 'org1']);
    calls[0]!.resolve(result(2));
    calls[1]!.resolve(result(1));
    expect(await read).toEqual(result(1));
    expect(await elsewhere).toEqual(result(2));
  });
});
