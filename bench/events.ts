import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http, { type Server } from 'node:http';
import { loadavg } from 'node:os';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { createApp } from '../src/api/app.js';
import { loadConfig } from '../src/config.js';
import { startChangeFeed } from '../src/db/change-feed.js';
import { openPostgres, rows, runMigrations, type DatabaseHandle } from '../src/db/client.js';
import { lastChangeId } from '../src/db/access-events.js';
import { outboxBacklog } from '../src/db/outbox.js';
import { createDeliveryClient } from '../src/jobs/delivery-client.js';
import { createEventSender } from '../src/jobs/event-sender.js';
import { silentLogger } from '../src/logger.js';
import type { LogtoUser } from '../src/logto/index.js';
import { applyUsers } from '../src/sync/apply/index.js';
import { createEventSubscription } from '../src/sync/event-subscriptions.js';
import { cpuSeconds, cpuSpent, postgresPids } from './process-cpu.js';
import { createProfiler } from './profiling.js';

/**
 * `npm run bench -- events`: access events out.
 *  1. Latency: a change applied (committed by an apply function) → the subscriber receives its webhook, and an
 *     SSE client sees it; p50/p95, against two references measured in the same run: a bare HTTP POST to the
 *     same receiver, and a bare NOTIFY → LISTEN round trip on the same PostgreSQL.
 *  2. Fan-out: `--rate` changes/s for `--seconds`, to `--subscriptions` subscribers; the outbox backlog is
 *     sampled every second (it must not grow), against the receivers' bare request rate in the same run,
 *     posted through the sender's own HTTP client with `--concurrency` requests in flight (the deliveries
 *     the sender holds). The CPU the load costs is split between this process (apply, sender, API), the
 *     receivers and PostgreSQL. The drain after the load is bounded by `--drain-timeout` seconds: a sender
 *     that cannot catch up is reported as such (with the backlog left), never waited for forever.
 * The receivers run in a child process (bench/events/receivers.ts), as subscribers do in life.
 *
 *   --samples 200 --rate 1000 --seconds 10 --subscriptions 5 --users 5000 --drain-timeout 60 --concurrency 256 --label run
 * `--profile <dir>` writes a CPU profile of this process over the fan-out's load to `<dir>/events-fanout.cpuprofile`.
 * `--statements` times every statement this process sends during the load (round trip, by its text) and
 * lists the costliest: PostgreSQL here has no pg_stat_statements (it needs a server restart to load).
 * Results also go to `bench/results/events-<label>-<time>.{json,md}`.
 */
const parse = (args: string[]) =>
  parseArgs({
    args: args.filter((arg) => arg !== 'events'),
    options: {
      samples: { type: 'string', default: '200' },
      rate: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '10' },
      subscriptions: { type: 'string', default: '5' },
      users: { type: 'string', default: '5000' },
      'drain-timeout': { type: 'string', default: '60' },
      concurrency: { type: 'string', default: '256' },
      senders: { type: 'string', default: '1' },
      label: { type: 'string', default: 'run' },
      profile: { type: 'string', default: '' },
      statements: { type: 'boolean', default: false },
    },
  }).values;

const percentile = (samples: number[], p: number) => {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};
const ms = (value: number) => `${value.toFixed(1)} ms`;
const printed: Record<string, Record<string, string | number>> = {};
const print = (title: string, rows: [string, string | number][]) => {
  printed[title] = Object.fromEntries(rows);
  console.log(`\n## ${title}`);
  for (const [name, value] of rows) console.log(`${name.padEnd(56)} ${value}`);
};
const sleep = (time: number) => new Promise((resolve) => setTimeout(resolve, time));

const logtoUser = (index: number, version: number): LogtoUser =>
  ({
    id: `benchuser${index}`,
    username: `bench_${index}`,
    primaryEmail: null,
    primaryPhone: null,
    name: `Bench ${index} v${version}`,
    avatar: null,
    customData: {},
    identities: {},
    profile: {},
    lastSignInAt: null,
    createdAt: 1_700_000_000_000,
    updatedAt: 1_700_000_000_000 + version,
    applicationId: null,
    isSuspended: false,
    hasPassword: false,
  }) as unknown as LogtoUser;

/**
 * The subscribers, in a child process (bench/events/receivers.ts): `arrivals` holds when each event (by
 * change id) first reached receiver 0 while `track(true)`, on the wall clock shared by both processes.
 */
