/**
 * `npm run bench -- baseline-probe [--scale 0.3]`: one baseline into an empty PostgreSQL database against the
 * simulated tenant, with what it cost PostgreSQL: CPU per process kind, WAL records, bytes and full-page
 * images (pg_stat_wal is cluster-wide: nothing else may run on the server meanwhile), and each relation's
 * size afterwards. ~30 s at scale 0.3, where the sync bench's crawls and reconcile take minutes: a first look
 * at a change to the write path (judge it with the sync bench's A/B pairs). `PROBE_EXPLAIN=1` logs every
 * statement's plan with its timings, buffers and WAL (auto_explain, for the probe's database only) to
 * PostgreSQL's log.
 * `PROBE_STATS=1` has PostgreSQL log each statement's resource usage (`log_statement_stats`, with its text)
 * instead (to PostgreSQL's log, where the user and system seconds of each message can be summed per statement).
 * `PROBE_EXPERIMENT_SQL='drop index x; …'`: statements (split on `;`) run on the fresh database after its
 * migrations, to learn what one piece of the schema costs a baseline (an index, a column's collation)
 * before changing it for real.
 * `--crawl`: the pure crawl of the same tenant instead of the baseline (same client, pages ahead and
 * organizations at once; bodies parsed and dropped; nothing written), with the same CPU split: what the
 * sync process spends beyond fetching and parsing its pages.
 * `--reconcile`: a baseline first (not measured), then the reconcile of the unchanged tenant measured the
 * same way: what a reconcile costs this process (and PostgreSQL) beyond its crawl.
 * `--profile <dir>`: a CPU profile of this process during the baseline only (not the setup), and
 * `--heap-profile <dir>` a sampling heap profile of everything it allocated then; both slow the sync, so
 * their runs' CPU figures are not comparable with a plain probe's.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import { loadConfig } from '../src/config.js';
import { rows } from '../src/db/client.js';
import { baselineConnections, startFullSync } from '../src/jobs/full-sync-runner.js';
import { silentLogger } from '../src/logger.js';
import { createLogtoClient } from '../src/logto/index.js';
import pg from 'pg';
import { adminUrl, freshPostgres } from './fresh-database.js';
import { threadSeconds, totalSeconds, trackPostgresCpu } from './process-cpu.js';
import { createProfiler } from './profiling.js';
import { shapeFor, startTenant } from './sync-tenant.js';
import { pureCrawl } from './sync.js';

/** This process's I/O counters (Linux /proc/self/io): bytes through read/write calls, and the write calls. */
const processIo = (): { rchar: number; wchar: number; syscw: number } => {
  const fields = Object.fromEntries(readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((line) => line.split(': ')));
  return { rchar: Number(fields.rchar), wchar: Number(fields.wchar), syscw: Number(fields.syscw) };
};

