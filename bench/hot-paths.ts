import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { createApiKey } from '../src/db/api-keys.js';
import { openDatabase, runMigrations } from '../src/db/client.js';
import { encodeCursor } from '../src/db/queries/pagination.js';
import { startFullSync } from '../src/jobs/full-sync-runner.js';
import { runScheduledRoleSweep } from '../src/jobs/role-sweep-job.js';
import { silentLogger } from '../src/logger.js';
import { createLogtoClient } from '../src/logto/index.js';
import type { LoadResult, LoadSpec } from './hot-paths/load.js';
import { cpuSeconds, cpuSpent, postgresPids } from './process-cpu.js';
import { serviceNodeFlags } from './service-flags.js';

/**
 * `npm run bench -- hot-paths [--scale 0.1] [--duration 10] [--connections 32] [--label after] [--fresh] [--warmup 2]`
 *
 * The HTTP hot paths of the built service (`node dist/src/server.js`, NODE_ENV=production, LOG_LEVEL=warn)
 * against bare express + pg references (bench/hot-paths/bare-references.ts) and against the simulated
 * Management API answering the same questions, on the same PostgreSQL database in the same run. Each
 * target is loaded by autocannon in its own process (bench/hot-paths/load.ts) with ids drawn at random
 * over the whole tenant, after an unmeasured warm-up of every target of the scenario (`--warmup` seconds
 * each; 0: none), so that the first one loaded does not pay alone for cold pages and unoptimised code.
 * Figures are ratios to the bare reference of the same run.
 *
 * The tenant (default 100,000 users / 2,000 organizations) is synced once through the service's own full
 * sync into `las_hot_paths_<users>_<organizations>` and reused by later runs (`--fresh` re-seeds it).
 * Results: bench/results/hot-paths[-<label>].json and .md.
 *
 * `--profile <dir>`: run the service under `node --cpu-prof`, its profile written there when it stops.
 *
 * `--before <dir>`: also load another build of the service (`<dir>/dist/src/server.js`, e.g. the commit
 * before a change, built with `tsc -p tsconfig.build.json` in an export of it) in the same run.
 */