const startReceivers = async (count: number) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/events/receivers.ts', String(count)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const arrivals = new Map<number, number>();
  const counts = new Map<number, (requests: number) => void>();
  let nextCount = 0;
  const urls = await new Promise<string[]>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`receivers exited with ${code}`)));
    child.on('message', (message: { type: string; urls?: string[]; changeId?: number; at?: number; id?: number; requests?: number }) => {
      if (message.type === 'ready') resolve(message.urls!);
      else if (message.type === 'arrival' && !arrivals.has(message.changeId!)) arrivals.set(message.changeId!, message.at!);
      else if (message.type === 'count') counts.get(message.id!)?.(message.requests!);
    });
  });
  return {
    urls,
    arrivals,
    track: (on: boolean) => child.send({ type: 'track', on }),
    /** Requests answered so far by all receivers. */
    requests: () =>
      new Promise<number>((resolve) => {
        const id = nextCount++;
        counts.set(id, (requests) => {
          counts.delete(id);
          resolve(requests);
        });
        child.send({ type: 'count', id });
      }),
    pid: child.pid!,
    close: () => {
      child.kill('SIGTERM');
    },
  };
};

/** Milliseconds on the wall clock the receivers' process also reads (its arrivals are comparable). */
const wallNow = () => performance.timeOrigin + performance.now();

const openDatabase = async (): Promise<{ database: DatabaseHandle; url: string; cleanup(): Promise<void> }> => {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query('drop database if exists las_bench_events with (force)');
  await admin.query('create database las_bench_events');
  const url = new URL(adminUrl);
  url.pathname = '/las_bench_events';
  const database = openPostgres(url.toString(), { max: 20 });
  return {
    database,
    url: url.toString(),
    async cleanup() {
      await database.close();
      await admin.query('drop database if exists las_bench_events with (force)');
      await admin.end();
    },
  };
};

/**
 * Round-trip time and rows per statement text, for statements sent through node-postgres while `on`.
 * Wraps `pg.Client.prototype.query` (this process only); values are never recorded.
 */
const statementTracker = () => {
  const stats = new Map<string, { calls: number; ms: number; rows: number }>();
  let on = false;
  const original = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  const textOf = (first: unknown): string => {
    const text = typeof first === 'string' ? first : ((first as { text?: string } | null)?.text ?? '?');
    return text.replace(/\s+/g, ' ').trim().slice(0, 110);
  };
  const note = (text: string, started: number, result: unknown) => {
    const entry = stats.get(text) ?? { calls: 0, ms: 0, rows: 0 };
    entry.calls += 1;
    entry.ms += performance.now() - started;
    const counted = result as { rowCount?: number | null; rows?: unknown[] } | undefined;
    entry.rows += counted?.rowCount ?? counted?.rows?.length ?? 0;
    stats.set(text, entry);
  };
  (pg.Client.prototype as { query: unknown }).query = function (this: unknown, ...args: unknown[]) {
    if (!on) return original.apply(this, args);
    const text = textOf(args[0]);
    const started = performance.now();
    const last = args.length - 1;
    if (typeof args[last] === 'function') {
      const callback = args[last] as (error: unknown, result: unknown) => void;
      args[last] = (error: unknown, result: unknown) => {
        note(text, started, result);
        callback(error, result);
      };
      return original.apply(this, args);
    }
    const result = original.apply(this, args);
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<unknown>).then((value) => note(text, started, value), () => note(text, started, undefined));
    }
    return result;
  };
  return {
    start: () => {
      stats.clear();
      on = true;
    },
    stop: () => {
      on = false;
      return [...stats].map(([text, entry]) => ({ text, ...entry })).sort((a, b) => b.ms - a.ms);
    },
  };
};