export const run = async (args: string[]): Promise<void> => {
  const { values } = parseArgs({ args, options: { scale: { type: 'string', default: '0.3' }, profile: { type: 'string', default: '' },
    'heap-profile': { type: 'string', default: '' }, crawl: { type: 'boolean', default: false },
    reconcile: { type: 'boolean', default: false } } });
  const scale = Number(values.scale);
  const label = values.crawl ? 'crawl' : values.reconcile ? 'reconcile' : 'baseline';
  const sim = await startTenant(shapeFor(scale), 20);
  const explain = Boolean(process.env.PROBE_EXPLAIN);
  const stats = Boolean(process.env.PROBE_STATS);
  if (explain || stats) {
    // auto_explain or statement statistics for this database only, set before the pool's first connection.
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query('drop database if exists las_bench_probe with (force)');
    await admin.query('create database las_bench_probe');
    const settings = explain ? ["session_preload_libraries = 'auto_explain'", 'auto_explain.log_min_duration = 0', 'auto_explain.log_analyze = on',
      'auto_explain.log_buffers = on', 'auto_explain.log_wal = on', 'auto_explain.log_nested_statements = on', 'auto_explain.log_timing = on']
      : ['log_statement_stats = on', "log_min_error_statement = 'log'"];
    for (const setting of settings)
      await admin.query(`alter database las_bench_probe set ${setting}`);
    await admin.end();
  }
  const database = await freshPostgres('las_bench_probe', { keep: explain || stats });
  for (const statement of (process.env.PROBE_EXPERIMENT_SQL ?? '').split(';').filter((s) => s.trim())) await database.db.execute(sql.raw(statement));
  try {
    const config = loadConfig({ ...sim.env, LOGTO_RATE_LIMIT: '100000/10s', LOGTO_CONCURRENCY: '8', LOG_LEVEL: 'warn' });
    // A baseline on the connections the CLI's `sync` gives it (`baselineConnections`), a reconcile on the default pool.
    const fullSync = async (kind: 'baseline' | 'reconcile') => {
      const syncing = kind === 'baseline' ? database.separatePool(baselineConnections) : database;
      try {
        return await (await startFullSync({ database: syncing, logto: createLogtoClient(config.logto), logger: silentLogger }, { kind, trigger: 'probe' })).done;
      } finally {
        if (syncing !== database) await syncing.close();
      }
    };
    if (values.reconcile) {
      await fullSync('baseline');
      global.gc?.();
    }
    const wal = async () => (await rows<{ lsn: string; records: string; fpi: string; bytes: string }>(database.db,
      sql`select pg_current_wal_insert_lsn()::text as lsn, wal_records::text as records, wal_fpi::text as fpi, wal_bytes::text as bytes from pg_stat_wal`))[0]!;
    const comm = (pid: number) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim(); } catch { return '?'; } };
    const postgresCpu = trackPostgresCpu();
    const walBefore = await wal();
    const ioBefore = processIo();
    const threadsBefore = threadSeconds();
    const syncBefore = process.cpuUsage();
    const simBefore = sim.cpuSeconds();
    const profiler = createProfiler({ cpuDir: values.profile, heapDir: values['heap-profile'] });
    await profiler.start();
    const started = performance.now();
    const result = values.crawl
      ? { counts: { rowsWritten: 0, changes: 0, requests: (await pureCrawl(createLogtoClient(config.logto))).requests } }
      : await fullSync(values.reconcile ? 'reconcile' : 'baseline');
    const seconds = (performance.now() - started) / 1000;
    await profiler.stop(`${label}-probe-${scale}`);
    profiler.close();
    const syncCpu = process.cpuUsage(syncBefore);
    const threadsAfter = threadSeconds();
    const ioAfter = processIo();
    const walAfter = await wal();
    const postgresByPid = postgresCpu.stop();
    const byKind = new Map<string, number>();
    for (const [pid, spent] of postgresByPid) {
      const command = comm(pid);
      // A backend gone by now is one the pool closed while idle: the probe's own.
      const kind = command === '?' || /postgres: \S+ (\S+)/.exec(command)?.[1] === 'postgres' ? 'backends' : command.replace(/^postgres: (\d+\/\S+: )?/, '').split(' ').slice(0, 2).join(' ');
      byKind.set(kind, (byKind.get(kind) ?? 0) + spent);
    }
    const sizes = await rows<{ name: string; kind: string; mb: string }>(database.db,
      sql`select c.relname as name, c.relkind::text as kind, round(pg_relation_size(c.oid) / 1048576.0, 1)::text as mb
        from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and pg_relation_size(c.oid) > 1048576 order by pg_relation_size(c.oid) desc`);
    const walBytes = Number(walAfter.bytes) - Number(walBefore.bytes);
    const out = {
      scale, run: label, seconds: Number(seconds.toFixed(2)), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), rowsWritten: result.counts.rowsWritten, changes: result.counts.changes, requests: result.counts.requests,
      cpu: { sync: (syncCpu.user + syncCpu.system) / 1e6, simulator: sim.cpuSeconds() - simBefore, postgres: Number(totalSeconds(postgresByPid).toFixed(1)) },
      // The sync process's kernel share, and what it wrote and read through system calls (PostgreSQL's
      // statements and results, the requests and pages of the simulated tenant): a socket write on
      // loopback also pays the receiving side's network stack.
      syncProcess: { systemSeconds: syncCpu.system / 1e6,
        mainThreadSeconds: Number((threadsAfter.main - threadsBefore.main).toFixed(2)), helperThreadSeconds: Number((threadsAfter.helpers - threadsBefore.helpers).toFixed(2)), writtenMB: Number(((ioAfter.wchar - ioBefore.wchar) / 1048576).toFixed(1)),
        readMB: Number(((ioAfter.rchar - ioBefore.rchar) / 1048576).toFixed(1)), writeCalls: ioAfter.syscw - ioBefore.syscw },
      postgresByKind: Object.fromEntries([...byKind].filter(([, s]) => s > 0.05).map(([k, s]) => [k, Number(s.toFixed(1))])),
      wal: { records: Number(walAfter.records) - Number(walBefore.records), fpi: Number(walAfter.fpi) - Number(walBefore.fpi), mb: Number((walBytes / 1048576).toFixed(1)),
        bytesPerRow: result.counts.rowsWritten ? Math.round(walBytes / result.counts.rowsWritten) : 0 },
      sizes: sizes.map((s) => `${s.name}:${s.mb}`).join(' '),
    };
    console.log(JSON.stringify(out, null, 1));
  } finally {
    sim.close();
    await database.drop();
  }
};
