import { eq, like, sql } from 'drizzle-orm';
import type { Socket } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { syncState } from '../../db/schema.js';
import { rows, type DatabaseHandle } from '../../src/db/client.js';
import { transaction } from '../../src/db/transaction.js';
import { entityLocks } from '../../src/sync/apply/entity-locks.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';

const put = (key: string) => sql`insert into sync_state (key, value) values (${key}, '{}'::jsonb) returning key`;

/**
 * `transaction` on a pipelining pool (the inbox worker's) and on the plain path (the shared pool, PGlite):
 * whatever goes out together, a transaction commits all of its statements or none, and a failure is
 * reported as itself.
 */
describe.each([
  { pipeline: true, name: 'a pipelining pool' },
  { pipeline: false, name: 'a pool without pipelining' },
])('transaction on $name', ({ pipeline }) => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  const keys = async () =>
    (await database.db.select({ key: syncState.key }).from(syncState).where(like(syncState.key, 'tx-%'))).map((row) => row.key).sort();

  beforeAll(async () => {
    database = await createTestDatabase();
    handle = database.separatePool(3, { pipeline });
  });
  afterAll(async () => {
    await handle?.close();
    await database?.drop();
  });
  beforeEach(async () => {
    await database.db.delete(syncState).where(like(syncState.key, 'tx-%'));
  });

  it('commits the opening, the statements and the last one, and returns what fn returns', async () => {
    const value = await transaction(handle.db, put('tx-opening'), async (tx, last) => {
      await tx.execute(put('tx-middle'));
      const [row] = await last<{ key: string }>(put('tx-last'));
      return row!.key;
    });
    expect(value).toBe('tx-last');
    expect(await keys()).toEqual(['tx-last', 'tx-middle', 'tx-opening']);
  });

  it('commits nothing when the last statement fails, and reports its error', async () => {
    await database.db.insert(syncState).values({ key: 'tx-taken', value: {} });
    const failed = await transaction(handle.db, put('tx-opening'), async (tx, last) => {
      await tx.execute(put('tx-middle'));
      await last(put('tx-taken'));
    }).catch((error: unknown) => error);
    expect(String((failed as { cause?: unknown }).cause ?? failed)).toMatch(/duplicate key/);
    expect(await keys()).toEqual(['tx-taken']);
  });

  it('commits nothing when fn hides the failure of its last statement', async () => {
    await database.db.insert(syncState).values({ key: 'tx-taken', value: {} });
    const failed = await transaction(handle.db, null, async (tx, last) => {
      await tx.execute(put('tx-first'));
      await last(put('tx-taken')).catch(() => {});
      return 'fine';
    }).catch((error: unknown) => error);
    // The pipelined COMMIT came back as ROLLBACK, and says so (drizzle's own transaction says nothing).
    if (pipeline && handle.driver === 'postgres') expect(String(failed)).toMatch(/not committed \(ROLLBACK\)/);
    expect(await keys()).toEqual(['tx-taken']);
  });

  it('rolls back when fn throws, and the connection serves the next transaction', async () => {
    const failed = await transaction(handle.db, put('tx-opening'), async (tx) => {
      await tx.execute(put('tx-middle'));
      throw new Error('fn failed');
    }).catch((error: unknown) => error);
    expect((failed as Error).message).toBe('fn failed');
    expect(await keys()).toEqual([]);
    await transaction(handle.db, null, (tx) => tx.execute(put('tx-after')));
    expect(await keys()).toEqual(['tx-after']);
  });

  it('reports a failed opening as the cause, not the aborted statements behind it', async () => {
    const failed = await transaction(handle.db, sql`select no_such_column from sync_state`, async (tx, last) => {
      await tx.execute(put('tx-middle'));
      await last(put('tx-last'));
    }).catch((error: unknown) => error);
    expect(String((failed as { cause?: unknown }).cause ?? failed)).toMatch(/no_such_column/);
    expect(await keys()).toEqual([]);
  });

  it('refuses a statement sent after the last one', async () => {
    const attempt = transaction(handle.db, null, async (tx, last) => {
      await last(put('tx-last'));
      await tx.execute(put('tx-too-late'));
    });
    if (pipeline && handle.driver === 'postgres') {
      const failed = await attempt.catch((error: unknown) => error);
      expect(String((failed as { cause?: unknown }).cause ?? failed)).toMatch(/after its transaction ended/);
      // The last statement went out with its COMMIT: it stays committed.
      expect(await keys()).toEqual(['tx-last']);
    } else {
      // Without pipelining COMMIT is sent after fn: a later statement is simply part of the transaction.
      await attempt;
      expect(await keys()).toEqual(['tx-last', 'tx-too-late']);
    }
  });
});

