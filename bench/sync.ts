import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import PQueue from 'p-queue';
import { accessChanges } from '../db/schema.js';
import { loadConfig, type Config } from '../src/config.js';
import { openDatabase, rows, runMigrations, type DatabaseHandle } from '../src/db/client.js';
import { baselineConnections, startFullSync } from '../src/jobs/full-sync-runner.js';
import { silentLogger } from '../src/logger.js';
import { createLogtoClient, type LogtoClient } from '../src/logto/index.js';
import { defaultOrganizationConcurrency, defaultPagesAhead, type FullSyncResult } from '../src/sync/full-sync.js';
import { adminUrl, freshPostgres } from './fresh-database.js';
import { secondsOf, totalSeconds, trackPostgresCpu } from './process-cpu.js';
import type { Simulator } from './simulator.js';
import { shapeFor, startTenant } from './sync-tenant.js';

/**
 * `npm run bench -- sync [--scale 0.1] [--rate 200/10s]`: issue 11's figures. `--reconciles 3` repeats the unchanged
 * reconcile (each followed by a crawl) for more samples of its ratio from one baseline. A simulated tenant (a
 * child process answering every request after `--latency` ms) of 100,000 users, 2,000 organizations
 * of uneven sizes, ~300,000 memberships, ~400,000 member roles and 20 organization roles at scale 1.
 * In one run: the pure crawl (same client, same pages, same concurrency; bodies parsed and dropped),
 * a baseline into an empty PostgreSQL database, a reconcile of the unchanged tenant, a baseline at
 * `--rate` (Logto Cloud's budget), a baseline by the built `node dist/src/cli.js sync` in a process of
 * its own (its peak RSS), and the same at scale 0.1 on embedded PGlite. Every figure is a
 * ratio to a reference measured in the same run. Results go to bench/results/ as JSON and Markdown.
 */
const options = {
  scale: { type: 'string', default: '1' },
  rate: { type: 'string', default: '200/10s' },
  latency: { type: 'string', default: '20' },
  concurrency: { type: 'string', default: '8' },
  // Organizations whose members are crawled at once, by the pure crawl and the full sync alike.
  'organizations-at-once': { type: 'string', default: String(defaultOrganizationConcurrency) },
  'skip-throttled': { type: 'boolean', default: false },
  'skip-pglite': { type: 'boolean', default: false },
  // The operator's command (`node dist/src/cli.js sync`, built) in a process of its own, for its peak RSS.
  'skip-cli': { type: 'boolean', default: false },
  // Unchanged reconciles on PostgreSQL, each followed by a pure crawl and judged against the crawls either
  // side of it: more samples of the reconcile ratio from one baseline (the host's speed moves between runs).
  reconciles: { type: 'string', default: '1' },
  // Names the result files (sync-<label>-scale<scale>-<time>), so that the runs of an A/B stay apart.
  label: { type: 'string' },
} as const;

const freshPglite = async (): Promise<DatabaseHandle & { drop(): Promise<void> }> => {
  const dataDir = mkdtempSync(join(tmpdir(), 'las-bench-pglite-'));
  const database = await openDatabase({ dataDir });
  await runMigrations(database);
  return { ...database, drop: async () => { await database.close(); rmSync(dataDir, { recursive: true, force: true }); } };
};

const configFor = (sim: Simulator, rate: string, concurrency: string): Config =>
  loadConfig({ ...sim.env, LOGTO_RATE_LIMIT: rate, LOGTO_CONCURRENCY: concurrency, LOG_LEVEL: 'warn' });

/**
 * What a full sync cannot beat: the same requests through the same client, with the same pages ahead
 * and the same organization concurrency as `runFullSync`, each body parsed (and validated) and dropped.
 */
