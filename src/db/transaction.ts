import { sql } from 'drizzle-orm';
import { NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import type { Database } from './client.js';

/** What a pool's drizzle session holds (its fields are private to drizzle's types). */
type PoolSession = {
  client: pg.Pool;
  dialect: ConstructorParameters<typeof NodePgTransaction>[0];
  schema: ConstructorParameters<typeof NodePgTransaction>[2];
  options: ConstructorParameters<typeof NodePgSession>[3];
};

/**
 * `db.transaction(fn)` whose transaction-local settings (`settings`: a statement without parameters,
 * such as `select set_config(…, true)`) go in the same round trip as its `begin`, as one simple query,
 * instead of a statement of their own. A crawl runs a transaction per page, and on a small machine a
 * round trip costs both processes more than the settings themselves. Otherwise as drizzle's own
 * node-postgres transaction (commit, or rollback and rethrow; the connection back to the pool). Inside a
 * transaction already, or on PGlite, it is drizzle's transaction followed by the settings.
 */
export const transactionWithSettings = async <T>(db: Database, settings: string, fn: (tx: Database) => Promise<T>): Promise<T> => {
  const session = (db as unknown as { session: unknown }).session;
  if (!(session instanceof NodePgSession) || !((session as unknown as PoolSession).client instanceof pg.Pool)) {
    return db.transaction(async (tx) => {
      await tx.execute(sql.raw(settings));
      return fn(tx as unknown as Database);
    });
  }
  const pool = session as unknown as PoolSession;
  const client = await pool.client.connect();
  const tx = new NodePgTransaction(pool.dialect, new NodePgSession(client, pool.dialect, pool.schema, pool.options), pool.schema);
  try {
    // No parameters: sent as a simple query, which may hold several statements.
    await tx.execute(sql.raw(`begin; ${settings}`));
    try {
      const result = await fn(tx as unknown as Database);
      await tx.execute(sql`commit`);
      return result;
    } catch (error) {
      await tx.execute(sql`rollback`);
      throw error;
    }
  } finally {
    client.release();
  }
};
