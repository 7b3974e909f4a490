import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { rows } from '../../src/db/client.js';
import { baselineConnections, loadedStatistics, openBaselineDatabase, startFullSync } from '../../src/jobs/full-sync-runner.js';
import { lockKey } from '../../src/jobs/lock.js';
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

  it.skipIf(!hasPostgresServer())("opens a baseline process's database on fewer connections than the service's pool (each new backend faults in the shared buffers it touches)", async () => {
    const handle = await openBaselineDatabase({ url: database.url, dataDir: '' });
    try {
      // More statements at once than the service's pool of 10 has connections: each backend answers with its pid.
      const answers = await Promise.all(
        Array.from({ length: 12 }, () => rows<{ pid: number }>(handle.db, sql`select pg_backend_pid() as pid, pg_sleep(0.05)`)),
      );
      expect(new Set(answers.map(([answer]) => answer!.pid)).size).toBe(baselineConnections);
      expect(baselineConnections).toBeLessThan(10);
    } finally {
      await handle.close();
    }
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

  it.skipIf(!hasPostgresServer())("tells a start refused by another replica that replica's run while it still analyzes what it loaded", async () => {
    // The other replica: this module loaded afresh (its own in-process state) on connections of its own.
    vi.resetModules();
    const replica = await import('../../src/jobs/full-sync-runner.js');
    const replicaDatabase = database.separatePool(2);
    // ANALYZE waits for this lock, so the running baseline stays in its analyze, holding the full-sync lock.
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    let running: Awaited<ReturnType<typeof startFullSync>> | undefined;
    try {
      await blocker.query('begin');
      await blocker.query('lock table organization_members in share update exclusive mode');
      running = await startFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
      const analyzeWaiting = async () =>
        (await blocker.query<{ n: number }>(`select count(*)::int as n from pg_locks where relation = 'organization_members'::regclass and not granted`)).rows[0]!.n;
      while ((await analyzeWaiting()) === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      const refused = await replica.startFullSync(syncDepsFor(replicaDatabase, clientFor(sim)), { kind: 'reconcile', trigger: 'test' }).catch((error: unknown) => error);
      expect(refused).toMatchObject({ status: 409, code: 'reconcile_running', details: { runId: running.runId } });
    } finally {
      await blocker.query('rollback');
      await blocker.end();
      if (running) expect((await running.done).run.status).toBe('succeeded');
      await replicaDatabase.close();
    }
  });

  it.skipIf(!hasPostgresServer())('starts after all when the replica that refused it had already finished its run and was releasing the lock', async () => {
    // Another replica between its run's final update and its unlock: the lock held, its run succeeded before this start looked.
    const holder = new pg.Client({ connectionString: database.url });
    await holder.connect();
    let started: Awaited<ReturnType<typeof startFullSync>> | undefined;
    try {
      await holder.query(`insert into sync_runs (kind, trigger, status, finished_at) values ('reconcile', 'test', 'succeeded', now())`);
      await holder.query('select pg_advisory_lock($1::bigint)', [lockKey('full-sync').toString()]);
      const starting = startFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'reconcile', trigger: 'test' });
      // Refused: it looks in sync_runs for the run the lock is held for (each look's text stays in pg_stat_activity while its connection idles).
      const looking = async () =>
        (await holder.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid() and query like '%from "sync_runs"%desc limit%'`)).rows[0]!.n;
      while ((await looking()) === 0) await new Promise((resolve) => setTimeout(resolve, 2));
      const runningRuns = await holder.query(`select id from sync_runs where status = 'running'`);
      expect(runningRuns.rows).toEqual([]);
      await holder.query('select pg_advisory_unlock_all()');
      started = await starting;
      const [run] = await rows<{ id: number; trigger: string }>(database.db, sql`select id::int, trigger from sync_runs order by id desc limit 1`);
      expect(run).toEqual({ id: started.runId, trigger: 'test' });
      expect((await started.done).run.status).toBe('succeeded');
    } finally {
      await holder.query('select pg_advisory_unlock_all()').catch(() => {});
      await holder.end();
      if (started) await started.done.catch(() => {});
    }
  });

  it.skipIf(!hasPostgresServer())("tells a start refused by another replica that replica's run's id, even when the run started and ended before the refused start saw it", async () => {
    // Another replica: one session holds the lock, another writes its run while the refused start's look at sync_runs waits.
    const holder = new pg.Client({ connectionString: database.url });
    const writer = new pg.Client({ connectionString: database.url });
    await holder.connect();
    await writer.connect();
    try {
      await holder.query('select pg_advisory_lock($1::bigint)', [lockKey('full-sync').toString()]);
      await writer.query('begin');
      await writer.query('lock table sync_runs in access exclusive mode');
      const refused = startFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'reconcile', trigger: 'test' }).catch((error: unknown) => error);
      const waiting = async () =>
        (await holder.query<{ n: number }>(`select count(*)::int as n from pg_locks where relation = 'sync_runs'::regclass and not granted`)).rows[0]!.n;
      while ((await waiting()) === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      const { rows: inserted } = await writer.query<{ id: string }>(`insert into sync_runs (kind, trigger) values ('reconcile', 'test') returning id`);
      await writer.query(`update sync_runs set status = 'succeeded', finished_at = now() where id = $1`, [inserted[0]!.id]);
      await writer.query('commit');
      expect(await refused).toMatchObject({ status: 409, code: 'reconcile_running', details: { runId: Number(inserted[0]!.id) } });
    } finally {
      await writer.query('rollback').catch(() => {});
      await holder.query('select pg_advisory_unlock_all()');
      await writer.end();
      await holder.end();
    }
  });
  it.skipIf(!hasPostgresServer())("summarizes the change log's BRIN ranges filled so far once the users list is loaded, leaving the end only those filled since", async () => {
    // More change rows than one 128-page range holds, past the ranges the earlier baselines' ANALYZE summarized.
    await database.db.execute(sql`insert into access_changes (observed_at, kind, source, actor, user_id, details)
      select now(), 'user.created', 'baseline', 'test:brin', 'brin-' || n, jsonb_build_object('filler', repeat('x', 200)) from generate_series(1, 20000) n`);
    try {
      await loadedStatistics(syncDepsFor(database, clientFor(sim)), 'baseline').onLoaded?.('users');
      const [left] = await rows<{ summarized: number }>(database.db, sql`select brin_summarize_new_values('access_changes_at_idx'::regclass)::int as summarized`);
      expect(left?.summarized).toBe(0);
    } finally {
      await database.db.execute(sql`delete from access_changes where actor = 'test:brin'`);
    }
  });
});
