import { createHmac, randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { and, eq } from 'drizzle-orm';
import pg from 'pg';
import { organizationMemberRoles, organizationMembers, organizations, users } from '../db/schema.js';
import { loadConfig, type Config } from '../src/config.js';
import { openDatabase, runMigrations, type DatabaseHandle } from '../src/db/client.js';
import { startFullSync } from '../src/jobs/full-sync-runner.js';
import { silentLogger } from '../src/logger.js';
import { createLogtoClient } from '../src/logto/index.js';
import { startService, type Service } from '../src/service.js';
import { startSimulator } from './simulator.js';

/**
 * `npm run bench` (or `npm run bench -- overview`): figures for the performance notes, against a simulated tenant in a child process
 * (so the service's memory is its own). Prints a table per section; nothing here asserts.
 *
 *   --users 10000 --organizations 500      tenant size
 *   --rate 100000/10s                      the client's request budget (Logto Cloud asks 200/10s)
 *   --deliveries 3000 --changes 200 --requests 5000 --concurrency 32
 */
const options = {
  users: { type: 'string', default: '10000' },
  organizations: { type: 'string', default: '500' },
  rate: { type: 'string', default: '100000/10s' },
  deliveries: { type: 'string', default: '3000' },
  changes: { type: 'string', default: '200' },
  requests: { type: 'string', default: '5000' },
  concurrency: { type: 'string', default: '32' },
} as const;
let values: { [K in keyof typeof options]: string } = {} as never;

const percentile = (samples: number[], p: number) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};
const ms = (value: number) => `${value.toFixed(1)} ms`;
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
const print = (title: string, rows: [string, string | number][]) => {
  console.log(`\n## ${title}`);
  for (const [name, value] of rows) console.log(`${name.padEnd(44)} ${value}`);
};

const startTenant = (port: number, webhookUrl: string, signingKey: string) =>
  startSimulator(['--port', String(port), '--users', values.users!, '--organizations', values.organizations!,
    '--roles', '8', '--seed', '2026', '--resource', 'self', '--webhook-url', webhookUrl, '--signing-key', signingKey]);

const openBenchDatabase = async (): Promise<{ database: DatabaseHandle; label: string; cleanup(): Promise<void> }> => {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2000 });
  try {
    await admin.connect();
    await admin.query('drop database if exists las_bench with (force)');
    await admin.query('create database las_bench');
    await admin.end();
    const url = new URL(adminUrl);
    url.pathname = '/las_bench';
    const database = await openDatabase({ url: url.toString(), dataDir: '' });
    return { database, label: 'PostgreSQL', cleanup: () => database.close() };
  } catch {
    await admin.end().catch(() => {});
    const dataDir = mkdtempSync(join(tmpdir(), 'las-bench-'));
    const database = await openDatabase({ dataDir });
    return { database, label: 'PGlite (no PostgreSQL reachable)', cleanup: async () => { await database.close(); rmSync(dataDir, { recursive: true, force: true }); } };
  }
};

let agent = new Agent({ keepAlive: true });
const send = (url: string, options: { method?: string; headers?: Record<string, string>; body?: string }) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, agent }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    if (options.body) req.write(options.body);
    req.end();
  });

/** Runs `total` calls with `concurrency` in flight; returns per-call latencies and the wall time. */
const load = async (total: number, concurrency: number, call: (index: number) => Promise<unknown>) => {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const index = next++;
        const begun = performance.now();
        await call(index);
        latencies.push(performance.now() - begun);
      }
    }),
  );
  return { latencies, seconds: (performance.now() - started) / 1000 };
};

