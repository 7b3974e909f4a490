import { eq, sql } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { users, webhookDeliveries } from '../../db/schema.js';
import { claimDeliveries, insertDelivery, listDeadLetters, retryDeadLetter } from '../../src/db/inbox.js';
import { createLogtoClient } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import type { EventDelivery, EventHandlers } from '../../src/sync/events/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { signLogtoBody } from '../../src/webhooks/signature.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';
import { deliveries, receiverApp, testWorker, webhookConfig } from './harness.js';

describe('the inbox worker against the simulated tenant', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;

  /** What the tenant sent for an action (its hook points at a closed port: nothing reaches a receiver). */
  const captured = async (action: () => Promise<unknown>) => {
    const before = sim.webhooks.sent.length;
    await action();
    await sim.webhooks.idle();
    return sim.webhooks.sent.slice(before);
  };
  /** Posts a delivery the tenant sent to the receiver (no worker running): it is only stored. */
  const store = async (config = webhookConfig({ sim }), rawBody: string, signature: string | undefined) => {
    const response = await request(receiverApp(database.db, config))
      .post('/webhooks/logto')
      .set('content-type', 'application/json')
      .set('logto-signature-sha-256', signature ?? '')
      .send(rawBody);
    expect(response.status).toBe(202);
    return response.body.id as number;
  };
  const statusOf = async (id: number) => (await database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)))[0]!;

  beforeAll(async () => {
    sim = await startTenant({ seed: 3, generate: { users: 20, organizations: 3, organizationRoles: 2 } });
    sim.setWebhookEndpoints([{ url: 'http://127.0.0.1:9/unused' }]);
  });
  afterAll(async () => {
    await sim.close();
  });
  beforeEach(async () => {
    database = await createTestDatabase();
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
  });
  afterEach(async () => {
    sim.faults.reset();
    await database.drop();
  });

  it('applies after a restart a delivery stored while no worker was running', async () => {
    const user = sim.state.listUsers()[0]!;
    const [sent] = await captured(() => sim.api.patch(`/users/${user.id}`, { name: 'Renamed while down' }));
    const id = await store(undefined, sent!.rawBody, sent!.signature);
    expect((await statusOf(id)).status).toBe('pending');
    // A new process: a new worker, never started, drained.
    await testWorker(database, clientFor(sim), webhookConfig({ sim })).drain();
    expect((await statusOf(id)).status).toBe('applied');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('claims again, after its lease ran out, a delivery a crashed worker had claimed', async () => {
    const user = sim.state.listUsers()[1]!;
    const [sent] = await captured(() => sim.api.patch(`/users/${user.id}/is-suspended`, { isSuspended: true }));
    const id = await store(undefined, sent!.rawBody, sent!.signature);
    const [claimed] = await claimDeliveries(database.db, 1, 60_000);
    expect(claimed?.id).toBe(id);
    // The process dies holding it; its lease runs out.
    await database.db.update(webhookDeliveries).set({ leaseUntil: sql`now() - interval '1 second'` });
    await testWorker(database, clientFor(sim), webhookConfig({ sim })).drain();
    expect(await statusOf(id)).toMatchObject({ status: 'applied', attempts: 2 });
    const [stored] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(stored?.isSuspended).toBe(true);
  });

  it('retries a delivery whose processing failed while Logto was down, and applies it once Logto is back', async () => {
    const user = sim.state.listUsers()[2]!;
    // Custom data: the payload is partial, so applying it needs Logto.
    const [sent] = await captured(() => sim.api.patch(`/users/${user.id}/custom-data`, { customData: { tier: 'gold' } }));
    const id = await store(undefined, sent!.rawBody, sent!.signature);
    sim.faults.failNext(10_000, { status: 503 });
    const worker = testWorker(database, clientFor(sim, { maxRetries: 1 }), webhookConfig({ sim }), { retryBaseMs: 50, retryCapMs: 50 });
    await worker.drain();
    const failed = await statusOf(id);
    expect(failed.status).toBe('pending');
    expect(failed.attempts).toBeGreaterThanOrEqual(1);
    expect(failed.lastError).toMatch(/503/);
    const [before] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(before?.customData).not.toEqual({ tier: 'gold' });

    sim.faults.reset();
    await worker.drain({ includeDelayed: true });
    expect(await statusOf(id)).toMatchObject({ status: 'applied', lastError: null });
    const [after] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(after?.customData).toEqual(sim.state.getUser(user.id)!.customData);
  });

  it('makes a delivery a dead letter after the last attempt; retried by an operator it applies', async () => {
    const user = sim.state.listUsers()[3]!;
    const [sent] = await captured(() => sim.api.patch(`/users/${user.id}/profile`, { profile: { nickname: 'Dead' } }));
    const config = webhookConfig({ sim, maxAttempts: 2 });
    const id = await store(config, sent!.rawBody, sent!.signature);
    sim.faults.failNext(10_000, { status: 503 });
    const worker = testWorker(database, clientFor(sim, { maxRetries: 0 }), config, { retryBaseMs: 10, retryCapMs: 10 });
    await worker.drain({ includeDelayed: true });
    expect(await statusOf(id)).toMatchObject({ status: 'dead', attempts: 2, lastError: expect.stringMatching(/503/) });
    expect((await listDeadLetters(database.db)).map((row) => row.id)).toEqual([id]);

    sim.faults.reset();
    expect(await retryDeadLetter(database.db, id)).toBe(true);
    await worker.drain();
    expect(await statusOf(id)).toMatchObject({ status: 'applied', attempts: 1 });
    const [stored] = await database.db.select().from(users).where(eq(users.id, user.id));
    expect(stored?.profile).toEqual({ nickname: 'Dead' });
  });

  it('makes a payload that can never apply a dead letter at once, and ignores events it does not follow', async () => {
    const config = webhookConfig({ sim });
    const post = async (payload: Record<string, unknown>) => {
      const body = JSON.stringify(payload);
      return store(config, body, signLogtoBody(sim.signingKey, body));
    };
    const broken = await post({ event: 'Organization.Membership.Updated', createdAt: new Date().toISOString(), addedUserIds: ['x'] });
    const unknown = await post({ event: 'Something.New', createdAt: new Date().toISOString() });
    const role = await post({ event: 'Role.Created', createdAt: new Date().toISOString(), data: { id: 'r1' } });
    const scopes = await post({ event: 'OrganizationRole.Scopes.Updated', createdAt: new Date().toISOString(), params: { id: 'r1' } });
    const applications = await post({
      event: 'Organization.Membership.Updated',
      createdAt: new Date().toISOString(),
      organizationId: sim.state.listOrganizations()[0]!.id,
      addedApplicationIds: ['app1'],
    });
    await testWorker(database, clientFor(sim), config).drain({ includeDelayed: true });
    expect(await statusOf(broken)).toMatchObject({ status: 'dead', attempts: 1, lastError: expect.stringMatching(/names no organization/) });
    for (const id of [unknown, role, scopes, applications]) expect((await statusOf(id)).status).toBe('ignored');
  });
});

