import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { sql, type SQL } from 'drizzle-orm';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import pg from 'pg';
import * as schema from '../../db/schema.js';

export type Schema = typeof schema;
/** A database or a transaction: every query function accepts either. */
export type Database = PgDatabase<PgQueryResultHKT, Schema>;
export type Transaction = PgTransaction<PgQueryResultHKT, Schema>;

export type DatabaseHandle = {
  db: Database;
  driver: 'postgres' | 'pglite';
  /**
   * Runs `fn` on one dedicated connection (session-level state such as advisory locks lives there).
   * `untimed`: a connection of its own without the query timeout, for statements that may rightly take
   * long (migrations, waiting for another replica's migrations).
   */
  withSession<T>(fn: (session: Database) => Promise<T>, options?: { untimed?: boolean }): Promise<T>;
  /**
   * Calls `onNotify` for each NOTIFY on `channel`, on a connection of its own that is re-opened when lost
   * (`onReconnect` then runs, since notifications sent meanwhile are gone). Resolves to an unlisten function.
   */
  listen(channel: string, onNotify: (payload: string) => void, onReconnect?: () => void): Promise<() => Promise<void>>;
  /**
   * The same database through `max` connections of its own (closed by the returned handle's `close`), for
   * work that must not wait in this pool's queue behind other work. PGlite, one connection, shares itself.
   * `pipeline`: its connections send a statement without waiting for the answers to earlier ones, which
   * `transaction` (src/db/transaction.ts) uses to send several at once.
   */
  separatePool(max: number, options?: { pipeline?: boolean }): DatabaseHandle;
  close(): Promise<void>;
};

/** Finds db/migrations upward from this module, so it works from src/ (tsx) and dist/src/ (built) alike. */
export const migrationsFolder = (): string => {
  let directory = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 6; depth += 1) {
    const candidate = join(directory, 'db', 'migrations');
    if (existsSync(join(candidate, 'meta', '_journal.json'))) return candidate;
    directory = dirname(directory);
  }
  throw new Error('db/migrations was not found next to the application');
};

/**
 * `queryTimeoutMs` (the service's DATABASE_QUERY_TIMEOUT_MS; none when absent) is what turns a network
 * partition (connections open, nothing answering, until TCP gives up a quarter of an hour later) into
 * an error the HTTP edge answers with 503 instead of a hang.
 */
export const openPostgres = (url: string, options: { max?: number; queryTimeoutMs?: number; pipeline?: boolean } = {}): DatabaseHandle => {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: 5000,
    ...(options.pipeline ? { pipeline: true } : {}),
    ...(options.queryTimeoutMs === undefined ? {} : { query_timeout: options.queryTimeoutMs }),
  });
  // A client losing its server must not crash the process, whether it sits idle in the pool ('error' on
  // the pool) or is checked out between queries (a lock session, a transaction: 'error' on the client).
  // The query that uses it next reports the error, and the pool drops a client that is no longer queryable.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
    closeOnQueryTimeout(client);
  });
  const db = drizzlePg(pool, { schema }) as unknown as Database;
  return {
    db,
    driver: 'postgres',
    async withSession(fn, sessionOptions) {
      const untimed = sessionOptions?.untimed ? new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 }) : null;
      untimed?.on('error', () => {});
      await untimed?.connect();
      const client = untimed ?? (await pool.connect());
      try {
        return await fn(drizzlePg(client, { schema }) as unknown as Database);
      } finally {
        if (untimed) await untimed.end().catch(() => {});
        else (client as pg.PoolClient).release();
      }
    },
    listen: (channel, onNotify, onReconnect) => listenPostgres(url, channel, onNotify, onReconnect),
    separatePool: (max, poolOptions) => openPostgres(url, { ...options, max, pipeline: poolOptions?.pipeline ?? false }),
    close: () => pool.end(),
  };
};

/**
 * pg fails a query unanswered past `query_timeout` but keeps its connection, with the query (and the
 * transaction it was part of, whose ROLLBACK times out behind it) still open on the server. Were that
 * connection handed out again once a partition heals, the next statements would run inside the dead
 * transaction, answer success and vanish with it. Ending the client closes the connection (pg destroys
 * the socket under a hung query) and makes the pool drop it. `pool.query` already does so by itself;
 * this covers checked-out clients (transactions, sessions), which drizzle queries in the promise form.
 */
const closeOnQueryTimeout = (client: pg.PoolClient): void => {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  let closed = false;
  (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args) => {
    // What follows on this client (the transaction's ROLLBACK) fails as the outage it is, not as a closed client.
    if (closed && typeof args.at(-1) !== 'function') return Promise.reject(new Error('Connection closed after a query read timeout'));
    const result = query(...args);
    if (result instanceof Promise) {
      result.catch((error: unknown) => {
        if (closed || !(error instanceof Error) || !/query read timeout/i.test(error.message)) return;
        closed = true;
        void client.end().catch(() => {});
      });
    }
    return result;
  };
};

