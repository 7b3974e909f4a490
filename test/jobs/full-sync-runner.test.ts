import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows } from '../../src/db/client.js';
import { startFullSync } from '../../src/jobs/full-sync-runner.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

const accessTables = ['access_changes', 'organization_member_roles', 'organization_members', 'organization_roles', 'organizations', 'users'];

const lastAnalyzed = async (database: TestDatabase) =>
  rows<{ relname: string; analyzed: boolean }>(
    database.db,
    sql`select relname, last_analyze is not null as analyzed from pg_stat_user_tables
        where relname in (${sql.join(accessTables.map((name) => sql`${name}`), sql`, `)}) order by relname`,
  );

describe('the full sync runner', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 33, generate: { users: 40, organizations: 6, organizationRoles: 3 } });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  it('analyzes the tables a baseline loaded, so the first queries are planned with real statistics', async () => {
    expect((await lastAnalyzed(database)).filter((table) => table.analyzed)).toEqual([]);
    const started = await startFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
    expect((await started.done).run.status).toBe('succeeded');
    expect(await lastAnalyzed(database)).toEqual(accessTables.map((relname) => ({ relname, analyzed: true })));
    const [members] = await rows<{ reltuples: number }>(
      database.db,
      sql`select reltuples::int as reltuples from pg_class where relname = 'organization_members'`,
    );
    expect(members?.reltuples).toBe(sim.state.counts().memberships);
    const [stored] = await rows<{ reltuples: number }>(database.db, sql`select reltuples::int as reltuples from pg_class where relname = 'users'`);
    expect(stored?.reltuples).toBe(sim.state.counts().users);
    // Statistics for the columns statements filter on; none for the JSON that is only read back.
    const analyzedColumns = await rows<{ attname: string }>(database.db, sql`select attname from pg_stats where tablename = 'users' order by attname`);
    expect(analyzedColumns.map((column) => column.attname)).toEqual(expect.arrayContaining(['id', 'is_suspended', 'primary_email', 'updated_at', 'username']));
    expect(analyzedColumns.map((column) => column.attname).filter((name) => ['raw', 'custom_data', 'profile', 'avatar'].includes(name))).toEqual([]);
  });

  it.skipIf(!hasPostgresServer())("tells a start refused while this process runs another that run's id, even when it looks only after the run ended", async () => {
    // The refused start reads the database through a pool whose one connection stays busy until the run has ended,
    // as a start scheduled late on a loaded machine would.
    const late = database.separatePool(1);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const busy = late.withSession(() => released);
    try {
      const running = await startFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'reconcile', trigger: 'test' });
      const refused = startFullSync(syncDepsFor(late, clientFor(sim)), { kind: 'reconcile', trigger: 'test' }).catch((error: unknown) => error);
      expect((await running.done).run.status).toBe('succeeded');
      release();
      expect(await refused).toMatchObject({ status: 409, code: 'reconcile_running', details: { runId: running.runId } });
    } finally {
      release();
      await busy;
      await late.close();
    }
  });
});