export const pureCrawl = async (logto: LogtoClient, organizationConcurrency = defaultOrganizationConcurrency, pagesAhead = defaultPagesAhead) => {
  const started = performance.now();
  const before = logto.stats().requests;
  const drain = async (pages: AsyncIterable<unknown>) => {
    for await (const _page of pages) {
      // parsed by the client; dropped here
    }
  };
  const probe = await logto.probeOrganizations();
  const counts = new Map<string, number | null>();
  if (probe.available) {
    await drain(logto.listOrganizationRoles({ ahead: pagesAhead }));
    for await (const page of logto.listOrganizationsWithMemberCounts({ ahead: pagesAhead })) {
      for (const { organization, usersCount } of page.items) counts.set(organization.id, usersCount);
    }
  }
  const queue = new PQueue({ concurrency: organizationConcurrency });
  const ahead = Math.max(1, Math.floor(pagesAhead / 2));
  for (const [id, usersCount] of counts) {
    if (usersCount === 0) continue;
    void queue.add(() => drain(logto.listOrganizationMembers(id, { ahead, expectedTotal: usersCount })));
  }
  await Promise.all([drain(logto.listUsers({ ahead: pagesAhead })), queue.onIdle()]);
  return { seconds: (performance.now() - started) / 1000, requests: logto.stats().requests - before };
};

/** Σ ⌈list size / 100⌉ over users, organizations, organization roles and every organization's members. */
const minimumRequests = async (database: DatabaseHandle) => {
  const [row] = await rows<{ minimum: number }>(
    database.db,
    sql`select (
      ceil((select count(*) from users) / 100.0) + ceil((select count(*) from organizations) / 100.0)
      + ceil((select count(*) from organization_roles) / 100.0)
      + coalesce((select sum(ceil(n / 100.0)) from (select count(*) as n from organization_members group by organization_id) m), 0)
    )::int as minimum`,
  );
  return row!.minimum;
};

const tenantSize = async (database: DatabaseHandle) => {
  const [row] = await rows<Record<string, number>>(
    database.db,
    sql`select (select count(*) from users)::int as users, (select count(*) from organizations)::int as organizations,
      (select count(*) from organization_roles)::int as roles, (select count(*) from organization_members)::int as memberships,
      (select count(*) from organization_member_roles)::int as member_roles,
      (select max(n) from (select count(*) as n from organization_members group by organization_id) m)::int as largest_organization,
      (select count(*) from (select organization_id from organization_members group by organization_id having count(*) > 10000) m)::int as over_10000`,
  );
  return row!;
};

/** Runs `fn` while sampling this process's RSS; returns its result with the peak. */
const withPeakRss = async <T>(fn: () => Promise<T>): Promise<{ value: T; peakRssMiB: number }> => {
  let peak = process.memoryUsage.rss();
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 100);
  try {
    const value = await fn();
    return { value, peakRssMiB: Math.round(Math.max(peak, process.memoryUsage.rss()) / 1024 / 1024) };
  } finally {
    clearInterval(sampler);
  }
};

/** The database a PostgreSQL handle is connected to; null for PGlite, which runs inside this process. */
const serverDatabase = async (database: DatabaseHandle): Promise<string | null> =>
  database.driver === 'postgres' ? (await rows<{ name: string }>(database.db, sql`select current_database() as name`))[0]!.name : null;

/**
 * CPU seconds each side used while `fn` ran: this process (the syncing client), the simulated tenant and
 * PostgreSQL: every `postgres` process (a run on 2 cores is bound by their sum, so this says whose work to
 * cut), and apart the backends serving `server`, the run's own database (the run's pool; the server's
 * checkpointer, walwriter and other databases' clients are not theirs: the all-process figure swung
 * 1.1 → 2.1 s between reconciles of the same code).
 */