describe('the inbox worker with handlers of its own', () => {
  let database: TestDatabase;
  const config = webhookConfig();
  const store = (n: number, userId = `u${n}`) =>
    insertDelivery(database.db, {
      dedupKey: `k${n}`,
      channel: 'logto',
      payload: { event: 'User.Data.Updated', params: { userId }, data: { id: userId } },
    });
  /** Handlers that record what they handle; each waits for its gate, if one is set. */
  const recordingHandlers = (gate?: (delivery: EventDelivery) => Promise<void>) => {
    const handled: number[] = [];
    const handlers = {
      async handle(delivery: EventDelivery) {
        await gate?.(delivery);
        handled.push(delivery.id);
        return 'applied' as const;
      },
    } as unknown as EventHandlers;
    return { handled, handlers };
  };
  const worker = (handlers: EventHandlers, concurrency = 8) =>
    testWorker(database, createLogtoClient(config.logto), config, { handlers, concurrency });

  beforeEach(async () => {
    database = await createTestDatabase();
  });
  afterEach(async () => {
    await database.drop();
  });

  it('lets two workers share one inbox, each delivery handled exactly once', async () => {
    for (let n = 0; n < 40; n += 1) await store(n);
    const one = recordingHandlers(() => new Promise((resolve) => setTimeout(resolve, Math.random() * 5)));
    const two = recordingHandlers(() => new Promise((resolve) => setTimeout(resolve, Math.random() * 5)));
    const first = worker(one.handlers, 3);
    const second = worker(two.handlers, 3);
    first.start();
    second.start();
    await Promise.all([first.drain(), second.drain()]);
    await Promise.all([first.stop(), second.stop()]);
    const all = [...one.handled, ...two.handled].sort((a, b) => a - b);
    const rows = await deliveries(database.db);
    expect(all).toEqual(rows.map((row) => row.id));
    expect(rows.every((row) => row.status === 'applied' && row.attempts === 1)).toBe(true);
  });

  it('handles the deliveries about one entity in the order they were received', async () => {
    for (let n = 0; n < 12; n += 1) await store(n, n % 2 === 0 ? 'same-user' : `other-${n}`);
    const { handled, handlers } = recordingHandlers(
      (delivery) => new Promise((resolve) => setTimeout(resolve, delivery.id % 4 === 1 ? 15 : Math.random() * 3)),
    );
    await worker(handlers).drain();
    const rows = await deliveries(database.db);
    const sameUser = rows.filter((row) => (row.payload.params as { userId: string }).userId === 'same-user').map((row) => row.id);
    expect(handled.filter((id) => sameUser.includes(id))).toEqual(sameUser);
    expect(handled).toHaveLength(12);
  });

  it('finishes the deliveries in hand when stopped and leaves the rest in the inbox', async () => {
    for (let n = 0; n < 5; n += 1) await store(n);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    let bothStarted!: () => void;
    const inHand = new Promise<void>((resolve) => (bothStarted = resolve));
    const { handled, handlers } = recordingHandlers(async () => {
      started += 1;
      if (started === 2) bothStarted();
      await released;
    });
    const running = worker(handlers, 2);
    running.start();
    await inHand;
    const stopping = running.stop();
    release();
    await stopping;
    expect(handled).toHaveLength(2);
    const rows = await deliveries(database.db);
    expect(rows.filter((row) => row.status === 'applied').map((row) => row.id)).toEqual(handled.sort((a, b) => a - b));
    expect(rows.filter((row) => row.status === 'pending' && row.attempts === 0)).toHaveLength(3);
  });
});
