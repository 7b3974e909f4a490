import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { openPostgres, runMigrations } from '../../src/db/client.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseMode: 'postgres' | 'pglite';
    databaseAdminUrl: string;
    databaseTemplate: string;
  }
}

const defaultUrl = 'postgres://postgres@127.0.0.1:5432/test';

const reachable = async (url: string): Promise<boolean> => {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
};

/**
 * Tests run against real PostgreSQL when TEST_DATABASE_URL (or the local default) answers: one migrated
 * template database, copied per test file. Without a server they fall back to PGlite, unless
 * TEST_REQUIRE_POSTGRES forbids it (CI).
 */
export default async function setup(project: TestProject) {
  const url = process.env.TEST_DATABASE_URL ?? defaultUrl;
  const redacted = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  if (!(await reachable(url))) {
    if (process.env.TEST_REQUIRE_POSTGRES === '1') {
      throw new Error(`PostgreSQL at ${redacted} is not reachable and TEST_REQUIRE_POSTGRES=1 forbids the PGlite fallback`);
    }
    console.log(
      `[tests] PostgreSQL at ${redacted} is not reachable: falling back to embedded PGlite; the suites that need a server (several processes or connections at once, a network to cut) are skipped`,
    );
    project.provide('databaseMode', 'pglite');
    project.provide('databaseAdminUrl', '');
    project.provide('databaseTemplate', '');
    return;
  }
  const template = `las_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`drop database if exists ${template}`);
  await admin.query(`create database ${template}`);
  const templateUrl = new URL(url);
  templateUrl.pathname = `/${template}`;
  const handle = openPostgres(templateUrl.toString(), { max: 1 });
  await runMigrations(handle);
  await handle.close();
  console.log(`[tests] using PostgreSQL at ${redacted} (template database ${template})`);
  project.provide('databaseMode', 'postgres');
  project.provide('databaseAdminUrl', url);
  project.provide('databaseTemplate', template);

  return async () => {
    // Test files drop their own databases; sweep any that a crashed worker left behind.
    const leftovers = await admin.query<{ datname: string }>(
      `select datname from pg_database where datname like 'las_t_${process.pid}_%' or datname = $1`,
      [template],
    );
    for (const { datname } of leftovers.rows) {
      await admin.query(`drop database if exists ${datname} with (force)`).catch(() => {});
    }
    await admin.end();
  };
}