const withCpu = async <T>(
  sim: Simulator,
  server: string | null,
  fn: () => Promise<T>,
): Promise<{ value: T; cpu: { sync: number; simulator: number; postgres: number | null; postgresOwn: number | null } }> => {
  // PGlite runs inside this process: its CPU is the sync process's, and the server's is someone else's.
  const postgres = server === null ? null : trackPostgresCpu();
  const before = { sync: process.cpuUsage(), simulator: sim.cpuSeconds() };
  let postgresSeconds: number | null = null;
  let ownSeconds: number | null = null;
  const value = await fn().finally(() => {
    if (!postgres || server === null) return;
    const byPid = postgres.stop();
    postgresSeconds = totalSeconds(byPid);
    ownSeconds = secondsOf(postgres, byPid, server);
  });
  const sync = process.cpuUsage(before.sync);
  return {
    value,
    cpu: {
      sync: round((sync.user + sync.system) / 1e6, 1),
      simulator: round(sim.cpuSeconds() - before.simulator, 1),
      postgres: postgresSeconds === null ? null : round(postgresSeconds, 1),
      postgresOwn: ownSeconds === null ? null : round(ownSeconds, 1),
    },
  };
};

const fullSync = async (database: DatabaseHandle, logto: LogtoClient, kind: 'baseline' | 'reconcile', sim: Simulator, organizationConcurrency: number) => {
  const changesBefore = await database.db.$count(accessChanges);
  const server = await serverDatabase(database);
  const started = performance.now();
  // A baseline runs on the connections the CLI's `sync` gives it (`baselineConnections`), a reconcile on the default pool.
  const syncing = kind === 'baseline' && database.driver === 'postgres' ? database.separatePool(baselineConnections) : database;
  const { value: result, cpu } = await withCpu(sim, server, async (): Promise<FullSyncResult> =>
    (await startFullSync({ database: syncing, logto, logger: silentLogger }, { kind, trigger: 'bench', organizationConcurrency })).done,
  ).finally(() => (syncing === database ? undefined : syncing.close()));
  const seconds = (performance.now() - started) / 1000;
  const changeRows = (await database.db.$count(accessChanges)) - changesBefore;
  return { seconds, requests: result.counts.requests, rowsWritten: result.counts.rowsWritten, changeRows, cpu, counts: result.counts };
};

const round = (value: number, digits = 2) => Number(value.toFixed(digits));

/**
 * A baseline by the operator's command, built (`node dist/src/cli.js sync`), in a process of its own
 * into an empty database: the peak RSS the target is about. The in-process figures above also carry this
 * process's TypeScript loader and what the crawl before left on its heap. The peak is the kernel's
 * (`maxRSS`), written by the child as it exits.
 */
const cliBaseline = async (sim: Simulator, concurrency: string) => {
  const build = spawnSync('npm', ['run', 'build'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (build.status !== 0) throw new Error('npm run build failed');
  const database = await freshPostgres('las_bench_sync_cli');
  try {
    const url = new URL(adminUrl);
    url.pathname = '/las_bench_sync_cli';
    const reportMaxRss = `data:text/javascript,process.on('exit',()=>process.stderr.write('maxRssKiB='+process.resourceUsage().maxRSS+'\\n'))`;
    const started = performance.now();
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', reportMaxRss, 'dist/src/cli.js', 'sync'], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, ...sim.env, DATABASE_URL: url.toString(), LOGTO_RATE_LIMIT: '100000/10s', LOGTO_CONCURRENCY: concurrency, LOG_LEVEL: 'warn', NODE_ENV: 'production' },
      });
      let output = '';
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.on('error', reject);
      child.on('close', (exitCode) => resolve({ code: exitCode, stderr: output }));
    });
    const maxRss = /maxRssKiB=(\d+)/.exec(stderr);
    if (code !== 0 || !maxRss) throw new Error(`node dist/src/cli.js sync exited with ${String(code)}: ${stderr.slice(-500)}`);
    return { seconds: round((performance.now() - started) / 1000), peakRssMiB: Math.round(Number(maxRss[1]) / 1024) };
  } finally {
    await database.drop();
  }
};