export const run = async (args: string[]): Promise<void> => {
  values = parseArgs({ args, options }).values as typeof values;
  agent = new Agent({ keepAlive: true, maxSockets: Number(values.concurrency) });
  const signingKey = randomBytes(24).toString('base64url');
  const port = 3900 + Math.floor(Math.random() * 50);
  const { database, label, cleanup } = await openBenchDatabase();
  await runMigrations(database);
  const sim = await startTenant(port + 100, `http://127.0.0.1:${port}/webhooks/logto`, signingKey);
  const apiKey = `las_bench_${randomBytes(18).toString('base64url')}`;
  const config: Config = loadConfig({
    ...sim.env,
    LOGTO_RATE_LIMIT: values.rate,
    LOGTO_CONCURRENCY: '16',
    PORT: String(port),
    HOST: '127.0.0.1',
    API_KEYS: `bench:write:${apiKey}`,
    ROLE_SWEEP_INTERVAL: '24h',
    LOG_LEVEL: 'warn',
  });
  let service: Service | null = null;
  try {
    console.log(`# logto-access-sync benchmark (${label}; tenant ${values.users} users, ${values.organizations} organizations; budget ${values.rate})`);
    service = await startService(config, { logger: silentLogger, initialSync: false, jobs: false, database });

    // --- full sync
    const rssBefore = process.memoryUsage().rss;
    let peakRss = rssBefore;
    let peakHeap = 0;
    const sampler = setInterval(() => {
      const usage = process.memoryUsage();
      peakRss = Math.max(peakRss, usage.rss);
      peakHeap = Math.max(peakHeap, usage.heapUsed);
    }, 25);
    const baseline = await (await startFullSync(service.deps, { kind: 'baseline', trigger: 'bench' })).done;
    clearInterval(sampler);
    const c = baseline.counts;
    print('Full sync (baseline)', [
      ['wall time', `${(c.durationMs / 1000).toFixed(2)} s`],
      ['requests to Logto', c.requests],
      ['… wall time at 200 requests / 10 s (Cloud)', `≥ ${(c.requests / 20).toFixed(0)} s`],
      ['users / organizations / roles', `${c.users} / ${c.organizations} / ${c.organizationRoles}`],
      ['memberships / member roles', `${c.memberships} / ${c.memberRoles}`],
      ['rows written (state + change log)', c.rowsWritten],
      ['peak RSS (process) / before', `${mib(peakRss)} / ${mib(rssBefore)}`],
      ['peak heap used', mib(peakHeap)],
    ]);

    // --- reconcile on an unchanged tenant, then with injected drift
    const unchanged = await (await startFullSync(service.deps, { kind: 'reconcile', trigger: 'bench' })).done;
    const logto = createLogtoClient(config.logto);
    // Silent drift: direct database edits the service was never told about.
    const sample = await database.db.select({ id: users.id }).from(users).limit(10);
    for (const { id } of sample) await database.db.update(users).set({ name: 'drifted' }).where(eq(users.id, id));
    const memberships = await database.db.select().from(organizationMembers).limit(10);
    let removedRoles = 0;
    for (const membership of memberships) {
      const where = and(eq(organizationMemberRoles.organizationId, membership.organizationId), eq(organizationMemberRoles.userId, membership.userId));
      removedRoles += await database.db.$count(organizationMemberRoles, where);
      await database.db
        .delete(organizationMembers)
        .where(and(eq(organizationMembers.organizationId, membership.organizationId), eq(organizationMembers.userId, membership.userId)));
    }
    const drifted = await (await startFullSync(service.deps, { kind: 'reconcile', trigger: 'bench' })).done;
    const report = (drifted.run.report as { drift: { totals: Record<string, number> } }).drift.totals;
    print('Reconcile', [
      ['wall time, unchanged tenant', `${(unchanged.counts.durationMs / 1000).toFixed(2)} s`],
      ['rows written, unchanged tenant', unchanged.counts.rowsWritten],
      ['requests, unchanged tenant', unchanged.counts.requests],
      ['drift injected', JSON.stringify({ stale: sample.length, missing: memberships.length, role_missing: removedRoles })],
      ['drift found', JSON.stringify(report)],
      ['wall time with drift', `${(drifted.counts.durationMs / 1000).toFixed(2)} s`],
    ]);

    // --- webhooks: accepted per second and time to answer
    const deliveries = Number(values.deliveries);
    // A real organization as data: processing applies it locally (nothing changes), without a call to Logto.
    const [organization] = await database.db.select().from(organizations).limit(1);
    const organizationId = organization!.id;
    const deliver = async (index: number) => {
      const body = JSON.stringify({
        event: 'Organization.Data.Updated', createdAt: new Date().toISOString(), userAgent: 'bench', ip: '127.0.0.1',
        path: `/organizations/${organizationId}`, method: 'PATCH', status: 200, params: { id: organizationId },
        matchedRoute: '/organizations/:id', data: organization!.raw, hookId: 'bench', nonce: index,
      });
      const signature = createHmac('sha256', signingKey).update(body).digest('hex');
      const response = await send(`${service!.url}/webhooks/logto`, {
        method: 'POST', body, headers: { 'content-type': 'application/json', 'logto-signature-sha-256': signature },
      });
      if (response.status >= 300) throw new Error(`webhook answered ${response.status}`);
    };
    const accepted = await load(deliveries, Number(values.concurrency), deliver);
    await service.drainInbox();
    const alone = await load(300, 1, (index) => deliver(deliveries + index));
    await service.drainInbox();
    print('Webhook receiver', [
      ['deliveries accepted', deliveries],
      ['accepted per second', (deliveries / accepted.seconds).toFixed(0)],
      [`time to answer p50 / p99 (${values.concurrency} clients)`, `${ms(percentile(accepted.latencies, 50))} / ${ms(percentile(accepted.latencies, 99))}`],
      ['time to answer p50 / p99 (one client)', `${ms(percentile(alone.latencies, 50))} / ${ms(percentile(alone.latencies, 99))}`],
    ]);

    // --- change in the tenant → visible in the database
    const changes = Number(values.changes);
    const visibility: number[] = [];
    const targets = await database.db.select({ id: users.id }).from(users).limit(changes);
    for (const [index, { id }] of targets.entries()) {
      const begun = performance.now();
      await logto.setUserSuspended(id, index % 2 === 0);
      for (;;) {
        const [row] = await database.db.select({ isSuspended: users.isSuspended }).from(users).where(eq(users.id, id));
        if (row?.isSuspended === (index % 2 === 0)) break;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      visibility.push(performance.now() - begun);
    }
    print('Change in Logto → visible in the database (webhook path)', [
      ['changes', changes],
      ['p50 / p99', `${ms(percentile(visibility, 50))} / ${ms(percentile(visibility, 99))}`],
    ]);

    // --- REST API
    const ids = await database.db.select({ userId: organizationMembers.userId, organizationId: organizationMembers.organizationId }).from(organizationMembers).limit(500);
    const requests = Number(values.requests);
    const headers = { authorization: `Bearer ${apiKey}` };
    for (const [title, path] of [
      ['GET /v1/access', (i: number) => `/v1/access?userId=${ids[i % ids.length]!.userId}&organizationId=${ids[i % ids.length]!.organizationId}`],
      ['GET /v1/users/:id/organizations', (i: number) => `/v1/users/${ids[i % ids.length]!.userId}/organizations`],
    ] as const) {
      const result = await load(requests, Number(values.concurrency), async (index) => {
        const response = await send(`${service!.url}${path(index)}`, { headers });
        if (response.status !== 200) throw new Error(`${title} answered ${response.status}`);
      });
      const single = await load(500, 1, async (index) => {
        await send(`${service!.url}${path(index)}`, { headers });
      });
      print(title, [
        ['requests', requests],
        ['p50 / p99, one client', `${ms(percentile(single.latencies, 50))} / ${ms(percentile(single.latencies, 99))}`],
        [`requests per second (${values.concurrency} clients)`, (requests / result.seconds).toFixed(0)],
        [`p50 / p99 (${values.concurrency} clients)`, `${ms(percentile(result.latencies, 50))} / ${ms(percentile(result.latencies, 99))}`],
      ]);
    }
  } finally {
    await service?.close();
    sim.child.kill('SIGTERM');
    await cleanup();
    agent.destroy();
  }
};