describe.skipIf(!hasPostgresServer())('transaction on a pipelining pool, against the server', () => {
  let database: TestDatabase;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    database = await createTestDatabase();
    handle = database.separatePool(3, { pipeline: true });
  });
  afterAll(async () => {
    await handle?.close();
    await database?.drop();
  });

  /** The socket of the pool's one connection: warmed to it, so that the transaction under test runs on it. */
  const onlyConnectionSocket = async (): Promise<Socket> => {
    const pool = (handle.db as unknown as { $client: pg.Pool }).$client;
    const client = await pool.connect();
    client.release();
    expect(pool.totalCount).toBe(1);
    return (client as unknown as { connection: { stream: Socket } }).connection.stream;
  };

  it('sends BEGIN, the opening and the first statement before the first answer, and COMMIT with the last', async () => {
    // Watch the connection's socket: what is written, and when answers come.
    const socket = await onlyConnectionSocket();
    const events: { kind: 'write' | 'read'; text: string }[] = [];
    const write = socket.write;
    socket.write = ((chunk: Buffer | string, ...rest: unknown[]) => {
      events.push({ kind: 'write', text: Buffer.from(chunk).toString('latin1') });
      return (write as (...args: unknown[]) => boolean).call(socket, chunk, ...rest);
    }) as typeof socket.write;
    const onData = () => events.push({ kind: 'read', text: '' });
    socket.on('data', onData);
    try {
      await transaction(handle.db, entityLocks('user', ['pipelined']), async (tx, last) => {
        await tx.execute(sql`select 1 as one`);
        await last(put('tx-pipelined'));
      });
    } finally {
      socket.removeListener('data', onData);
      socket.write = write;
    }
    const firstRead = events.findIndex((event) => event.kind === 'read');
    const sentFirst = events.slice(0, firstRead).map((event) => event.text).join('');
    // BEGIN, the locks and the first statement, all out before any answer came back.
    expect(sentFirst).toMatch(/begin[\s\S]*pg_advisory_xact_lock[\s\S]*select 1 as one/);
    // The last statement and COMMIT out together: no answer read between them.
    const insert = events.findIndex((event) => event.text.includes('insert into sync_state'));
    const commit = events.findIndex((event) => event.text.includes('commit'));
    expect(insert).toBeGreaterThan(firstRead);
    expect(commit).toBeGreaterThan(insert);
    expect(events.slice(insert, commit).some((event) => event.kind === 'read')).toBe(false);
    await database.db.delete(syncState).where(eq(syncState.key, 'tx-pipelined'));
  });

  it('writes BEGIN, the opening and the first statement to the socket at once, and the last statement with COMMIT', async () => {
    // What reaches the socket's handle: one call is one write of the connection (a system call).
    const socket = (await onlyConnectionSocket()) as unknown as {
      _write: (chunk: Buffer, ...rest: unknown[]) => void;
      _writev: (chunks: { chunk: Buffer }[], ...rest: unknown[]) => void;
    };
    const writes: string[] = [];
    const { _write: write, _writev: writev } = socket;
    socket._write = function (this: unknown, chunk: Buffer, ...rest: unknown[]) {
      writes.push(Buffer.from(chunk).toString('latin1'));
      return write.call(this, chunk, ...rest);
    };
    socket._writev = function (this: unknown, chunks: { chunk: Buffer }[], ...rest: unknown[]) {
      writes.push(chunks.map(({ chunk }) => Buffer.from(chunk).toString('latin1')).join(''));
      return writev.call(this, chunks, ...rest);
    };
    try {
      await transaction(handle.db, entityLocks('user', ['corked']), async (tx, last) => {
        await tx.execute(sql`select 1 as one`);
        await last(put('tx-corked'));
      });
    } finally {
      Object.assign(socket, { _write: write, _writev: writev });
    }
    expect(writes).toHaveLength(2);
    // The opening and the insert are statements this connection prepared in the test before: only their
    // Bind and Execute go out, so the texts to find are BEGIN, the first statement and COMMIT.
    expect(writes[0]).toMatch(/begin[\s\S]*select 1 as one/);
    expect(writes[0]).not.toMatch(/commit/);
    expect(writes[1]).toMatch(/commit/);
    expect(await rows(database.db, sql`select key from sync_state where key = 'tx-corked'`)).toEqual([{ key: 'tx-corked' }]);
    await database.db.delete(syncState).where(eq(syncState.key, 'tx-corked'));
  });

  it('reads after its locks: a writer holding them commits first, and the read sees it', async () => {
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    let finish!: () => void;
    const release = new Promise<void>((resolve) => (finish = resolve));
    const first = transaction(handle.db, entityLocks('user', ['contended']), async (tx, last) => {
      // Answered after the locks: they are held from here on.
      await tx.execute(sql`select 1`);
      holding();
      await release;
      await last(put('tx-written-under-the-lock'));
    });
    await held;
    const second = transaction(handle.db, entityLocks('user', ['contended']), async (tx) =>
      rows<{ n: number }>(tx, sql`select count(*)::int as n from sync_state where key = 'tx-written-under-the-lock'`),
    );
    finish();
    await first;
    expect(await second).toEqual([{ n: 1 }]);
    await database.db.delete(syncState).where(eq(syncState.key, 'tx-written-under-the-lock'));
  });
});