export const run = async (args: string[]): Promise<void> => {
  const values = parse(args);
  const samples = Number(values.samples);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const subscriptionCount = Number(values.subscriptions);
  const userCount = Number(values.users);
  const drainTimeoutMs = Number(values['drain-timeout']) * 1000;
  const concurrency = Number(values.concurrency);
  const tracker = values.statements ? statementTracker() : null;
  const profiler = createProfiler({ cpuDir: values.profile });
  /** Drains the sender, but gives up after `drainTimeoutMs`: true when it finished. */
  const drainWithin = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      sender.drain().then(() => true, () => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), drainTimeoutMs))),
    ]);
    clearTimeout(timer);
    return finished;
  };
  const loadAverages: number[] = [];
  const loadSampler = setInterval(() => loadAverages.push(loadavg()[0]!), 1000);
  const { database, url: databaseUrl, cleanup } = await openDatabase();
  await runMigrations(database);
  const db = database.db;
  const context = () => ({ source: 'webhook' as const, observedAt: new Date() });
  const versions = new Array<number>(userCount).fill(0);
  const change = (indexes: number[]) =>
    applyUsers(
      db,
      indexes.map((index) => logtoUser(index, ++versions[index]!)),
      context(),
    );
  // The users exist before anyone subscribes: what follows are updates.
  for (let start = 0; start < userCount; start += 500) await change(Array.from({ length: Math.min(500, userCount - start) }, (_, i) => start + i));

  const readKey = 'bench-reader-0123456789abcdef';
  const config = loadConfig({
    LOGTO_BASE_URL: 'http://logto.invalid',
    LOGTO_CLIENT_ID: 'bench',
    LOGTO_CLIENT_SECRET: 'bench',
    API_KEYS: `bench:read:${readKey}`,
    EVENT_SUBSCRIPTIONS_ALLOW_PRIVATE_URLS: 'true',
    // No baseline sync runs here: the API would answer the stream with 503 until one had.
    SERVE_BEFORE_FIRST_SYNC: 'true',
  });
  // `--senders` > 1: that many senders in this process, sharing the outbox as replicas do, each holding
  // `--concurrency` / senders deliveries (their claims run side by side).
  const senders = Array.from({ length: Math.max(1, Number(values.senders)) }, () =>
    createEventSender({ db, logger: silentLogger }, { allowPrivateUrls: true, pollIntervalMs: 500, concurrency: Math.ceil(concurrency / Math.max(1, Number(values.senders))) }),
  );
  const sender = {
    start: () => senders.forEach((each) => each.start()),
    stop: async () => void (await Promise.all(senders.map((each) => each.stop()))),
    wake: () => senders.forEach((each) => each.wake()),
    drain: async () => void (await Promise.all(senders.map((each) => each.drain()))),
  };
  const feed = await startChangeFeed(database);
  feed.subscribe({ wake: () => sender.wake(), close: () => {} });
  const unavailable = async () => {
    throw new Error('not in this bench');
  };
  const app = createApp({
    db,
    config,
    logger: silentLogger,
    events: { wake: () => sender.wake(), feed },
    actions: {
      startReconcile: unavailable,
      retryDeadLetter: unavailable,
      nextReconcileAt: () => null,
      provision: {
        createUser: unavailable,
        setUserSuspended: unavailable,
        addMember: unavailable,
        addMembers: unavailable,
        removeMember: unavailable,
        grantRole: unavailable,
        grantRoles: unavailable,
        setRoles: unavailable,
        revokeRole: unavailable,
      },
    },
  });
  const server = await new Promise<Server>((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  const apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const receivers = await startReceivers(subscriptionCount);
  sender.start();

  // SSE client: notes when each change id is seen.
  const streamArrivals = new Map<number, number>();
  let streamFailure: string | null = null;
  const stream = http.get(`${apiUrl}/v1/changes/stream`, { headers: { authorization: `Bearer ${readKey}` } }, (response) => {
    if (response.statusCode !== 200) streamFailure = `the stream answered HTTP ${response.statusCode}`;
    response.setEncoding('utf8');
    let buffer = '';
    response.on('data', (chunk: string) => {
      const now = wallNow();
      buffer += chunk;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const match = /^id: (\d+)$/m.exec(buffer.slice(0, end));
        if (match && !streamArrivals.has(Number(match[1]))) streamArrivals.set(Number(match[1]), now);
        buffer = buffer.slice(end + 2);
      }
    });
    response.on('error', () => {});
  });
  stream.on('error', () => {});

  try {
    // ---- references, same run ----
    // The sender's own HTTP client, as many requests in flight as the sender holds deliveries.
    const client = createDeliveryClient({ timeoutMs: 15_000, connectionsPerOrigin: 32, allowPrivateUrls: true });
    const post = async (target: string) => {
      await client.post(target, '{"type":"reference"}', { 'content-type': 'application/json' });
    };
    const bareHttp: number[] = [];
    for (let i = 0; i < samples; i += 1) {
      const started = performance.now();
      await post(receivers.urls[0]!);
      bareHttp.push(performance.now() - started);
    }
    const listener = new pg.Client({ connectionString: databaseUrl });
    const notifier = new pg.Client({ connectionString: databaseUrl });
    await Promise.all([listener.connect(), notifier.connect()]);
    await listener.query('listen bench_reference');
    const bareNotify: number[] = [];
    for (let i = 0; i < samples; i += 1) {
      const started = performance.now();
      const heard = new Promise<void>((resolve) => listener.once('notification', () => resolve()));
      await notifier.query(`select pg_notify('bench_reference', '${i}')`);
      await heard;
      bareNotify.push(performance.now() - started);
    }
    await Promise.all([listener.end(), notifier.end()]);

    // ---- 1. latency: one subscription, one change at a time ----
    await createEventSubscription(db, { url: receivers.urls[0]! }, { allowPrivateUrls: true });
    receivers.track(true);
    await sleep(300);
    const toWebhook: number[] = [];
    const toStream: number[] = [];
    for (let i = 0; i < samples; i += 1) {
      if (streamFailure) throw new Error(streamFailure);
      await change([i % userCount]);
      const committed = wallNow();
      // The only writer in this phase: the newest change is the one just applied.
      const id = await lastChangeId(db);
      for (let waited = 0; waited < 5000; waited += 1) {
        if (streamArrivals.has(id) && receivers.arrivals.has(id)) break;
        await sleep(1);
      }
      const webhookAt = receivers.arrivals.get(id);
      const streamAt = streamArrivals.get(id);
      if (webhookAt !== undefined) toWebhook.push(webhookAt - committed);
      if (streamAt !== undefined) toStream.push(streamAt - committed);
      await sleep(5);
    }
    print('Latency: change committed → received (one subscription, one change at a time)', [
      ['samples', `${toWebhook.length} webhooks, ${toStream.length} stream events of ${samples}`],
      ['webhook received p50 / p95', `${ms(percentile(toWebhook, 50))} / ${ms(percentile(toWebhook, 95))}`],
      ['SSE event seen p50 / p95', `${ms(percentile(toStream, 50))} / ${ms(percentile(toStream, 95))}`],
      ['reference: bare HTTP POST to the receiver p50 / p95', `${ms(percentile(bareHttp, 50))} / ${ms(percentile(bareHttp, 95))}`],
      ['reference: bare NOTIFY → LISTEN p50 / p95', `${ms(percentile(bareNotify, 50))} / ${ms(percentile(bareNotify, 95))}`],
      ['webhook p95 / (bare POST + NOTIFY p95)', `${(percentile(toWebhook, 95) / (percentile(bareHttp, 95) + percentile(bareNotify, 95))).toFixed(1)}×`],
      ['SSE p95 / bare NOTIFY p95', `${(percentile(toStream, 95) / percentile(bareNotify, 95)).toFixed(1)}×`],
      ['target: p95 ≤ 100 ms', percentile(toWebhook, 95) <= 100 && percentile(toStream, 95) <= 100 ? 'met' : 'not met'],
    ]);

    // ---- 2. fan-out ----
    receivers.track(false);
    for (const url of receivers.urls.slice(1)) await createEventSubscription(db, { url }, { allowPrivateUrls: true });
    if (!(await drainWithin())) throw new Error('the sender did not drain the latency phase');
    const delivered = () => receivers.requests();
    // Backends report their table counts about a second after they go idle: read after a pause.
    const outboxWrites = async () => {
      const [row] = await rows<{ inserted: string; updated: string; hot: string; heap: string; indexes: string }>(
        db,
        sql`select n_tup_ins as inserted, n_tup_upd as updated, n_tup_hot_upd as hot,
                   pg_relation_size('event_outbox') as heap, pg_indexes_size('event_outbox') as indexes
            from pg_stat_user_tables where relid = 'event_outbox'::regclass`,
      );
      return { inserted: Number(row!.inserted), updated: Number(row!.updated), hot: Number(row!.hot), heap: Number(row!.heap), indexes: Number(row!.indexes) };
    };
    const totalBacklog = async () => (await outboxBacklog(db)).reduce((sum, entry) => sum + entry.open, 0);
    const sentBefore = await delivered();
    const backlogAtStart = await totalBacklog();
    const backlogSamples: number[] = [];
    let next = 0;
    let applied = 0;
    const tickMs = 100;
    const perTick = Math.max(1, Math.round((rate * tickMs) / 1000));
    await sleep(1200);
    const writesBefore = await outboxWrites();
    await profiler.start();
    tracker?.start();
    const cpuBefore = { bench: process.cpuUsage(), receivers: cpuSeconds([receivers.pid]), postgres: cpuSeconds(postgresPids()) };
    const started = performance.now();
    let lastSample = started;
    let lagging = 0;
    // The changes come on a fixed schedule, `perTick` every `tickMs` from the start: a tick that comes late
    // applies every change due by then in one batch (as the inbox worker applies the deliveries in hand
    // together), so a slow apply does not lower the rate the sender is offered.
    while (performance.now() - started < seconds * 1000) {
      const tick = Math.floor((performance.now() - started) / tickMs);
      const indexes = Array.from({ length: (tick + 1) * perTick - applied }, () => next++ % userCount);
      if (indexes.length > 0) await change(indexes);
      applied += indexes.length;
      if (performance.now() - lastSample >= 1000) {
        lastSample = performance.now();
        backlogSamples.push(await totalBacklog());
      }
      const nextTickAt = started + (tick + 1) * tickMs;
      if (performance.now() < nextTickAt) await sleep(nextTickAt - performance.now());
      else lagging += 1;
    }
    const loadSeconds = (performance.now() - started) / 1000;
    const sentDuringLoad = (await delivered()) - sentBefore;
    const benchCpu = process.cpuUsage(cpuBefore.bench);
    const cpuLoad = {
      bench: (benchCpu.user + benchCpu.system) / 1e6,
      receivers: cpuSpent(cpuBefore.receivers, cpuSeconds([receivers.pid])),
      postgres: cpuSpent(cpuBefore.postgres, cpuSeconds(postgresPids())),
    };
    const statementStats = tracker?.stop() ?? [];
    await profiler.stop('events-fanout');
    const backlogAtEnd = await totalBacklog();
    // The drain sends what the load left, with nothing applied beside it: the sender's own cost per delivery.
    const cpuBeforeDrain = { bench: process.cpuUsage(), receivers: cpuSeconds([receivers.pid]), postgres: cpuSeconds(postgresPids()) };
    const drainStarted = performance.now();
    const drained = await drainWithin();
    const drainSeconds = (performance.now() - drainStarted) / 1000;
    const drainBenchCpu = process.cpuUsage(cpuBeforeDrain.bench);
    const cpuDrain = {
      bench: (drainBenchCpu.user + drainBenchCpu.system) / 1e6,
      receivers: cpuSpent(cpuBeforeDrain.receivers, cpuSeconds([receivers.pid])),
      postgres: cpuSpent(cpuBeforeDrain.postgres, cpuSeconds(postgresPids())),
    };
    const backlogLeft = drained ? 0 : await totalBacklog();
    const sent = (await delivered()) - sentBefore;
    const sentDuringDrain = sent - sentDuringLoad;
    await sleep(1200);
    const writesAfter = await outboxWrites();
    const writes = {
      inserted: writesAfter.inserted - writesBefore.inserted,
      updated: writesAfter.updated - writesBefore.updated,
      hot: writesAfter.hot - writesBefore.hot,
    };
    const firstHalf = backlogSamples.slice(0, Math.ceil(backlogSamples.length / 2));
    const secondHalf = backlogSamples.slice(Math.ceil(backlogSamples.length / 2));
    const mean = (list: number[]) => list.reduce((sum, value) => sum + value, 0) / Math.max(1, list.length);

    // Reference: how many bare POSTs/s the same receivers take from this process, through the sender's client,
    // as many in flight as the sender holds.
    const referenceCount = Math.max(2_000, Math.min(20_000, sent));
    let issued = 0;
    const referenceStarted = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (issued < referenceCount) {
          const index = issued++;
          await post(receivers.urls[index % receivers.urls.length]!);
        }
      }),
    );
    const referenceRate = referenceCount / ((performance.now() - referenceStarted) / 1000);
    await client.close();

    const deliveryRate = sentDuringLoad / loadSeconds;
    // Growth: the backlog at the end of the load exceeds what one second of fan-out leaves in flight.
    const grew = backlogAtEnd > backlogAtStart + rate * subscriptionCount;
    print(`Fan-out: ${rate} changes/s for ${seconds} s to ${subscriptionCount} subscriptions`, [
      ['changes applied (achieved rate)', `${applied} (${(applied / loadSeconds).toFixed(0)}/s${lagging ? `, ${lagging} ticks late` : ''})`],
      ['deliveries needed (changes × subscriptions)', applied * subscriptionCount],
      ['deliveries sent during the load (rate)', `${sentDuringLoad} (${deliveryRate.toFixed(0)}/s)`],
      ['deliveries sent in all (rate over load + drain)', `${sent} (${(sent / (loadSeconds + drainSeconds)).toFixed(0)}/s)`],
      ['backlog at start → end of the load', `${backlogAtStart} → ${backlogAtEnd} (${grew ? 'grew' : 'did not grow'})`],
      ['backlog sampled each second', backlogSamples.join(' ')],
      ['backlog mean, first half → second half', `${mean(firstHalf).toFixed(0)} → ${mean(secondHalf).toFixed(0)}`],
      ['drain after the load stopped', drained ? `${drainSeconds.toFixed(2)} s` : `gave up after ${drainSeconds.toFixed(0)} s, ${backlogLeft} left`],
      ['reference: bare POSTs/s to the receivers (sender\'s client, same in flight)', `${referenceRate.toFixed(0)} (${concurrency} in flight)`],
      ['deliveries/s sent during the load ÷ bare POSTs/s', (deliveryRate / referenceRate).toFixed(2)],
      ['deliveries/s needed ÷ bare POSTs/s', ((rate * subscriptionCount) / referenceRate).toFixed(2)],
      [
        'CPU during the load, s per s: bench process (apply + sender + API) / receivers / PostgreSQL',
        [cpuLoad.bench, cpuLoad.receivers, cpuLoad.postgres].map((used) => (used / loadSeconds).toFixed(2)).join(' / '),
      ],
      [
        'CPU per delivery sent during the load, ms: bench process / receivers / PostgreSQL',
        [cpuLoad.bench, cpuLoad.receivers, cpuLoad.postgres].map((used) => ((used * 1000) / Math.max(1, sentDuringLoad)).toFixed(3)).join(' / '),
      ],
      [
        'drain (sender alone): deliveries, rate, CPU per delivery ms: bench process / receivers / PostgreSQL',
        `${sentDuringDrain}, ${(sentDuringDrain / Math.max(0.001, drainSeconds)).toFixed(0)}/s, ` +
          [cpuDrain.bench, cpuDrain.receivers, cpuDrain.postgres].map((used) => ((used * 1000) / Math.max(1, sentDuringDrain)).toFixed(3)).join(' / '),
      ],
      [
        'outbox rows inserted / updated / HOT-updated (load + drain)',
        `${writes.inserted} / ${writes.updated} / ${writes.hot}`,
      ],
      ['HOT share of outbox updates', writes.updated === 0 ? 'n/a' : `${((100 * writes.hot) / writes.updated).toFixed(1)} %`],
      ['outbox updates per delivery sent', (writes.updated / Math.max(1, sent)).toFixed(2)],
      [
        'outbox table / indexes after the drain, MiB',
        `${(writesAfter.heap / 2 ** 20).toFixed(1)} / ${(writesAfter.indexes / 2 ** 20).toFixed(1)}`,
      ],
      ['load average (1 min) during the run, min / max', `${Math.min(...loadAverages).toFixed(2)} / ${Math.max(...loadAverages).toFixed(2)}`],
      ['target: no backlog growth', !grew && drained && drainSeconds < 2 ? 'met' : 'not met'],
    ]);
    if (tracker) {
      print(
        'Statements during the load (round trip in this process, by text; costliest 15)',
        statementStats.slice(0, 15).map((entry) => [
          entry.text,
          `${entry.calls} calls, ${entry.ms.toFixed(0)} ms, ${(entry.ms / entry.calls).toFixed(2)} ms/call, ${entry.rows} rows`,
        ]),
      );
    }
    console.log('\n(the machine is shared: compare each figure with its reference from the same run)');
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    mkdirSync('bench/results', { recursive: true });
    const base = `bench/results/events-${values.label}-${stamp}`;
    writeFileSync(`${base}.json`, JSON.stringify({ label: values.label, options: values, results: printed }, null, 2));
    const markdown = [`# events bench (${values.label})`, '', `\`npm run bench -- events ${args.join(' ')}\``];
    for (const [title, rows] of Object.entries(printed)) {
      markdown.push('', `## ${title}`, '', '| figure | value |', '| --- | --- |');
      for (const [name, value] of Object.entries(rows)) markdown.push(`| ${name} | ${value} |`);
    }
    writeFileSync(`${base}.md`, `${markdown.join('\n')}\n`);
    console.log(`\nresults: ${base}.json, ${base}.md`);
  } finally {
    clearInterval(loadSampler);
    stream.destroy();
    await feed.close();
    await sender.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    receivers.close();
    await cleanup();
  }
};