const listenPostgres = async (
  url: string,
  channel: string,
  onNotify: (payload: string) => void,
  onReconnect?: () => void,
): Promise<() => Promise<void>> => {
  let stopped = false;
  let client: pg.Client | null = null;
  let retry: NodeJS.Timeout | null = null;
  const connect = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, keepAlive: true });
    const lost = () => {
      if (client !== next) return;
      client = null;
      next.end().catch(() => {});
      schedule();
    };
    next.on('error', lost);
    next.on('end', lost);
    next.on('notification', (message) => {
      if (message.channel === channel) onNotify(message.payload ?? '');
    });
    await next.connect();
    await next.query(`listen ${pg.escapeIdentifier(channel)}`);
    if (stopped) {
      await next.end().catch(() => {});
      return;
    }
    client = next;
  };
  const schedule = () => {
    if (stopped || retry) return;
    retry = setTimeout(() => {
      retry = null;
      connect().then(
        () => onReconnect?.(),
        () => schedule(),
      );
    }, 1000);
    retry.unref();
  };
  await connect();
  return async () => {
    stopped = true;
    if (retry) clearTimeout(retry);
    const current = client;
    client = null;
    await current?.end().catch(() => {});
  };
};

export const openPglite = async (dataDir: string | undefined): Promise<DatabaseHandle> => {
  if (dataDir) mkdirSync(resolve(dataDir), { recursive: true });
  const client = dataDir ? new PGlite(resolve(dataDir)) : new PGlite();
  await client.waitReady;
  const db = drizzlePglite(client, { schema }) as unknown as Database;
  const handle: DatabaseHandle = {
    db,
    driver: 'pglite',
    // PGlite is one connection: the whole database is the session.
    withSession: (fn) => fn(db),
    listen: async (channel, onNotify) => {
      const unlisten = await client.listen(channel, onNotify);
      return () => unlisten();
    },
    separatePool: () => ({ ...handle, close: async () => {} }),
    close: () => client.close(),
  };
  return handle;
};

/**
 * Real PostgreSQL when a URL is given, otherwise the embedded PGlite database under `dataDir/pglite`.
 * `max`: the pool's connections (10 unless given); PGlite is one connection whatever it says.
 */
export const openDatabase = async (options: {
  url?: string | undefined;
  dataDir: string;
  queryTimeoutMs?: number | undefined;
  max?: number | undefined;
}): Promise<DatabaseHandle> =>
  options.url
    ? openPostgres(options.url, {
        ...(options.queryTimeoutMs === undefined ? {} : { queryTimeoutMs: options.queryTimeoutMs }),
        ...(options.max === undefined ? {} : { max: options.max }),
      })
    : openPglite(join(options.dataDir, 'pglite'));

export const runMigrations = async (handle: DatabaseHandle): Promise<void> => {
  const config = { migrationsFolder: migrationsFolder(), migrationsSchema: 'drizzle' };
  if (handle.driver === 'postgres') {
    // Serialise concurrent starts of several replicas. Untimed: a migration, or the wait for another
    // replica's, may rightly take longer than any query the service makes.
    await handle.withSession(async (session) => {
      await session.execute(sql`select pg_advisory_lock(7204153)`);
      try {
        await migratePg(session as never, config);
      } finally {
        await session.execute(sql`select pg_advisory_unlock(7204153)`);
      }
    }, { untimed: true });
  } else {
    await migratePglite(handle.db as never, config);
  }
};

/** Rows of a raw query, whichever driver ran it. */
export const rows = async <T>(db: Database, query: SQL): Promise<T[]> => {
  const result = (await db.execute(query)) as unknown as { rows: T[] };
  return result.rows;
};

/** True when every migration shipped with this build has been applied. */
export const migrationsApplied = async (db: Database): Promise<boolean> => {
  const { readFileSync } = await import('node:fs');
  const journal = JSON.parse(readFileSync(join(migrationsFolder(), 'meta', '_journal.json'), 'utf8')) as {
    entries: unknown[];
  };
  try {
    const [row] = await rows<{ count: number }>(db, sql`select count(*)::int as count from drizzle.__drizzle_migrations`);
    return (row?.count ?? 0) >= journal.entries.length;
  } catch {
    return false;
  }
};

/** Network errors and PostgreSQL's connection-class and shutdown SQLSTATEs: the database is away, not the query wrong. */
const unavailableCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', '57P01', '57P02', '57P03', '53300']);
const unavailableMessages = /connection terminated|timeout exceeded when trying to connect|connection error|query read timeout/i;

/** Whether `error` or one of the errors it wraps (`cause`, at most five deep: drizzle wraps the driver's) meets `test`. */
const anyInCauseChain = (error: unknown, test: (candidate: { code?: unknown; message?: unknown }) => boolean): boolean => {
  for (let current = error, depth = 0; current && typeof current === 'object' && depth < 5; depth += 1) {
    if (test(current as { code?: unknown; message?: unknown })) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
};

/**
 * True when `error` (or what it wraps) says the database cannot be reached right now, as opposed to a
 * query that failed on its own: the HTTP edge answers 503 with Retry-After for these, not 500.
 */
export const isDatabaseUnavailable = (error: unknown): boolean =>
  anyInCauseChain(
    error,
    ({ code, message }) =>
      (typeof code === 'string' && (unavailableCodes.has(code) || code.startsWith('08'))) || (typeof message === 'string' && unavailableMessages.test(message)),
  );

/** True when `error` (or what it wraps) is PostgreSQL's unique_violation (SQLSTATE 23505). */
export const isUniqueViolation = (error: unknown): boolean => anyInCauseChain(error, ({ code }) => code === '23505');
