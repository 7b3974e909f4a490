/**
 * `npm run bench -- sync-timeline [--scale 1] [--every 250] [--crawl]`: one baseline into an empty PostgreSQL
 * database (or, with `--crawl`, the pure crawl) against the simulated tenant, sampled every `--every` ms: the
 * CPU of the sync process, the simulator and every PostgreSQL process, the requests to Logto in flight and
 * started (by list), and the phase. Where the wall time beyond the crawl goes: stretches where the request
 * pipeline is not full while a core idles. Prints a table per phase and writes every sample as JSON.
 * `--reconcile`: a baseline first (not sampled), then the reconcile of the unchanged tenant sampled the same
 * way, on the default pool as the CLI's `reconcile`, and then the pure crawl of the same tenant (phase
 * `crawl`) in the same run: where a reconcile's wall time exceeds the crawl's.
 */
import { subscribe } from 'node:diagnostics_channel';
import type { ClientRequest } from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import { analyzeLoadedTables } from '../src/db/statistics.js';
import { silentLogger } from '../src/logger.js';
import { createLogtoClient } from '../src/logto/index.js';
import { baselineConnections, loadedStatistics } from '../src/jobs/full-sync-runner.js';
import { runFullSync } from '../src/sync/full-sync.js';
import { freshPostgres } from './fresh-database.js';
import { cpuSeconds, machineIdleSeconds, postgresPids } from './process-cpu.js';
import { shapeFor, startTenant } from './sync-tenant.js';
import { pureCrawl } from './sync.js';

type Sample = {
  t: number;
  phase: string;
  sync: number;
  simulator: number;
  postgres: number;
  idle: number;
  inFlight: number;
  started: Record<string, number>;
};

const listOf = (path: string): string => {
  if (/\/organizations\/[^/]+\/users\?/.test(path)) return 'members';
  if (/\/api\/users\?.*search/.test(path)) return 'findUsers';
  if (/\/api\/users\?/.test(path)) return 'users';
  if (/\/api\/organizations\?/.test(path)) return 'organizations';
  if (/\/api\/organization-roles\?/.test(path)) return 'roles';
  return 'other';
};