/** Crawl, baseline and unchanged reconcile against one tenant and one database; crawl measured before and after. */
const measure = async (sim: Simulator, database: DatabaseHandle, concurrency: string, organizationConcurrency: number, reconciles = 1) => {
  const config = configFor(sim, '100000/10s', concurrency);
  const server = await serverDatabase(database);
  // The crawl's own CPU (this process and the simulator) is the floor a reconcile's CPU is judged against.
  const { value: crawlBefore, cpu: crawlBeforeCpu } = await withCpu(sim, server, () => pureCrawl(createLogtoClient(config.logto), organizationConcurrency));
  const simCpuCrawl = crawlBeforeCpu.simulator;
  global.gc?.();
  const baseline = await withPeakRss(() => fullSync(database, createLogtoClient(config.logto), 'baseline', sim, organizationConcurrency));
  const reconcile = await withPeakRss(() => fullSync(database, createLogtoClient(config.logto), 'reconcile', sim, organizationConcurrency));
  const { value: crawlAfter, cpu: crawlAfterCpu } = await withCpu(sim, server, () => pureCrawl(createLogtoClient(config.logto), organizationConcurrency));
  const crawlSeconds = (crawlBefore.seconds + crawlAfter.seconds) / 2;
  type Cpu = Awaited<ReturnType<typeof fullSync>>['cpu'];
  const moreReconciles: { seconds: number; rowsWritten: number; crawlAfter: number; overCrawl: number; cpu: Cpu; crawlCpu: Cpu }[] = [];
  for (let previousCrawl = crawlAfter.seconds; moreReconciles.length + 1 < reconciles; ) {
    const again = await fullSync(database, createLogtoClient(config.logto), 'reconcile', sim, organizationConcurrency);
    const { value: crawl, cpu: crawlCpu } = await withCpu(sim, server, () => pureCrawl(createLogtoClient(config.logto), organizationConcurrency));
    moreReconciles.push({
      seconds: round(again.seconds),
      rowsWritten: again.rowsWritten,
      crawlAfter: round(crawl.seconds),
      overCrawl: round(again.seconds / ((previousCrawl + crawl.seconds) / 2)),
      cpu: again.cpu,
      crawlCpu,
    });
    previousCrawl = crawl.seconds;
  }
  const minimum = await minimumRequests(database);
  return {
    tenant: await tenantSize(database),
    crawl: {
      seconds: round(crawlSeconds),
      before: round(crawlBefore.seconds),
      after: round(crawlAfter.seconds),
      requests: crawlBefore.requests,
      cpuBefore: crawlBeforeCpu,
      cpuAfter: crawlAfterCpu,
    },
    simulatorCpuShareDuringCrawl: round(simCpuCrawl / crawlBefore.seconds),
    baseline: { ...baseline.value, seconds: round(baseline.value.seconds), peakRssMiB: baseline.peakRssMiB },
    reconcile: { ...reconcile.value, seconds: round(reconcile.value.seconds), peakRssMiB: reconcile.peakRssMiB },
    minimumRequests: minimum,
    ...(moreReconciles.length > 0 ? { moreReconciles } : {}),
    ratios: {
      baselineOverCrawl: round(baseline.value.seconds / crawlSeconds),
      reconcileOverCrawl: round(reconcile.value.seconds / crawlSeconds),
      requestsOverMinimum: round(baseline.value.requests / minimum, 4),
    },
  };
};

