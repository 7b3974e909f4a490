import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { asc, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncRuns } from '../../db/schema.js';
import { openDatabase, type DatabaseHandle } from '../../src/db/client.js';
import { startFullSync } from '../../src/jobs/full-sync-runner.js';
import { abandonedRunReason, lockKey, withJobLock } from '../../src/jobs/lock.js';
import { roleSweepLockName } from '../../src/jobs/role-sweep-job.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor, tenantEnvironment } from '../helpers/tenant.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** The CLI's `sync` in a child process of its own, as `npm run dev:sync` runs it; resolves with its exit. */
const spawnCliSync = (env: Record<string, string>) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'sync'], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stderr })),
  );
  return { child, exited };
};

describe('runs left behind by a process that died', () => {
  let testDatabase: TestDatabase;
  let sim: SimulatedTenant;
  let dataDir: string | null = null;

  beforeAll(async () => {
    testDatabase = await createTestDatabase();
    sim = await startTenant({ seed: 21, generate: { users: 60, organizations: 12, organizationRoles: 3 } });
  });
  afterAll(async () => {
    await sim.close();
    await testDatabase.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('a sync killed mid-run is marked failed by the next sync, which succeeds', async () => {
    // The child needs a database it can reach: the test's PostgreSQL database, or PGlite files on disk.
    let database: DatabaseHandle = testDatabase;
    const target: Record<string, string> = {};
    if (testDatabase.url) target.DATABASE_URL = testDatabase.url;
    else target.DATA_DIR = dataDir = await mkdtemp(join(tmpdir(), 'las-lock-'));

    // Slow enough that the child is surely mid-crawl when it is killed.
    sim.faults.setLatency(150);
    sim.faults.resetStats();
    const { child, exited } = spawnCliSync({
      ...target,
      ...tenantEnvironment(sim),
    });
    // A cold tsx start on a loaded machine takes a while before the first request.
    for (let waited = 0; sim.stats().total < 4 && waited < 2400; waited += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(sim.stats().total).toBeGreaterThanOrEqual(4);
    child.kill('SIGKILL');
    const exit = await exited;
    expect(exit.signal).toBe('SIGKILL');
    sim.faults.setLatency(0);

    if (!testDatabase.url) database = await openDatabase({ url: undefined, dataDir: dataDir! });
    try {
      const [left] = await database.db.select().from(syncRuns);
      expect(left).toMatchObject({ kind: 'baseline', trigger: 'cli', status: 'running' });

      const logto = clientFor(sim);
      const next = await startFullSync(syncDepsFor(database, logto), { kind: 'baseline', trigger: 'test' });
      const result = await next.done;
      expect(result.run.status).toBe('succeeded');

      const runs = await database.db.select().from(syncRuns).orderBy(asc(syncRuns.id));
      expect(runs.map((run) => [run.id, run.status, run.error])).toEqual([
        [left!.id, 'failed', abandonedRunReason],
        [result.run.id, 'succeeded', null],
      ]);
      expect(runs[0]!.finishedAt).not.toBeNull();
      expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    } finally {
      if (database !== testDatabase) await database.close();
    }
  }, 180_000);

  it('leaves alone a run whose holder is alive: the lock is not taken', async () => {
    await testDatabase.db.delete(syncRuns);
    // This process holds the lock while a run row says 'running'; a second taker gets nothing and marks nothing.
    const outcome = await withJobLock(testDatabase, 'full-sync', async () => {
      const [run] = await testDatabase.db.insert(syncRuns).values({ kind: 'reconcile', trigger: 'test' }).returning();
      const second = await withJobLock(testDatabase, 'full-sync', async () => 'taken');
      const [still] = await testDatabase.db.select().from(syncRuns);
      return { run: run!, second, still: still! };
    });
    expect(outcome?.value.second).toBeNull();
    expect(outcome?.value.still.status).toBe('running');
    // Once the holder is gone (here: it let go without finishing its run), the next taker marks it failed.
    await withJobLock(testDatabase, 'full-sync', async () => {});
    const [after] = await testDatabase.db.select().from(syncRuns);
    expect(after).toMatchObject({ id: outcome!.value.run.id, status: 'failed', error: abandonedRunReason });
  });

  it("taking the full-sync lock also fails a role sweep nobody holds, but not a live sweep's run", async () => {
    await testDatabase.db.delete(syncRuns);
    const sweepRun = async () => (await testDatabase.db.insert(syncRuns).values({ kind: 'sweep', trigger: 'test' }).returning())[0]!;
    const statusOf = async (id: number) => (await testDatabase.db.select().from(syncRuns).where(eq(syncRuns.id, id)))[0];

    // A sweep whose process was killed: the next service start (or CLI sync) takes only the full-sync lock.
    const orphan = await sweepRun();
    await withJobLock(testDatabase, 'full-sync', async () => {});
    expect(await statusOf(orphan.id)).toMatchObject({ status: 'failed', error: abandonedRunReason });

    // A sweep running in this process keeps its run.
    const inProcess = await withJobLock(testDatabase, roleSweepLockName, async () => {
      const live = await sweepRun();
      await withJobLock(testDatabase, 'full-sync', async () => {});
      return statusOf(live.id);
    });
    expect(inProcess?.value).toMatchObject({ status: 'running' });

    if (testDatabase.url) {
      // A sweep on another replica: its own session holds the advisory lock (PGlite serves a single process).
      const onReplica = await testDatabase.withSession(async (session) => {
        const key = lockKey(roleSweepLockName).toString();
        await session.execute(sql`select pg_advisory_lock(${key}::bigint)`);
        try {
          const live = await sweepRun();
          await withJobLock(testDatabase, 'full-sync', async () => {});
          return statusOf(live.id);
        } finally {
          await session.execute(sql`select pg_advisory_unlock(${key}::bigint)`);
        }
      });
      expect(onReplica).toMatchObject({ status: 'running' });
    }
    // Once no one holds the sweep lock, the next taker of the full-sync lock fails what they left.
    await withJobLock(testDatabase, 'full-sync', async () => {});
    expect((await testDatabase.db.select().from(syncRuns)).map((run) => run.status)).toEqual(['failed', 'failed', ...(testDatabase.url ? ['failed'] : [])]);
  });
});
