import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges } from '../../db/schema.js';
import { lastChangeIdSince, settledChangeId } from '../../src/db/change-frontier.js';
import type { Database } from '../../src/db/client.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';

const change = { kind: 'user.created', source: 'webhook', observedAt: new Date(), userId: 'settling' };

/**
 * `settledChangeId` on a server with several connections: an id is settled once no transaction that
 * may hold an earlier one is still open, so a reader that takes it before reading state finds every
 * change that state may lack after it.
 */
describe.runIf(hasPostgresServer())('settledChangeId', () => {
  let database: TestDatabase;
  let other: pg.Client;

  beforeAll(async () => {
    database = await createTestDatabase();
    other = new pg.Client({ connectionString: database.url });
    await other.connect();
  });
  afterAll(async () => {
    await other?.end();
    await database?.drop();
  });

  const record = async () => (await database.db.insert(accessChanges).values(change).returning({ id: accessChanges.id }))[0]!.id;
  const holdEarlierId = async () => {
    await other.query('begin');
    await other.query(`insert into access_changes (observed_at, kind, source, user_id) values (now(), 'user.created', 'webhook', 'held')`);
  };

  it('answers the last change id when no transaction is open', async () => {
    await record();
    const last = await record();
    expect(await settledChangeId(database.db)).toBe(last);
  });

  it('waits for an open transaction holding an earlier id, then answers the last id', async () => {
    await holdEarlierId();
    const last = await record();
    let committed = false;
    const settling = settledChangeId(database.db).then((id) => ({ id, committed }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    committed = true;
    await other.query('commit');
    expect(await settling).toEqual({ id: last, committed: true });
  });

  it('answers the last id it proved while a transaction holding an earlier one stays open', async () => {
    const proved = await settledChangeId(database.db);
    await holdEarlierId();
    await record();
    try {
      expect(await settledChangeId(database.db)).toBe(proved);
    } finally {
      await other.query('rollback');
    }
  });
});

/**
 * `lastChangeIdSince` shares one read of the change log among callers asking together, but never hands a
 * caller a read that was under way when it asked: a change recorded just before the call could be missing.
 */
describe.runIf(hasPostgresServer())('lastChangeIdSince', () => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  const record = async () => (await database.db.insert(accessChanges).values(change).returning({ id: accessChanges.id }))[0]!.id;

  it('answers a change recorded while an earlier read was under way, with one read for the callers that asked after it', async () => {
    const before = await record();
    // The first read's answer is held back after PostgreSQL gave it, until released.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let answered!: () => void;
    const firstAnswered = new Promise<void>((resolve) => (answered = resolve));
    let reads = 0;
    const db = Object.create(database.db) as Database;
    db.execute = (async (query: Parameters<Database['execute']>[0]) => {
      const result = await database.db.execute(query);
      reads += 1;
      if (reads === 1) {
        answered();
        await held;
      }
      return result;
    }) as Database['execute'];

    const first = lastChangeIdSince(db);
    await firstAnswered;
    const during = await record();
    const second = lastChangeIdSince(db);
    const third = lastChangeIdSince(db);
    release();
    expect(await first).toBe(before);
    expect(await second).toBe(during);
    expect(await third).toBe(during);
    expect(reads).toBe(2);
  });
});
