import request from 'supertest';
import express from 'express';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { insertClaimedDelivery, insertDelivery, type Delivery } from '../../src/db/inbox.js';
import { silentLogger } from '../../src/logger.js';
import { createLogtoClient } from '../../src/logto/index.js';
import type { EventDelivery, EventHandlers } from '../../src/sync/events/index.js';
import { signLogtoBody } from '../../src/webhooks/signature.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { deliveries, testWorker, webhookConfig } from './harness.js';

/** Claiming at intake: a delivery stored already claimed by this process's worker and handed over in memory. */
describe('the inbox worker claiming at intake', () => {
  let database: TestDatabase;
  const config = webhookConfig({ signingKeys: ['intake-signing-key'] });
  const payloadAbout = (n: number, userId: string) => ({ event: 'User.Data.Updated', createdAt: `2026-01-01T00:00:0${n}.000Z`, params: { userId }, data: { id: userId } });
  /** Handlers that record what they handle; each waits for its gate, if one is set. */
  const recordingHandlers = (gate?: (delivery: EventDelivery) => Promise<void>) => {
    const handled: EventDelivery[] = [];
    const handlers = {
      async handle(delivery: EventDelivery) {
        await gate?.(delivery);
        handled.push(delivery);
        return 'applied' as const;
      },
    } as unknown as EventHandlers;
    return { handled, handlers };
  };
  // No poll in the duration of a test and nothing wakes the worker: only what is handed over is handled.
  const worker = (handlers: EventHandlers, concurrency: number, claimSpacingMs = 10) =>
    testWorker(database, createLogtoClient(config.logto), config, { handlers, concurrency, pollIntervalMs: 600_000, claimSpacingMs });
  const until = async (condition: () => boolean | Promise<boolean>) => {
    for (let tries = 0; !(await condition()); tries += 1) {
      if (tries > 500) throw new Error('condition not reached');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };

  beforeEach(async () => {
    database = await createTestDatabase();
  });
  afterEach(async () => {
    await database.drop();
  });

  it('stores a delivery claimed by the worker when it has room and hands it over, with no claim, wake or poll', async () => {
    const { handled, handlers } = recordingHandlers();
    const running = worker(handlers, 4);
    running.start();
    // The first claim, finding the inbox empty, lets the worker take deliveries at intake.
    await running.drain();
    const app = express();
    app.use('/webhooks', createWebhookRouter({ db: database.db, config, logger: silentLogger, intake: running.intake }));
    const body = JSON.stringify(payloadAbout(1, 'u1'));
    const response = await request(app)
      .post('/webhooks/logto')
      .set('content-type', 'application/json')
      .set('logto-signature-sha-256', signLogtoBody('intake-signing-key', body))
      .send(body);
    expect(response.status).toBe(202);
    await until(async () => (await deliveries(database.db))[0]?.status === 'applied');
    const [row] = await deliveries(database.db);
    expect(row).toMatchObject({ id: response.body.id, status: 'applied', outcome: 'applied', attempts: 1, leaseUntil: null });
    expect(handled.map((delivery) => delivery.id)).toEqual([response.body.id]);
    expect(handled[0]!.payload).toEqual(payloadAbout(1, 'u1'));
    expect(handled[0]!.receivedAt?.getTime()).toBe(row!.receivedAt.getTime());
    // The same delivery again is a duplicate: not stored, not claimed, not handled again.
    const again = await request(app)
      .post('/webhooks/logto')
      .set('content-type', 'application/json')
      .set('logto-signature-sha-256', signLogtoBody('intake-signing-key', body))
      .send(body);
    expect(again.body).toEqual({ id: response.body.id, duplicate: true });
    await running.stop();
    expect(handled).toHaveLength(1);
  });

  it('stores pending once the worker was full, and claims at intake again only once a claim took those (order received)', async () => {
    let openX!: () => void;
    let openY!: () => void;
    const gates: Record<string, Promise<void>> = {
      x: new Promise<void>((resolve) => (openX = resolve)),
      y: new Promise<void>((resolve) => (openY = resolve)),
    };
    const { handled, handlers } = recordingHandlers((delivery) => gates[(delivery.payload.params as { userId: string }).userId]!);
    // Claims a second apart: when A is done, B waits in the inbox for the next claim while the slot is free.
    const running = worker(handlers, 1, 1000);
    running.start();
    await running.drain();
    const input = (n: number, userId: string) => ({ dedupKey: `k${n}`, channel: 'logto' as const, payload: payloadAbout(n, userId) });
    const about = (n: number, userId: string) => ({ event: 'User.Data.Updated', payload: payloadAbout(n, userId) });

    // A, about x, held in hand: the worker's one slot is taken.
    const a = running.intake.begin(about(1, 'x'));
    expect(a.claim).toBe(true);
    const storedA = await insertClaimedDelivery(database.db, input(1, 'x'), a.leaseMs);
    a.finish(storedA.delivery ?? null);
    // B, about y: no room, stored pending.
    const b = running.intake.begin(about(2, 'y'));
    expect(b.claim).toBe(false);
    await insertDelivery(database.db, input(2, 'y'));
    b.finish(null);
    openX();
    await until(() => handled.length === 1);
    // C, about y, with the slot free again: B is not claimed yet, so C must not overtake it.
    const c = running.intake.begin(about(3, 'y'));
    expect(c.claim).toBe(false);
    await insertDelivery(database.db, input(3, 'y'));
    c.finish(null);
    // Nor one about another entity: behind, deliveries are claimed in the order received.
    const e = running.intake.begin(about(5, 'z'));
    expect(e.claim).toBe(false);
    await insertDelivery(database.db, input(5, 'z'));
    e.finish(null);
    openY();
    await running.drain();
    const rows = await deliveries(database.db);
    expect(handled.map((delivery) => delivery.id)).toEqual(rows.map((row) => row.id));
    expect(rows.map((row) => [row.status, row.attempts])).toEqual([['applied', 1], ['applied', 1], ['applied', 1], ['applied', 1]]);
    // Caught up (a claim found nothing left): the next delivery is claimed at intake again.
    const d = running.intake.begin(about(4, 'y'));
    expect(d.claim).toBe(true);
    d.finish(null);
    await running.stop();
  });

  it('hands a delivery over at once while nothing handed over before is being applied, and those arriving meanwhile in a later turn', async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const userOf = (delivery: EventDelivery) => (delivery.payload.params as { userId: string }).userId;
    const started: string[] = [];
    const { handled, handlers } = recordingHandlers(async (delivery) => {
      started.push(userOf(delivery));
      if (userOf(delivery) === 'held') await gate;
    });
    // Turns ten minutes apart: within this test a delivery is handled only if it is handed over at once.
    const running = testWorker(database, createLogtoClient(config.logto), config, { handlers, concurrency: 10, pollIntervalMs: 600_000, handOverSpacingMs: 600_000 });
    running.start();
    await running.drain();
    const handOver = async (n: number, userId: string) => {
      const ticket = running.intake.begin({ event: 'User.Data.Updated', payload: payloadAbout(n, userId) });
      expect(ticket.claim).toBe(true);
      const stored = await insertClaimedDelivery(database.db, { dedupKey: `k${n}`, channel: 'logto', payload: payloadAbout(n, userId) }, ticket.leaseMs);
      ticket.finish(stored.delivery ?? null);
    };
    await handOver(1, 'a');
    await until(() => handled.length === 1);
    // Right after the first one was applied, within the spacing: still at once (turns by the clock held it back).
    await handOver(2, 'held');
    await until(() => started.includes('held'));
    // While 'held' is being applied, the next ones wait for a turn.
    await handOver(3, 'b');
    await handOver(4, 'c');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(started).toEqual(['a', 'held']);
    open();
    // Stopping hands over what waits for a turn, and finishes it.
    await running.stop();
    expect(handled.map(userOf)).toEqual(['a', 'held', 'b', 'c']);
    expect((await deliveries(database.db)).map((row) => row.status)).toEqual(['applied', 'applied', 'applied', 'applied']);
  });

  it('leaves a delivery stored claimed by a process that died to any worker once its lease ran out', async () => {
    const stored = await insertClaimedDelivery(database.db, { dedupKey: 'k1', channel: 'logto', payload: payloadAbout(1, 'u1') }, 50);
    expect(stored.delivery).toMatchObject({ status: 'processing', attempts: 1 } satisfies Partial<Delivery>);
    // Nobody handles it (the process is gone); after the lease, another worker claims it as its second attempt.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const { handled, handlers } = recordingHandlers();
    await worker(handlers, 4).drain();
    expect(handled.map((delivery) => delivery.id)).toEqual([stored.id]);
    expect((await deliveries(database.db))[0]).toMatchObject({ status: 'applied', attempts: 2 });
  });
});
