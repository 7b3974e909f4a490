import pg from 'pg';
import { loadDatabaseConfig } from '../src/config.js';
import { openDatabase, runMigrations, type DatabaseHandle } from '../src/db/client.js';

export const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A new, migrated PostgreSQL database `name` (dropped first if a previous run left it), and its `drop`. */
export const freshPostgres = async (name: string, options: { keep?: boolean } = {}): Promise<DatabaseHandle & { drop(): Promise<void> }> => {
  if (!options.keep) {
    const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
    await admin.connect();
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.query(`create database ${name}`);
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  // The service's query timeout (DATABASE_QUERY_TIMEOUT_MS, its default unless set), so that a statement a
  // large tenant makes too slow for production fails here too.
  const database = await openDatabase({ url: url.toString(), dataDir: '', queryTimeoutMs: loadDatabaseConfig().queryTimeoutMs });
  await runMigrations(database);
  return {
    ...database,
    async drop() {
      await database.close();
      const again = new pg.Client({ connectionString: adminUrl });
      await again.connect();
      await again.query(`drop database if exists ${name} with (force)`);
      await again.end();
    },
  };
};
