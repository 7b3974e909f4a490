import type { SQL } from 'drizzle-orm';
import { NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres';
import type { Duplex } from 'node:stream';
import pg from 'pg';
import type { Database } from './client.js';
import { namedRows } from './prepared.js';

/**
 * Runs the transaction's final statement: on a pipelining connection its COMMIT is sent right behind it,
 * so both cost one round trip. Nothing may be sent in the transaction after it.
 */
export type LastStatement = <R>(query: SQL) => Promise<R[]>;

type SessionInternals = { client: unknown; dialect: unknown; schema: unknown; options: unknown };
type QueryFn = (...args: unknown[]) => Promise<unknown>;

/** Whether `db` queries a pool opened with `pipeline` (see `openPostgres`): its clients send statements without waiting for earlier answers. */
const pipelinedPool = (db: Database): pg.Pool | null => {
  const client = (db as { $client?: unknown }).$client;
  return client instanceof pg.Pool && (client.options as { pipeline?: boolean }).pipeline === true ? client : null;
};

/**
 * A transaction that starts with `opening` (settings, entity locks) and whose statements cost as few round
 * trips as the logic allows. On a pipelining pool BEGIN, `opening` and the first statement of `fn` go out
 * together, and `last` sends COMMIT behind the final statement: an apply of one read and one write is two
 * round trips instead of five. Under load each round trip waits for a turn of a busy event loop (30-60 ms
 * each at 1,000 webhook arrivals a second), and they were most of a delivery's time to be visible.
 * Anywhere else (PGlite, a pool without pipelining, a transaction already open) it is drizzle's own
 * transaction, each statement awaited in turn; the statements and their order are the same.
 */
export const transaction = async <T>(
  db: Database,
  opening: SQL | null,
  fn: (tx: Database, last: LastStatement) => Promise<T>,
): Promise<T> => {
  const pool = pipelinedPool(db);
  if (!pool) {
    return db.transaction(async (tx) => {
      if (opening) await namedRows(tx, opening);
      return fn(tx as unknown as Database, (query) => namedRows(tx as unknown as Database, query));
    });
  }
  const client = await pool.connect();
  // Statements sent on the client through `tx`, counted so that an order this function relies on is
  // checked rather than assumed; none is accepted once COMMIT (or ROLLBACK) has been sent.
  let sent = 0;
  let ended = false;
  // BEGIN, the opening and fn's first statement leave in one write, as do the last statement and COMMIT:
  // held in the corked socket until the statement that ends each group is sent. A write is a system call
  // and, on a busy loop, a turn of its own; five per delivery became two.
  const socket = (client as unknown as { connection: { stream: Duplex } }).connection.stream;
  let corked = false;
  // Set once the opening is out: fn's first statement ends the first group.
  let releaseAfterNext = false;
  const uncork = () => {
    if (!corked) return;
    corked = false;
    socket.uncork();
  };
  const cork = () => {
    if (corked) return;
    corked = true;
    socket.cork();
  };
  const send: QueryFn = (...args) => {
    if (ended) return Promise.reject(new Error('a statement was sent after its transaction ended'));
    sent += 1;
    const result = (client.query as unknown as QueryFn)(...args);
    if (releaseAfterNext) {
      releaseAfterNext = false;
      uncork();
    }
    return result;
  };
  const base = (db as unknown as { session: SessionInternals }).session;
  const session = new NodePgSession({ query: send } as never, base.dialect as never, base.schema as never, base.options as never);
  const tx = new NodePgTransaction(base.dialect as never, session, base.schema as never) as unknown as Database;

  const observed = <R>(promise: Promise<R>) => {
    promise.catch(() => {});
    return promise;
  };
  cork();
  // Whatever fn does before its first statement, nothing stays held past this turn of the event loop.
  const released = setImmediate(uncork);
  const begin = observed(client.query('begin'));
  const opened = opening ? observed(namedRows(tx, opening)) : null;
  // fn's statements must follow the opening's on the wire (its locks first); drizzle sends a statement
  // in the call that makes it, and when it does not, fn waits for the opening instead.
  if (opened && sent === 0) {
    uncork();
    await opened;
  } else releaseAfterNext = true;
  let committing: Promise<pg.QueryResult> | null = null;
  const last: LastStatement = async (query) => {
    const before = sent;
    releaseAfterNext = false;
    cork();
    const result = namedRows<never>(tx, query);
    if (sent === before + 1 && !ended) {
      ended = true;
      committing = observed(client.query('commit'));
    }
    uncork();
    return result;
  };
  let broken: Error | undefined;
  try {
    const value = await fn(tx, last);
    await begin;
    await opened;
    if (committing) {
      // The final statement's failure turns COMMIT into ROLLBACK without an error: fn must not have hidden it.
      const result = await (committing as Promise<pg.QueryResult>);
      if (result.command !== 'COMMIT') throw new Error(`the transaction was not committed (${result.command})`);
    } else {
      ended = true;
      await client.query('commit');
    }
    return value;
  } catch (error) {
    // Once COMMIT is on its way, what fails after it cannot undo the transaction: it committed, or the
    // failure it follows made it a rollback.
    if (committing) await (committing as Promise<pg.QueryResult>).catch(() => {});
    else {
      ended = true;
      await client.query('rollback').catch((rollbackError: unknown) => {
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      });
    }
    // The earliest failure is the cause: the statements behind it failed only because the transaction was aborted.
    throw (await firstFailure([begin, opened])) ?? error;
  } finally {
    clearImmediate(released);
    uncork();
    client.release(broken);
  }
};

const firstFailure = async (steps: (Promise<unknown> | null)[]): Promise<unknown> => {
  for (const step of steps) {
    if (!step) continue;
    const failure = await step.then(
      () => undefined,
      (error: unknown) => error ?? new Error('a statement failed'),
    );
    if (failure !== undefined) return failure;
  }
  return undefined;
};
