import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventOutbox } from '../../db/schema.js';
import { webhookIdOf } from '../../src/db/access-events.js';
import { recordChanges } from '../../src/sync/apply/changes.js';
import { createEventSubscription } from '../../src/sync/event-subscriptions.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
import { startEventReceiver, type EventReceiver } from '../helpers/event-receiver.js';
import { inArray, sql } from 'drizzle-orm';

const script = fileURLToPath(new URL('../helpers/event-sender-process.ts', import.meta.url));

const startSenderProcess = (url: string) =>
  new Promise<ChildProcess>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      env: { ...process.env, DATABASE_URL: url, LEASE_MS: '1000' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child.once('error', reject);
    child.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('ready')) resolve(child);
    });
  });

const exited = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));

/** A sender killed mid-delivery loses nothing: its claims expire and the next sender sends them. */
describe.skipIf(!hasPostgresServer())('a killed event sender process', () => {
  let database: TestDatabase;
  let receiver: EventReceiver;
  let secret = '';
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
    receiver = await startEventReceiver(() => secret);
  });
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(children.map(exited));
    await receiver.close();
    await database.drop();
  });

  it('resends after a restart what it had in hand, and nothing is lost', async () => {
    const subscription = await createEventSubscription(database.db, { url: receiver.url }, { allowPrivateUrls: true });
    secret = subscription.secret;
    // The first answers come at once; the rest are held until after the kill, so the kill always lands
    // while deliveries are in flight, however slowly this machine runs the two processes.
    let answered = 0;
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    receiver.respond = async () => {
      if (answered++ < 5) return 204;
      await held;
      // Answered after the kill: nobody reads it.
      return 503;
    };
    const changes = Array.from({ length: 40 }, (_, index) => ({ kind: 'user.created' as const, userId: `crash-${index}` }));
    await recordChanges(database.db, changes, { source: 'webhook', observedAt: new Date() });

    const first = await startSenderProcess(database.url!);
    children.push(first);
    // Five delivered and recorded, and more requests waiting for their answer.
    await receiver.waitFor((received) => received.length >= 5);
    for (let waited = 0; answered <= 5 || (await database.db.$count(eventOutbox, inArray(eventOutbox.status, ['delivered']))) < 5; waited += 1) {
      if (waited > 400) throw new Error('the first sender never had deliveries in flight');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    first.kill('SIGKILL');
    await exited(first);
    release();
    const inFlight = await database.db.$count(eventOutbox, inArray(eventOutbox.status, ['processing']));
    const delivered = await database.db.$count(eventOutbox, inArray(eventOutbox.status, ['delivered']));
    expect(inFlight).toBeGreaterThan(0);
    expect(delivered).toBeLessThan(changes.length);

    receiver.respond = () => 204;
    const second = await startSenderProcess(database.url!);
    children.push(second);
    for (let waited = 0; ; waited += 1) {
      const open = await database.db.$count(eventOutbox, sql`${eventOutbox.status} <> 'delivered'`);
      if (open === 0) break;
      if (waited > 600) throw new Error(`${open} deliveries never completed`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    second.kill('SIGKILL');
    await exited(second);

    const rows = await database.db.select().from(eventOutbox);
    const got = new Set(receiver.delivered().map((event) => event.webhookId));
    expect(rows.every((row) => got.has(webhookIdOf(row.changeId)))).toBe(true);
    expect(got.size).toBe(changes.length);
    expect(receiver.rejected).toBe(0);
  }, 90_000);
});