export const run = async (args: string[]): Promise<void> => {
  const { values } = parseArgs({ args, options });
  const scale = Number(values.scale);
  const latencyMs = Number(values.latency);
  const shape = shapeFor(scale);
  const organizationConcurrency = Number(values['organizations-at-once']);
  const machine = { nproc: cpus().length, memoryGiB: round(totalmem() / 1024 ** 3, 1), loadAverage: loadavg().map((load) => round(load, 1)) };
  console.log(`# sync bench: scale ${scale} (${shape.users} users, ${shape.organizations} organizations), latency ${latencyMs} ms, concurrency ${values.concurrency}`);
  console.log(`machine: ${machine.nproc} CPUs, ${machine.memoryGiB} GiB, load ${machine.loadAverage.join(' ')}`);

  const results: Record<string, unknown> = { at: new Date().toISOString(), scale, latencyMs, concurrency: Number(values.concurrency), organizationConcurrency, machine };
  const sim = await startTenant(shape, latencyMs);
  try {
    const database = await freshPostgres('las_bench_sync');
    try {
      results.postgres = await measure(sim, database, values.concurrency, organizationConcurrency, Math.max(1, Number(values.reconciles)));
    } finally {
      await database.drop();
    }
    if (!values['skip-throttled']) {
      const database = await freshPostgres('las_bench_sync_throttled');
      try {
        const logto = createLogtoClient(configFor(sim, values.rate, values.concurrency).logto);
        const throttled = await fullSync(database, logto, 'baseline', sim, organizationConcurrency);
        const [count, per] = values.rate.split('/');
        const perSecond = Number(count) / (loadConfig({ ...sim.env, LOGTO_RATE_LIMIT: values.rate }).logto.rateLimit.intervalMs / 1000);
        results.throttled = {
          rate: values.rate,
          perSecond,
          seconds: round(throttled.seconds),
          requests: throttled.requests,
          wallOverBudget: round(throttled.seconds / (throttled.requests / perSecond)),
          per,
          count,
        };
      } finally {
        await database.drop();
      }
    }
    if (!values['skip-cli']) results.cli = await cliBaseline(sim, values.concurrency);
  } finally {
    sim.close();
  }

  if (!values['skip-pglite']) {
    const small = await startTenant(shapeFor(0.1), latencyMs);
    const database = await freshPglite();
    try {
      results.pglite = await measure(small, database, values.concurrency, organizationConcurrency);
    } finally {
      small.close();
      await database.drop();
    }
  }

  const markdown = report(results);
  console.log(`\n${markdown}`);
  mkdirSync('bench/results', { recursive: true });
  const stamp = `sync-${values.label ? `${values.label}-` : ''}scale${scale}-${String(results.at).replace(/[:.]/g, '-')}`;
  writeFileSync(join('bench/results', `${stamp}.json`), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join('bench/results', `${stamp}.md`), `${markdown}\n`);
  console.log(`written bench/results/${stamp}.json and .md`);
};

type Measured = Awaited<ReturnType<typeof measure>>;

const verdict = (ok: boolean) => (ok ? 'met' : '**not met**');