export const run = async (args: string[]): Promise<void> => {
  const { values } = parseArgs({ args, options: { scale: { type: 'string', default: '1' }, every: { type: 'string', default: '250' },
    crawl: { type: 'boolean', default: false }, reconcile: { type: 'boolean', default: false } } });
  const scale = Number(values.scale);
  const everyMs = Number(values.every);
  const sim = await startTenant(shapeFor(scale), 20);
  const database = await freshPostgres('las_bench_timeline');
  let inFlight = 0;
  let started: Record<string, number> = {};
  subscribe('http.client.request.start', (message) => {
    const request = (message as { request: ClientRequest }).request;
    inFlight += 1;
    const list = listOf(request.path);
    started[list] = (started[list] ?? 0) + 1;
    let ended = false;
    const end = () => {
      if (!ended) inFlight -= 1;
      ended = true;
    };
    request.once('response', (response) => response.once('end', end).once('close', end));
    request.once('close', end).once('error', end);
  });
  try {
    const config = loadConfig({ ...sim.env, LOGTO_RATE_LIMIT: '100000/10s', LOGTO_CONCURRENCY: '8', LOG_LEVEL: 'warn' });
    if (values.reconcile) {
      const syncing = database.separatePool(baselineConnections);
      await runFullSync({ database: syncing, logto: createLogtoClient(config.logto), logger: silentLogger }, { kind: 'baseline', trigger: 'timeline' });
      await analyzeLoadedTables(syncing.db);
      await syncing.close();
      global.gc?.();
      started = {};
    }
    let phase = 'start';
    const samples: Sample[] = [];
    // Per pid, so that a backend appearing or leaving between samples does not read as a jump.
    let postgresLast = cpuSeconds(postgresPids());
    let last = { sync: process.cpuUsage(), simulator: sim.cpuSeconds(), idle: machineIdleSeconds() };
    const begin = performance.now();
    // Requests in flight, read every 5 ms and averaged per sample (the pipeline is full at LOGTO_CONCURRENCY).
    let inFlightSum = 0;
    let inFlightReads = 0;
    const inFlightProbe = setInterval(() => {
      inFlightSum += inFlight;
      inFlightReads += 1;
    }, 5);
    const sample = () => {
      const now = { sync: process.cpuUsage(), simulator: sim.cpuSeconds(), idle: machineIdleSeconds() };
      const postgresNow = cpuSeconds(postgresPids());
      let postgres = 0;
      for (const [pid, seconds] of postgresNow) postgres += seconds - (postgresLast.get(pid) ?? seconds);
      const sync = (now.sync.user - last.sync.user + now.sync.system - last.sync.system) / 1e6;
      samples.push({ t: Math.round(performance.now() - begin), phase, sync, simulator: now.simulator - last.simulator, postgres, idle: now.idle - last.idle, inFlight: inFlightReads ? inFlightSum / inFlightReads : inFlight, started });
      started = {};
      inFlightSum = 0;
      inFlightReads = 0;
      last = now;
      postgresLast = postgresNow;
    };
    const timer = setInterval(sample, everyMs);
    const logto = createLogtoClient(config.logto);
    let phases: { phase: string; at: number }[] = [];
    const enter = (next: string) => {
      if (next === phase) return;
      phase = next;
      phases.push({ phase, at: Math.round(performance.now() - begin) });
    };
    if (values.crawl) {
      enter('crawl');
      await pureCrawl(logto);
    } else if (values.reconcile) {
      const result = await runFullSync({ database, logto, logger: silentLogger }, {
        kind: 'reconcile', trigger: 'timeline',
        onProgress: (progress) => enter(progress.phase === 'users' && progress.done === progress.total ? 'users-done' : progress.phase),
      });
      const reconciled = performance.now() - begin;
      console.log(`reconcile ${(reconciled / 1000).toFixed(2)} s: requests ${result.counts.requests}, rows ${result.counts.rowsWritten}`);
      enter('crawl');
      const crawl = await pureCrawl(createLogtoClient(config.logto));
      console.log(`crawl ${crawl.seconds.toFixed(2)} s: requests ${crawl.requests}; reconcile ÷ crawl ${(reconciled / 1000 / crawl.seconds).toFixed(2)}`);
    } else {
      // On the connections the CLI's `sync` gives a baseline, with the runner's ANALYZE.
      const syncing = database.separatePool(baselineConnections);
      const deps = { database: syncing, logto, logger: silentLogger };
      const statistics = loadedStatistics(deps, 'baseline');
      const result = await runFullSync(deps, {
        kind: 'baseline', trigger: 'timeline',
        onProgress: (progress) => {
          // Members are reported only once users are done: before that both lists are crawled.
          enter(progress.phase === 'users' && progress.done === progress.total ? 'users-done' : progress.phase);
        },
        // `analyze`: what is left of the ANALYZE once the removals are done (into an empty database it
        // overlaps them, `users` the member crawl).
        onLoaded: statistics.onLoaded,
        beforeFinish: async (counts) => {
          enter('analyze');
          await statistics.beforeFinish?.(counts);
        },
      });
      await syncing.close();
      console.log(`requests ${result.counts.requests}, rows ${result.counts.rowsWritten}`);
    }
    enter('end');
    clearInterval(timer);
    clearInterval(inFlightProbe);
    sample();
    const total = (performance.now() - begin) / 1000;
    phases = phases.filter((entry, index) => index === phases.length - 1 || entry.at !== phases[index + 1]!.at);
    console.log(`wall ${total.toFixed(2)} s; phases: ${phases.map((entry) => `${entry.phase}@${(entry.at / 1000).toFixed(2)}`).join(' ')}`);
    // Per phase: samples, CPU of each side, machine idle core-seconds, mean requests in flight, requests started.
    const byPhase = new Map<string, Sample[]>();
    for (const entry of samples) byPhase.set(entry.phase, [...(byPhase.get(entry.phase) ?? []), entry]);
    console.log('| phase | samples | sync CPU | simulator | postgres | idle core-s | mean in flight | requests |');
    console.log('|---|---|---|---|---|---|---|---|');
    const sum = (list: Sample[], key: 'sync' | 'simulator' | 'postgres' | 'idle') => list.reduce((total, entry) => total + entry[key], 0).toFixed(1);
    for (const [name, list] of byPhase) {
      const requests = list.reduce((total, entry) => total + Object.values(entry.started).reduce((a, b) => a + b, 0), 0);
      console.log(`| ${name} | ${list.length} | ${sum(list, 'sync')} | ${sum(list, 'simulator')} | ${sum(list, 'postgres')} | ${sum(list, 'idle')} | ${(list.reduce((total, entry) => total + entry.inFlight, 0) / list.length).toFixed(1)} | ${requests} |`);
    }
    const dir = process.env.TIMELINE_DIR ?? 'bench/results';
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `timeline-${values.crawl ? 'crawl' : values.reconcile ? 'reconcile' : 'baseline'}-scale${scale}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify({ scale, everyMs, total, phases, samples }));
    console.log(`written ${file}`);
  } finally {
    sim.close();
    await database.drop();
  }
};
