import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, walk, type TestApp } from './harness.js';
import { at, insertDeliveries, insertRuns, setSyncState } from './seed.js';

describe('sync and webhook administration', () => {
  let database: TestDatabase;
  let t: TestApp;
  let runs: Awaited<ReturnType<typeof insertRuns>>;
  let deliveries: Awaited<ReturnType<typeof insertDeliveries>>;
  beforeAll(async () => {
    database = await createTestDatabase();
    t = await createTestApp(database.db, { app: { freshnessTtlMs: 0 } });
    runs = await insertRuns(database.db, [
      {
        kind: 'baseline',
        trigger: 'start',
        status: 'succeeded',
        startedAt: at('2024-06-01T00:00:00Z'),
        finishedAt: at('2024-06-01T00:10:00Z'),
        counts: { users: 5, organizations: 3 },
        report: { drift: { totals: { missing: 0, extra: 0, stale: 0, role_missing: 0, role_extra: 0 }, items: [] } },
        organizationsAvailable: true,
        notes: null,
      },
      { kind: 'sweep', trigger: 'schedule', status: 'succeeded', startedAt: at('2024-06-02T00:00:00Z'), finishedAt: at('2024-06-02T00:01:00Z') },
      {
        kind: 'reconcile',
        trigger: 'cron',
        status: 'failed',
        startedAt: at('2024-06-03T03:00:00Z'),
        finishedAt: at('2024-06-03T03:02:00Z'),
        error: 'Logto answered 503',
        counts: { users: 2 },
        organizationsAvailable: false,
        notes: 'organizations are not enabled in this tenant',
        report: { drift: { totals: { missing: 1, extra: 0, stale: 0, role_missing: 0, role_extra: 0 }, items: [{ kind: 'missing', entity: 'membership', organizationId: 'acme', userId: 'alice', repair: 'created' }] } },
      },
      { kind: 'sweep', trigger: 'schedule', status: 'running', startedAt: at('2024-06-04T00:00:00Z') },
    ]);
    deliveries = await insertDeliveries(database.db, [
      { event: 'User.Created', status: 'applied', receivedAt: at('2024-06-05T00:00:00Z'), processedAt: at('2024-06-05T00:00:01Z'), attempts: 1 },
      { event: 'User.Deleted', status: 'dead', receivedAt: at('2024-06-05T01:00:00Z'), processedAt: at('2024-06-05T02:00:00Z'), attempts: 8, lastError: 'boom', payload: { event: 'User.Deleted', data: { id: 'x' } } },
      { event: 'Organization.Membership.Updated', status: 'applied', receivedAt: at('2024-06-05T03:00:00Z'), processedAt: at('2024-06-06T00:00:00Z'), attempts: 2 },
      { event: 'User.Data.Updated', status: 'dead', receivedAt: at('2024-06-05T04:00:00Z'), attempts: 8, lastError: 'still boom' },
      { event: 'Role.Created', status: 'ignored', receivedAt: at('2024-06-05T05:00:00Z'), processedAt: at('2024-06-07T00:00:00Z') },
    ]);
    await setSyncState(database.db, 'role_sweep', { organizationId: 'globex', cycle: 3 }, at('2024-06-04T00:00:30Z'));
  });
  afterAll(async () => {
    await database.drop();
  });

  it('GET /v1/sync/status reports runs, webhooks, inbox, dead letters, role sweep, organizations and next reconcile', async () => {
    t.state.nextReconcileAt = at('2024-06-10T03:00:00Z');
    const response = await t.get('/v1/sync/status').expect(200);
    const body = response.body;
    expect(body.lastFullSync).toMatchObject({ id: runs[0]!.id, kind: 'baseline', status: 'succeeded', counts: { users: 5, organizations: 3 }, finishedAt: '2024-06-01T00:10:00.000Z' });
    expect(body.lastFullSync).not.toHaveProperty('report');
    expect(body.lastReconcile).toMatchObject({ id: runs[2]!.id, status: 'failed', error: 'Logto answered 503', startedAt: '2024-06-03T03:00:00.000Z' });
    expect(body.lastSweep).toMatchObject({ id: runs[3]!.id, status: 'running', finishedAt: null });
    expect(body.lastSuccessfulFullSync.id).toBe(runs[0]!.id);
    expect(body.nextReconcileAt).toBe('2024-06-10T03:00:00.000Z');
    expect(body.webhooks).toEqual({ lastAppliedAt: '2024-06-06T00:00:00.000Z', inboxDepth: 0, oldestPendingReceivedAt: null, deadLetters: 2 });
    expect(body.roleSweep).toEqual({ position: { organizationId: 'globex', cycle: 3 }, updatedAt: '2024-06-04T00:00:30.000Z' });
    expect(body.organizations).toEqual({ available: false, notes: 'organizations are not enabled in this tenant', runId: runs[2]!.id });
    expect(body.accessStateAsOf).toBe(response.headers['x-access-state-as-of']);
  });

  it('X-Access-State-As-Of follows the inbox: the oldest pending delivery, else now', async () => {
    const before = Date.now();
    const current = await t.get('/v1/sync/status').expect(200);
    expect(Date.parse(current.headers['x-access-state-as-of'] as string)).toBeGreaterThanOrEqual(before - 1000);
    await insertDeliveries(database.db, [
      { event: 'User.Created', status: 'processing', receivedAt: at('2024-06-08T00:00:00Z') },
      { event: 'User.Created', status: 'pending', receivedAt: at('2024-06-09T00:00:00Z') },
    ]);
    const behind = await t.get('/v1/sync/status').expect(200);
    expect(behind.headers['x-access-state-as-of']).toBe('2024-06-08T00:00:00.000Z');
    expect(behind.body.webhooks).toMatchObject({ inboxDepth: 2, oldestPendingReceivedAt: '2024-06-08T00:00:00.000Z' });
    expect((await t.get('/v1/users').expect(200)).headers['x-access-state-as-of']).toBe('2024-06-08T00:00:00.000Z');
  });

  it('GET /v1/sync/runs pages runs newest first and filters by kind and status', async () => {
    const { items, pages } = await walk<{ id: number }>(async (cursor) =>
      (await t.get(`/v1/sync/runs?limit=3${cursor ? `&cursor=${cursor}` : ''}`).expect(200)).body,
    );
    expect(pages).toBe(2);
    expect(items.map((run) => run.id)).toEqual(runs.map((run) => run.id).reverse());
    expect(items[0]).not.toHaveProperty('report');
    expect((await t.get('/v1/sync/runs?kind=sweep').expect(200)).body.data.map((run: { id: number }) => run.id)).toEqual([runs[3]!.id, runs[1]!.id]);
    expect((await t.get('/v1/sync/runs?status=failed').expect(200)).body.data.map((run: { id: number }) => run.id)).toEqual([runs[2]!.id]);
    expect(invalidParamNames(await t.get('/v1/sync/runs?kind=full'))).toEqual(['kind']);
  });

  it('GET /v1/sync/runs/:id returns the run with its report; 404 unknown, 400 malformed', async () => {
    const response = await t.get(`/v1/sync/runs/${runs[2]!.id}`).expect(200);
    expect(response.body).toEqual({
      id: runs[2]!.id,
      kind: 'reconcile',
      trigger: 'cron',
      status: 'failed',
      startedAt: '2024-06-03T03:00:00.000Z',
      finishedAt: '2024-06-03T03:02:00.000Z',
      counts: { users: 2 },
      error: 'Logto answered 503',
      organizationsAvailable: false,
      notes: 'organizations are not enabled in this tenant',
      drift: { missing: 1, extra: 0, stale: 0, role_missing: 0, role_extra: 0 },
      report: { drift: { totals: { missing: 1, extra: 0, stale: 0, role_missing: 0, role_extra: 0 }, items: [{ kind: 'missing', entity: 'membership', organizationId: 'acme', userId: 'alice', repair: 'created' }] } },
    });
    expectProblem(await t.get('/v1/sync/runs/999999'), 404, 'not_found');
    for (const id of ['abc', '0', '-1', '1.5', '9'.repeat(20)]) {
      const malformed = await t.get(`/v1/sync/runs/${id}`);
      expectProblem(malformed, 400, 'invalid_params');
      expect(invalidParamNames(malformed)).toEqual(['id']);
    }
  });

  it('POST /v1/sync/reconcile starts a reconcile (202 with runId), and passes a running one through as 409', async () => {
    const started = await t.post('/v1/sync/reconcile').expect(202);
    expect(started.body).toEqual({ runId: 42 });
    expect(t.calls.at(-1)).toEqual({ name: 'startReconcile', args: ['api'] });
    t.state.reconcileRunningId = 42;
    const conflict = expectProblem(await t.post('/v1/sync/reconcile'), 409, 'reconcile_running');
    expect(conflict.runId).toBe(42);
    t.state.reconcileRunningId = null;
  });

  it('GET /v1/webhooks/dead-letters lists dead deliveries newest first, and pages', async () => {
    const response = await t.get('/v1/webhooks/dead-letters').expect(200);
    expect(response.body).toEqual({
      data: [
        {
          id: deliveries[3]!.id,
          event: 'User.Data.Updated',
          channel: 'logto',
          receivedAt: '2024-06-05T04:00:00.000Z',
          attempts: 8,
          lastError: 'still boom',
          processedAt: null,
          payload: { event: 'User.Data.Updated' },
        },
        {
          id: deliveries[1]!.id,
          event: 'User.Deleted',
          channel: 'logto',
          receivedAt: '2024-06-05T01:00:00.000Z',
          attempts: 8,
          lastError: 'boom',
          processedAt: '2024-06-05T02:00:00.000Z',
          payload: { event: 'User.Deleted', data: { id: 'x' } },
        },
      ],
      nextCursor: null,
    });
    const first = await t.get('/v1/webhooks/dead-letters?limit=1').expect(200);
    const second = await t.get(`/v1/webhooks/dead-letters?limit=1&cursor=${first.body.nextCursor}`).expect(200);
    expect([first.body.data[0].id, second.body.data[0].id]).toEqual([deliveries[3]!.id, deliveries[1]!.id]);
    expect(second.body.nextCursor).toBeNull();
  });

  it('POST /v1/webhooks/dead-letters/:id/retry calls the action: 202, or 404 when there is no such dead letter', async () => {
    t.state.deadLetterIds.add(deliveries[1]!.id);
    const retried = await t.post(`/v1/webhooks/dead-letters/${deliveries[1]!.id}/retry`).expect(202);
    expect(retried.body).toEqual({ id: deliveries[1]!.id, status: 'pending' });
    expect(t.calls.at(-1)).toEqual({ name: 'retryDeadLetter', args: [deliveries[1]!.id] });
    expectProblem(await t.post('/v1/webhooks/dead-letters/777/retry'), 404, 'not_found');
    expect(t.calls.at(-1)).toEqual({ name: 'retryDeadLetter', args: [777] });
    const malformed = await t.post('/v1/webhooks/dead-letters/x/retry');
    expect(invalidParamNames(malformed)).toEqual(['id']);
  });
});
