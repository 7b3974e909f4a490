import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { openPglite, openPostgres, runMigrations, type DatabaseHandle } from '../../src/db/client.js';

export type TestDatabase = DatabaseHandle & { url: string | undefined; drop(): Promise<void> };

const withAdmin = async <T>(fn: (client: pg.Client) => Promise<T>): Promise<T> => {
  const client = new pg.Client({ connectionString: inject('databaseAdminUrl') });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
};

/**
 * False on the PGlite fallback (no PostgreSQL server reachable). Suites that need a server (several
 * processes on one database, several connections with transactions open at once, a network between the
 * service and its database to cut) run only against one; CI always has one (TEST_REQUIRE_POSTGRES).
 */
export const hasPostgresServer = (): boolean => inject('databaseMode') === 'postgres';

/**
 * A fresh, migrated database of its own for a test file: a copy of the migrated template on
 * PostgreSQL, or an in-memory PGlite when the run fell back to it.
 */
export const createTestDatabase = async (): Promise<TestDatabase> => {
  if (inject('databaseMode') === 'pglite') {
    const handle = await openPglite(undefined);
    await runMigrations(handle);
    return { ...handle, url: undefined, drop: () => handle.close() };
  }
  const template = inject('databaseTemplate');
  const parentPid = template.replace('las_template_', '');
  const name = `las_t_${parentPid}_${randomBytes(4).toString('hex')}`;
  await withAdmin(async (client) => {
    // Two workers copying the template at the same instant collide ("being accessed by other users"): retry.
    for (let attempt = 0; ; attempt += 1) {
      try {
        await client.query(`create database ${name} template ${template}`);
        return;
      } catch (error) {
        if (attempt >= 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 150));
      }
    }
  });
  const url = new URL(inject('databaseAdminUrl'));
  url.pathname = `/${name}`;
  const handle = openPostgres(url.toString());
  return {
    ...handle,
    url: url.toString(),
    async drop() {
      await handle.close();
      await withAdmin((client) => client.query(`drop database if exists ${name} with (force)`));
    },
  };
};
