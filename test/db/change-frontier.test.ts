import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges } from '../../db/schema.js';
import { lastChangeId, settledChangeId } from '../../src/db/change-frontier.js';
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

  it('answers an id a transaction held open past the wait kept unproved, once that transaction has ended, while a later one is open', async () => {
    await holdEarlierId();
    const seen = await record();
    // Held open past the wait: not proved by this call.
    expect(await settledChangeId(database.db)).toBeLessThan(seen);
    await other.query('commit');
    // Every id up to `seen` is now committed; a transaction that took its id later stays open.
    const later = new pg.Client({ connectionString: database.url });
    await later.connect();
    try {
      await later.query('begin');
      await later.query(`insert into access_changes (observed_at, kind, source, user_id) values (now(), 'user.created', 'webhook', 'later')`);
      await record();
      expect(await settledChangeId(database.db)).toBe(seen);
    } finally {
      await later.query('rollback');
      await later.end();
    }
  });
});

/** `lastChangeId` counts what a reconcile's skip must not miss: a change whose transaction has not committed yet. */
describe.runIf(hasPostgresServer())('lastChangeId', () => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  it('answers the id of a change still being recorded, and of the last one committed', async () => {
    const committed = (await database.db.insert(accessChanges).values(change).returning({ id: accessChanges.id }))[0]!.id;
    expect(await lastChangeId(database.db)).toBe(committed);
    const writer = new pg.Client({ connectionString: database.url });
    await writer.connect();
    try {
      await writer.query('begin');
      const { rows: inserted } = await writer.query<{ id: string }>(
        `insert into access_changes (kind, source, observed_at, user_id) values ('user.created', 'webhook', now(), 'settling') returning id`,
      );
      expect(await lastChangeId(database.db)).toBe(Number(inserted[0]!.id));
      await writer.query('rollback');
    } finally {
      await writer.end();
    }
  });
});