const report = (results: Record<string, unknown>): string => {
  const lines: string[] = [];
  const machine = results.machine as { nproc: number; memoryGiB: number; loadAverage: number[] };
  lines.push(`# Sync bench, scale ${String(results.scale)} (${String(results.at)})`, '');
  lines.push(
    `Machine: ${machine.nproc} CPUs, ${machine.memoryGiB} GiB, load average at start ${machine.loadAverage.join(' ')} (shared). ` +
      `Simulated tenant in a child process answering every request after ${String(results.latencyMs)} ms; LOGTO_CONCURRENCY ${String(results.concurrency)}; ` +
      `organizations crawled at once ${String(results.organizationConcurrency)} (crawl and sync alike).`,
    '',
  );
  const section = (title: string, measured: Measured, targets: boolean) => {
    const t = measured.tenant;
    lines.push(`## ${title}`, '');
    lines.push(
      `Tenant: ${t.users} users, ${t.organizations} organizations (largest ${t.largest_organization} members, ${t.over_10000} over 10,000), ` +
        `${t.roles} organization roles, ${t.memberships} memberships, ${t.member_roles} member roles.`,
      '',
    );
    lines.push('| measure | value | target | |', '|---|---|---|---|');
    lines.push(`| pure crawl (mean of before/after) | ${measured.crawl.seconds} s (${measured.crawl.before} / ${measured.crawl.after}), ${measured.crawl.requests} requests | | |`);
    lines.push(`| simulator CPU ÷ crawl wall | ${measured.simulatorCpuShareDuringCrawl} | < 1 (not the bottleneck) | |`);
    const postgresText = (spent: Measured['baseline']['cpu']) =>
      spent.postgres === null ? 'in the sync process' : `${spent.postgres} s (its database's backends ${spent.postgresOwn} s)`;
    const spentText = (spent: Measured['baseline']['cpu']) => `${spent.sync} s / ${spent.simulator} s / ${postgresText(spent)}`;
    lines.push(`| CPU during the pure crawls before / after: crawl process / simulator / PostgreSQL | ${spentText(measured.crawl.cpuBefore)}; ${spentText(measured.crawl.cpuAfter)} | | |`);
    lines.push(
      `| full sync into an empty database | ${measured.baseline.seconds} s, ${measured.baseline.requests} requests, ${measured.baseline.rowsWritten} rows, ${measured.baseline.changeRows} change rows | | |`,
    );
    const cpu = (label: string, spent: Measured['baseline']['cpu']) =>
      lines.push(`| CPU during the ${label}: sync process / simulator / PostgreSQL (all processes; the run's database's backends) | ${spentText(spent)} | | |`);
    cpu('full sync', measured.baseline.cpu);
    lines.push(
      `| ÷ pure crawl | ${measured.ratios.baselineOverCrawl} | ≤ 1.2 | ${targets ? verdict(measured.ratios.baselineOverCrawl <= 1.2) : '(no target)'} |`,
    );
    lines.push(
      `| reconcile, unchanged tenant ÷ pure crawl | ${measured.ratios.reconcileOverCrawl} (${measured.reconcile.seconds} s), ${measured.reconcile.rowsWritten} rows written | ≤ 1.1 and 0 rows | ${targets ? verdict(measured.ratios.reconcileOverCrawl <= 1.1 && measured.reconcile.rowsWritten === 0) : '(no target)'} |`,
    );
    lines.push(
      `| requests ÷ minimum (${measured.minimumRequests}) | ${measured.ratios.requestsOverMinimum} | ≤ 1.01 | ${targets ? verdict(measured.ratios.requestsOverMinimum <= 1.01) : '(no target)'} |`,
    );
    cpu('reconcile', measured.reconcile.cpu);
    for (const [index, again] of (measured.moreReconciles ?? []).entries()) {
      lines.push(
        `| reconcile ${index + 2} ÷ the crawls either side (${again.crawlAfter} s after it); CPU sync / simulator / PostgreSQL | ${again.overCrawl} (${again.seconds} s), ${again.rowsWritten} rows written; ${spentText(again.cpu)} (crawl after it: ${spentText(again.crawlCpu)}) | ≤ 1.1 and 0 rows | ${targets ? verdict(again.overCrawl <= 1.1 && again.rowsWritten === 0) : '(no target)'} |`,
      );
    }
    const peak = Math.max(measured.baseline.peakRssMiB, measured.reconcile.peakRssMiB);
    lines.push(`| peak RSS of this process during the full sync and reconcile (tsx loaded, the crawl before) | ${peak} MiB | | |`);
    const cli = results.cli as { seconds: number; peakRssMiB: number } | undefined;
    if (targets && cli) {
      lines.push(
        `| peak RSS of \`node dist/src/cli.js sync\` (built, a process of its own, empty database) | ${cli.peakRssMiB} MiB (${cli.seconds} s) | ≤ 300 MB | ${verdict(cli.peakRssMiB * 1.048576 <= 300)} |`,
      );
    }
    lines.push('');
  };
  section('PostgreSQL', results.postgres as Measured, true);
  const throttled = results.throttled as { rate: string; perSecond: number; seconds: number; requests: number; wallOverBudget: number } | undefined;
  if (throttled) {
    lines.push(`## Throttled (LOGTO_RATE_LIMIT=${throttled.rate}), PostgreSQL`, '');
    lines.push('| measure | value | target | |', '|---|---|---|---|');
    lines.push(
      `| full sync wall ÷ (requests ÷ ${throttled.perSecond} per second) | ${throttled.wallOverBudget} (${throttled.seconds} s, ${throttled.requests} requests) | ≤ 1.05 | ${verdict(throttled.wallOverBudget <= 1.05)} |`,
      '',
    );
  }
  if (results.pglite) section('Embedded PGlite, scale 0.1', results.pglite as Measured, false);
  return lines.join('\n');
};