export const runHotPaths = async (argv: string[]): Promise<void> => {
  const { values } = parseArgs({
    args: argv,
    options: {
      scale: { type: 'string', default: '1' },
      duration: { type: 'string' },
      connections: { type: 'string', default: '32' },
      label: { type: 'string' },
      fresh: { type: 'boolean', default: false },
      'skip-build': { type: 'boolean', default: false },
      only: { type: 'string' },
      before: { type: 'string' },
      profile: { type: 'string' },
      warmup: { type: 'string', default: '2' },
    },
  });
  const scale = Number(values.scale);
  const userCount = Math.round(100_000 * scale);
  const organizationCount = Math.max(1, Math.round(2_000 * scale));
  const durationSeconds = Number(values.duration ?? (scale >= 1 ? 10 : 3));
  const connections = Number(values.connections);
  const warmupSeconds = Number(values.warmup);
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const databaseName = `las_hot_paths_${userCount}_${organizationCount}`;
  const databaseUrl = Object.assign(new URL(adminUrl), { pathname: `/${databaseName}` }).toString();
  const children: ChildProcess[] = [];
  const work = mkdtempSync(join(tmpdir(), 'las-hot-paths-'));
  const log = (line: string) => process.stderr.write(`${line}\n`);

  const spawnChild = (args: string[], env: Record<string, string>, ready: RegExp | null): Promise<ChildProcess> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
      children.push(child);
      let output = '';
      child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (ready?.test(output)) resolve(child);
      });
      if (!ready) resolve(child);
    });

  const waitForHttp = async (url: string) => {
    for (let attempt = 0; attempt < 300; attempt += 1) {
      try {
        if ((await fetch(url)).ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`${url} never answered`);
  };

  try {
    // --- the simulated tenant (same seed: same ids as the stored copy)
    const simulatorPort = 4700 + Math.floor(Math.random() * 100);
    let simulatorOutput = '';
    const simulator = await new Promise<Record<string, string>>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', 'src/simulator/main.ts', '--port', String(simulatorPort), '--users', String(userCount),
          '--organizations', String(organizationCount), '--roles', '8', '--seed', '2026', '--resource', 'self'],
        { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } },
      );
      children.push(child);
      child.once('exit', (code) => reject(new Error(`simulator exited with ${code}`)));
      child.stdout!.on('data', (chunk: Buffer) => {
        simulatorOutput += chunk.toString();
        const env = Object.fromEntries([...simulatorOutput.matchAll(/^([A-Z_]+)=(.*)$/gm)].map((match) => [match[1]!, match[2]!]));
        if (env.LOGTO_WEBHOOK_SIGNING_KEYS) resolve(env);
      });
    });
    const summary = /(\d+) users, (\d+) organizations, (\d+) organization roles, (\d+) memberships, (\d+) member roles/.exec(simulatorOutput);
    log(`simulated tenant: ${summary?.[0] ?? '?'}`);
    const signingKey = simulator.LOGTO_WEBHOOK_SIGNING_KEYS!;
    const serviceEnv = {
      LOGTO_BASE_URL: simulator.LOGTO_BASE_URL!,
      LOGTO_TOKEN_URL: simulator.LOGTO_TOKEN_URL!,
      LOGTO_MANAGEMENT_API_RESOURCE: simulator.LOGTO_MANAGEMENT_API_RESOURCE!,
      LOGTO_CLIENT_ID: simulator.LOGTO_CLIENT_ID!,
      LOGTO_CLIENT_SECRET: simulator.LOGTO_CLIENT_SECRET!,
      LOGTO_WEBHOOK_SIGNING_KEYS: signingKey,
      // As deployed: with the hook known, a start recovers missed deliveries from its logs instead of reconciling.
      LOGTO_HOOK_ID: simulator.LOGTO_HOOK_ID!,
      LOGTO_RATE_LIMIT: '200/10s',
      DATABASE_URL: databaseUrl,
      ROLE_SWEEP_INTERVAL: '24h',
      LOG_LEVEL: 'warn',
      NODE_ENV: 'production',
    };

    // --- the database: synced once through the service's full sync, reused afterwards
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    const exists = (await admin.query('select 1 from pg_database where datname = $1', [databaseName])).rowCount === 1;
    let seeded = false;
    if (exists && !values.fresh) {
      const probe = new pg.Client({ connectionString: databaseUrl });
      await probe.connect();
      seeded = (await probe
        .query(`select 1 from sync_runs where kind = 'baseline' and status = 'succeeded'`)
        .then((result) => (result.rowCount ?? 0) > 0)
        .catch(() => false));
      await probe.end();
    }
    if (!seeded) {
      await admin.query(`drop database if exists ${databaseName} with (force)`);
      await admin.query(`create database ${databaseName}`);
      const database = await openDatabase({ url: databaseUrl, dataDir: '' });
      await runMigrations(database);
      const config = loadConfig({ ...serviceEnv, LOGTO_RATE_LIMIT: '100000/10s', LOGTO_CONCURRENCY: '16' });
      const logto = createLogtoClient(config.logto);
      log(`seeding ${databaseName} through a full sync…`);
      const started = performance.now();
      // Statistics as the tables fill: planned on empty tables, the removal check's anti-join runs for
      // half an hour at this size (a baseline that runs ANALYZE itself makes this unnecessary).
      const analyzer = setInterval(() => void database.db.execute(sql`analyze`).catch(() => {}), 15_000);
      const result = await (await startFullSync({ database, logto, logger: silentLogger }, { kind: 'baseline', trigger: 'bench' })).done;
      clearInterval(analyzer);
      log(`seeded in ${((performance.now() - started) / 1000).toFixed(1)} s (${result.counts.requests} requests)`);
      // With no sweep on record, the service sweeps member roles a minute after it starts: minutes of crawling
      // at this size, beside the loads (a seeding run measured every route and the webhooks' drain with it).
      await runScheduledRoleSweep({ database, logto, logger: silentLogger }, { intervalMs: 24 * 3_600_000, force: true });
      await database.close();
    }
    await admin.end();

    const db = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    await db.query('analyze');
    // Deliveries of earlier runs would only slow the inbox's indexes down.
    await db.query(`delete from webhook_deliveries where payload->>'hookId' like 'hot-paths-%'`);
    // This server may run with autovacuum off: without a vacuum, every earlier run's dead inbox rows stay in
    // the inbox's indexes and each claim of the next run walks them (0.9 ms an empty claim after a few runs).
    await db.query('vacuum webhook_deliveries');
    await db.query('drop table if exists bench_bare_deliveries');
    const runId = `hot-paths-${randomBytes(6).toString('hex')}`;
    const keyHandle = await openDatabase({ url: databaseUrl, dataDir: '' });
    const apiKey = await createApiKey(keyHandle.db, { name: runId, scope: 'read' });
    await keyHandle.close();

    // --- ids drawn over the whole tenant
    const column = async (query: string, params: unknown[] = []) => (await db.query(query, params)).rows as Record<string, string>[];
    const userIds = (await column('select id from users')).map((row) => row.id!);
    const organizationIds = (await column('select id from organizations')).map((row) => row.id!);
    const memberships = await column('select organization_id, user_id from organization_members order by random() limit 20000');
    const [largest] = await column('select organization_id, count(*)::text as members from organization_members group by 1 order by 2 desc limit 1');
    const largestMembers = (await column('select user_id from organization_members where organization_id = $1 order by random() limit 500', [largest!.organization_id]))
      .map((row) => row.user_id!);
    const roleIds = (await column('select id from organization_roles')).map((row) => row.id!);
    const roleCursors = await column('select organization_role_id, organization_id, user_id from organization_member_roles order by random() limit 2000');
    const templates = (await column('select raw from users order by random() limit 500')).map((row) => {
      const user = row.raw as unknown as { id: string };
      return { event: 'User.Data.Updated', userAgent: 'bench', ip: '127.0.0.1', path: `/users/${user.id}`, method: 'PATCH', status: 200,
        params: { userId: user.id }, matchedRoute: '/users/:userId', data: user };
    });
    const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!;
    const sample = <T>(count: number, draw: () => T): T[] => Array.from({ length: count }, draw);
    // Access: four in five questions about real memberships, one in five about a random (mostly not-a-member) pair.
    const accessPairs = sample(20_000, () => {
      if (Math.random() < 0.8) { const m = pick(memberships); return [m.user_id!, m.organization_id!] as const; }
      return [pick(userIds), pick(organizationIds)] as const;
    });
    // Member pages: a first page of a random organization, or (one in four) a random page of the largest.
    const memberPages = sample(10_000, (): [string, string | null] =>
      Math.random() < 0.75 ? [pick(organizationIds), null] : [largest!.organization_id!, pick(largestMembers)]);
    const rolePages = sample(5_000, (): [string, { organization_id: string; user_id: string } | null] => {
      if (Math.random() < 0.5) return [pick(roleIds), null];
      const at = pick(roleCursors);
      return [at.organization_role_id!, { organization_id: at.organization_id!, user_id: at.user_id! }];
    });

    // --- Logto: a token for the direct questions
    const tokenResponse = await fetch(simulator.LOGTO_TOKEN_URL!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${simulator.LOGTO_CLIENT_ID}:${simulator.LOGTO_CLIENT_SECRET}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: simulator.LOGTO_MANAGEMENT_API_RESOURCE!, scope: 'all' }),
    });
    const logtoToken = ((await tokenResponse.json()) as { access_token: string }).access_token;

    // --- the service, built, and the bare references
    if (!values['skip-build']) {
      log('npm run build…');
      const build = spawnSync('npm', ['run', 'build'], { stdio: 'inherit' });
      if (build.status !== 0) throw new Error('npm run build failed');
    }
    // A start after a stop that left deliveries behind (or after the seed, which records no stop) reconciles
    // at boot when no hook id is configured: measuring while that runs measures the reconcile. Wait it out,
    // and for the inbox to be empty, before every load.
    const quiet = async (what: string, inboxOnly = false) => {
      const started = performance.now();
      let calm = 0;
      while (calm < 3) {
        await new Promise((resolve) => setTimeout(resolve, 300));
        const [state] = (await db.query(`select
            (select count(*) from sync_runs where status = 'running')::int as running,
            (select count(*) from webhook_deliveries where status in ('pending', 'processing'))::int as inbox`)).rows as { running: number; inbox: number }[];
        calm = (inboxOnly || state!.running === 0) && state!.inbox === 0 ? calm + 1 : 0;
        if (performance.now() - started > 30 * 60_000) throw new Error(`${what}: still busy after 30 minutes`);
      }
      const seconds = (performance.now() - started) / 1000;
      if (seconds > 2) log(`${what}: waited ${seconds.toFixed(1)} s for the boot catch-up and the inbox`);
      return seconds;
    };
    const servicePort = 4800 + Math.floor(Math.random() * 100);
    const barePort = servicePort + 100;
    const profile = values.profile ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`] : [];
    const load = (target: { url: string; headers?: Record<string, string>; paths?: string[]; webhook?: LoadSpec['webhook']; durationSeconds?: number }): LoadResult => {
      const specFile = join(work, `spec-${randomBytes(4).toString('hex')}.json`);
      const spec: LoadSpec = { url: target.url, connections, durationSeconds: target.durationSeconds ?? durationSeconds, ...(target.headers ? { headers: target.headers } : {}),
        ...(target.paths ? { paths: target.paths } : {}), ...(target.webhook ? { webhook: target.webhook } : {}) };
      writeFileSync(specFile, JSON.stringify(spec));
      const pid = serverPids.get(target.url);
      const cpuBefore = { server: cpuSeconds(pid ? [pid] : []), postgres: cpuSeconds(postgresPids()) };
      const child = spawnSync(process.execPath, ['--import', 'tsx', 'bench/hot-paths/load.ts', specFile], { encoding: 'utf8', maxBuffer: 1 << 24 });
      if (child.status !== 0) throw new Error(`load failed: ${child.stderr}`);
      const result = JSON.parse(child.stdout.trim().split('\n').pop()!) as LoadResult;
      // CPU per request of the server process and of PostgreSQL (every backend: the worker's included) over the load.
      const perRequest = (seconds: number) => (seconds * 1000) / Math.max(result.requests, 1);
      if (pid) result.serverCpuMs = perRequest(cpuSpent(cpuBefore.server, cpuSeconds([pid])));
      result.postgresCpuMs = perRequest(cpuSpent(cpuBefore.postgres, cpuSeconds(postgresPids())));
      return result;
    };

    /** The process serving each base URL, for the CPU each load cost it. */
    const serverPids = new Map<string, number>();
    // The receive path alone: the service's own app and receiver with no worker behind them, loaded before the
    // service starts (its worker would apply what this stores); the service applies them while it starts.
    let receiverOnly: LoadResult | undefined;
    const webhooksIncluded = !values.only || values.only.split(',').some((part) => 'POST /webhooks/logto'.includes(part));
    if (webhooksIncluded) {
      const receiverPort = 4800 + Math.floor(Math.random() * 100) + 300;
      const receiver = await spawnChild(['--import', 'tsx', 'bench/hot-paths/receiver-only.ts', process.cwd(), String(receiverPort)],
        { ...serviceEnv, PORT: String(receiverPort) }, /listening/);
      const receiverUrl = `http://127.0.0.1:${receiverPort}`;
      serverPids.set(receiverUrl, receiver.pid!);
      log('POST /webhooks/logto, receiver alone (no worker)…');
      receiverOnly = load({ url: receiverUrl, webhook: { path: '/webhooks/logto', signingKey, templates, runId } });
      receiver.removeAllListeners('exit');
      receiver.kill('SIGTERM');
      log(`  receiver alone ${receiverOnly.throughput.toFixed(0)} req/s (p99 ${receiverOnly.p99} ms)`);
    }
    serverPids.set(`http://127.0.0.1:${servicePort}`, (await spawnChild([...serviceNodeFlags(), ...profile, 'dist/src/server.js'], { ...serviceEnv, PORT: String(servicePort), HOST: '127.0.0.1' }, null)).pid!);
    await waitForHttp(`http://127.0.0.1:${servicePort}/healthz`);
    await quiet('service start');
    const beforePort = servicePort + 200;
    if (values.before) {
      serverPids.set(`http://127.0.0.1:${beforePort}`, (await spawnChild([...serviceNodeFlags(), join(values.before, 'dist/src/server.js')], { ...serviceEnv, PORT: String(beforePort), HOST: '127.0.0.1' }, null)).pid!);
      await waitForHttp(`http://127.0.0.1:${beforePort}/healthz`);
      await quiet('before build start');
    }
    serverPids.set(`http://127.0.0.1:${barePort}`, (await spawnChild(['--import', 'tsx', 'bench/hot-paths/bare-references.ts', databaseUrl, String(barePort), signingKey], { NODE_ENV: 'production' }, /listening/)).pid!);

    type Target = { url: string; headers?: Record<string, string>; paths?: string[]; webhook?: LoadSpec['webhook'] };
    type Scenario = { name: string; target: string; service: Target; bare: Target; logto?: Target; bareLabel: string };
    const withBefore = (target: Target): Target | undefined =>
      values.before ? { ...target, url: `http://127.0.0.1:${beforePort}` } : undefined;
    const service = `http://127.0.0.1:${servicePort}`;
    const bare = `http://127.0.0.1:${barePort}`;
    const serviceHeaders = { authorization: `Bearer ${apiKey.secret}` };
    const logtoTarget = (paths: string[]): Target => ({ url: simulator.LOGTO_BASE_URL!, headers: { authorization: `Bearer ${logtoToken}` }, paths });
    const scenarios: Scenario[] = [
      {
        name: 'GET /v1/access', target: '≥ 0.8× throughput, p99 ≤ 1.5×', bareLabel: 'express + one prepared pg query',
        service: { url: service, headers: serviceHeaders, paths: accessPairs.map(([u, o]) => `/v1/access?userId=${u}&organizationId=${o}`) },
        bare: { url: bare, paths: accessPairs.map(([u, o]) => `/access?userId=${u}&organizationId=${o}`) },
        logto: logtoTarget(accessPairs.map(([u, o]) => `/api/organizations/${o}/users/${u}/roles`)),
      },
      {
        name: 'GET /v1/users/:id', target: '≥ 0.7×', bareLabel: 'express + one prepared query, JSON built in PG',
        service: { url: service, headers: serviceHeaders, paths: userIds.map((id) => `/v1/users/${id}`) },
        bare: { url: bare, paths: userIds.map((id) => `/users/${id}`) },
        logto: logtoTarget(userIds.map((id) => `/api/users/${id}`)),
      },
      {
        name: 'GET /v1/users/:id/organizations', target: '≥ 0.7×', bareLabel: 'express + one prepared query, JSON built in PG',
        service: { url: service, headers: serviceHeaders, paths: userIds.map((id) => `/v1/users/${id}/organizations`) },
        bare: { url: bare, paths: userIds.map((id) => `/users/${id}/organizations`) },
        logto: logtoTarget(userIds.map((id) => `/api/users/${id}/organizations`)),
      },
      {
        name: 'GET /v1/organizations/:id/members (100)', target: '≥ 0.8×', bareLabel: 'express + one query, page built as JSON in PG',
        service: { url: service, headers: serviceHeaders, paths: memberPages.map(([o, after]) => `/v1/organizations/${o}/members?limit=100${after ? `&cursor=${encodeCursor([after])}` : ''}`) },
        bare: { url: bare, paths: memberPages.map(([o, after]) => `/organizations/${o}/members?after=${after ?? ''}`) },
        // Logto pages by number: a page somewhere in the organization's first 30.
        logto: logtoTarget(memberPages.map(([o, after]) => `/api/organizations/${o}/users?page_size=100&page=${after ? 1 + Math.floor(Math.random() * 30) : 1}`)),
      },
      {
        name: 'GET /v1/organization-roles/:id/members (100)', target: '≥ 0.8×', bareLabel: 'express + one query, page built as JSON in PG',
        service: { url: service, headers: serviceHeaders, paths: rolePages.map(([r, after]) => `/v1/organization-roles/${r}/members?limit=100${after ? `&cursor=${encodeCursor([after.organization_id, after.user_id])}` : ''}`) },
        bare: { url: bare, paths: rolePages.map(([r, after]) => `/organization-roles/${r}/members?afterOrganization=${after?.organization_id ?? ''}&afterUser=${after?.user_id ?? ''}`) },
      },
      {
        name: 'POST /webhooks/logto', target: '≥ 0.8× throughput, p99 ≤ 1.5×', bareLabel: 'express raw body + HMAC + one INSERT … ON CONFLICT DO NOTHING',
        service: { url: service, webhook: { path: '/webhooks/logto', signingKey, templates, runId } },
        bare: { url: bare, webhook: { path: '/webhooks', signingKey, templates, runId } },
      },
    ];

    type Row = { name: string; target: string; bareLabel: string; service: LoadResult; bare: LoadResult; logto?: LoadResult;
      throughputRatio: number; p99Ratio: number; stored?: { service: number; bare: number; before?: number };
      drainedSeconds?: { service: number; before?: number };
      receiverOnly?: LoadResult & { throughputRatio: number; p99Ratio: number };
      before?: LoadResult; beforeRatio?: number };
    const results: Row[] = [];
    const bareJson = values.only ? null : load({ url: bare, paths: ['/json'] });
    if (bareJson) log(`bare express JSON: ${bareJson.throughput.toFixed(0)} req/s, p50 ${bareJson.p50} ms, p99 ${bareJson.p99} ms`);
    for (const scenario of scenarios) {
      if (values.only && !values.only.split(',').some((part) => scenario.name.includes(part))) continue;
      log(`${scenario.name}…`);
      const storedBy = async () => {
        // Requests still in flight when autocannon stops are stored but not counted: let them land.
        await new Promise((resolve) => setTimeout(resolve, 2000));
        const [counts] = (await db.query(`select
            (select count(*) from webhook_deliveries where payload->>'hookId' = $1)::int as service,
            (select count(*) from bench_bare_deliveries where payload->>'hookId' = $1)::int as bare`, [runId])).rows as { service: number; bare: number }[];
        return counts!;
      };
      // Deliveries the receiver alone stored earlier share the run id: only those stored from here on are the service's.
      const storedEarlier = scenario.service.webhook
        ? ((await db.query(`select count(*)::int as n from webhook_deliveries where payload->>'hookId' = $1`, [runId])).rows[0] as { n: number }).n
        : 0;
      if (!scenario.service.webhook && warmupSeconds > 0) {
        // Whoever is loaded first would otherwise pay for the scenario's cold pages and unoptimised code.
        for (const target of [scenario.service, scenario.bare, withBefore(scenario.service)]) {
          if (target) load({ ...target, durationSeconds: warmupSeconds });
        }
      }
      const serviceResult = load(scenario.service);
      const storedService = scenario.service.webhook ? (await storedBy()).service - storedEarlier : 0;
      // The worker applies what the load left in the inbox; nothing else may run beside the next load.
      // Timed on the inbox alone (a sync run the service started meanwhile is not the worker's time), then
      // waited for whole.
      const drained = scenario.service.webhook ? await quiet('service inbox', true) : undefined;
      if (scenario.service.webhook) await quiet('service inbox and sync runs');
      const bareResult = load(scenario.bare);
      const logtoResult = scenario.logto ? load(scenario.logto) : undefined;
      const beforeTarget = withBefore(scenario.service);
      const beforeResult = beforeTarget ? load(beforeTarget) : undefined;
      const beforeDrained = beforeTarget?.webhook ? await quiet('before build inbox', true) : undefined;
      if (beforeTarget?.webhook) await quiet('before build inbox and sync runs');
      const row: Row = {
        name: scenario.name, target: scenario.target, bareLabel: scenario.bareLabel, service: serviceResult, bare: bareResult,
        ...(logtoResult ? { logto: logtoResult } : {}),
        ...(beforeResult ? { before: beforeResult, beforeRatio: beforeResult.throughput / bareResult.throughput } : {}),
        throughputRatio: serviceResult.throughput / bareResult.throughput,
        p99Ratio: serviceResult.p99 / Math.max(bareResult.p99, 1),
      };
      if (scenario.service.webhook) {
        const after = await storedBy();
        // The previous build's deliveries share the run id: those stored after the service's run are its.
        row.stored = { service: storedService, bare: after.bare, ...(beforeResult ? { before: after.service - storedEarlier - storedService } : {}) };
        if (receiverOnly) {
          row.receiverOnly = { ...receiverOnly, throughputRatio: receiverOnly.throughput / bareResult.throughput, p99Ratio: receiverOnly.p99 / Math.max(bareResult.p99, 1) };
        }
        row.drainedSeconds = { service: drained!, ...(beforeDrained !== undefined ? { before: beforeDrained } : {}) };
      }
      results.push(row);
      log(`  service ${serviceResult.throughput.toFixed(0)} req/s (p99 ${serviceResult.p99} ms), bare ${bareResult.throughput.toFixed(0)} req/s (p99 ${bareResult.p99} ms): ${row.throughputRatio.toFixed(2)}×`);
    }
    await db.query(`delete from api_keys where name = $1`, [runId]);
    await db.end();

    // --- report
    const fixed = (value: number, digits = 0) => value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
    const cell = (result: LoadResult | undefined) =>
      result ? `${fixed(result.throughput)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms${result.non2xx || result.errors ? ` (${result.non2xx} non-2xx, ${result.errors} errors)` : ''}` : '—';
    const cpuCell = (result: LoadResult) => `${fixed(result.serverCpuMs ?? 0, 3)} / ${fixed(result.postgresCpuMs ?? 0, 3)}`;
    const lines = [
      `# Hot paths (${summary?.[0] ?? `${userCount} users`}; ${connections} connections, ${durationSeconds} s each; ${new Date().toISOString()})`,
      '',
      `Bare express JSON: ${cell(bareJson ?? undefined)}`,
      '',
      `| route | this service | bare reference | ratio (throughput / p99) | target | simulated Management API |${values.before ? ' before (--before build) | before ratio (throughput / p99) |' : ''}`,
      `| --- | --- | --- | --- | --- | --- |${values.before ? ' --- | --- |' : ''}`,
      ...results.map((row) =>
        `| \`${row.name}\` | ${cell(row.service)} | ${cell(row.bare)} (${row.bareLabel}) | ${fixed(row.throughputRatio, 2)}× / ${fixed(row.p99Ratio, 2)}× | ${row.target} | ${cell(row.logto)} |` +
        (row.before ? ` ${cell(row.before)} | ${fixed(row.beforeRatio!, 2)}× / ${fixed(row.before.p99 / Math.max(row.bare.p99, 1), 2)}× |` : '')),
      '',
      ...results.filter((row) => row.receiverOnly).map((row) =>
        `The service's receiver alone (its app and \`createWebhookRouter\`, no inbox worker behind it; the target is judged on the service as deployed, above): ` +
        `${cell(row.receiverOnly)}, ${fixed(row.receiverOnly!.throughputRatio, 2)}× / ${fixed(row.receiverOnly!.p99Ratio, 2)}× the bare route; ` +
        `CPU per request ${cpuCell(row.receiverOnly!)} ms.\n`),
      'CPU per request over each load (ms; server process / all PostgreSQL backends):',
      '',
      `| route | this service | bare reference |${values.before ? ' before |' : ''}`,
      `| --- | --- | --- |${values.before ? ' --- |' : ''}`,
      ...results.map((row) => `| \`${row.name}\` | ${cpuCell(row.service)} | ${cpuCell(row.bare)} |${row.before ? ` ${cpuCell(row.before)} |` : ''}`),
      '',
      ...results.filter((row) => row.stored).map((row) =>
        `Webhooks stored (requests in flight when the load stops are stored but not counted by autocannon: stored ≥ 2xx means none lost): service ${row.stored!.service} of ${row.service.ok} answered 2xx; bare ${row.stored!.bare} of ${row.bare.ok}` +
        (row.before ? `; before ${row.stored!.before} of ${row.before.ok}` : '') + '.' +
        ` The inbox worker applies deliveries on the same cores while they arrive; what was left when the load stopped took it` +
        ` ${row.drainedSeconds!.service.toFixed(1)} s more${row.drainedSeconds!.before !== undefined ? ` (before build: ${row.drainedSeconds!.before.toFixed(1)} s)` : ''}.`),
    ];
    const markdown = `${lines.join('\n')}\n`;
    process.stdout.write(`\n${markdown}`);
    mkdirSync('bench/results', { recursive: true });
    const base = `bench/results/hot-paths${values.label ? `-${values.label}` : ''}`;
    writeFileSync(`${base}.json`, `${JSON.stringify({ at: new Date().toISOString(), tenant: summary?.[0], connections, durationSeconds, bareJson, results }, null, 2)}\n`);
    writeFileSync(`${base}.md`, markdown);
    log(`written ${base}.json and ${base}.md`);
  } finally {
    // A clean stop with an empty inbox: the next run's services start without a reconcile at boot.
    await Promise.all(children.map((child) => new Promise<void>((resolve) => {
      child.removeAllListeners('exit');
      if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 30_000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.kill('SIGTERM');
    })));
    rmSync(work, { recursive: true, force: true });
  }
};
