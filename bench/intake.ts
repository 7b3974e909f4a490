import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants as perfConstants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { inArray } from 'drizzle-orm';
import pg from 'pg';
import { organizationMembers, users } from '../db/schema.js';
import { loadConfig, type Config } from '../src/config.js';
import { openDatabase, runMigrations, type DatabaseHandle } from '../src/db/client.js';
import { startFullSync } from '../src/jobs/full-sync-runner.js';
import { silentLogger } from '../src/logger.js';
import { startService, type Service } from '../src/service.js';
import { machineIdleSeconds } from './process-cpu.js';
import { createProfiler } from './profiling.js';
import { startSimulator } from './simulator.js';

/**
 * `npm run bench -- intake [options]`: the inbox worker (issue 10). Against a simulated tenant in a child
 * process, on PostgreSQL (database `las_bench_intake`), with arrivals sent by another child process:
 *
 * 1. drain: `--deliveries` queued `User.Data.Updated` carrying full user data, released at once;
 * 2. visibility: while `--arrival-rate`/s such deliveries arrive for `--arrival-seconds`, users'
 *    suspension is flipped in the tenant (its webhook goes to the service), `--probe-rate` changes a second
 *    on distinct users of `--changes`, several in flight, each timed from the tenant's stamp of the change
 *    until `GET /v1/access` says so, by a process of their own (`bench/intake-prober.ts`); the same
 *    measured with no arrivals is the reference;
 * 3. partial: `--partial` queued custom-data style deliveries for distinct users under
 *    `--rate` (default 200/10s), against the ideal ⌈n/100⌉ requests at the budget's pace;
 * 4. sign-ins: `--signin-rate`/s `PostSignIn` for `--signin-seconds`, backlog `--after-seconds` later.
 *
 * They run in that order on one service and one database, each after what the earlier ones left (inbox
 * history, the budget's window); `--order` runs them in another (e.g. `--order signin,partial`: the
 * partial drain after a burst of sign-ins) and `--skip` leaves some out.
 *
 * Arrivals come from `--sender-processes` processes (default 2) with bodies signed in advance, so that the
 * offered rate is the one asked for. `--stall <at>:<ms>[,…]` holds the service's event loop busy for `ms`
 * at `at` ms into the loaded window, and `--hog <at>:<ms>:<processes>[,…]` runs that many busy processes
 * then (the machine's cores taken by other work): a disturbance put where the per-second table shows
 * whether, and how fast, visibility recovers from it. `--profile <dir>` writes a CPU profile of each scenario there,
 * `--heap-profile <dir>` a sampling heap profile of everything each one allocated (with `--heap-survivors`, only
 * what survived a scavenge: what each one copies, so what its pause costs), and `--trace-gc` prints
 * V8's line per garbage collection during each one (`--trace-gc-nvp`: bytes allocated and promoted, pauses).
 * `--scale` multiplies every count and duration. Results also go to `bench/results/intake-<label>-<time>.{json,md}`.
 */
export const run = async (argv: string[]): Promise<void> => {
  const { values } = parseArgs({
    args: argv,
    options: {
      scale: { type: 'string', default: '1' },
      users: { type: 'string', default: '20000' },
      organizations: { type: 'string', default: '200' },
      deliveries: { type: 'string', default: '20000' },
      'arrival-rate': { type: 'string', default: '1000' },
      'arrival-seconds': { type: 'string', default: '10' },
      changes: { type: 'string', default: '200' },
      'probe-rate': { type: 'string', default: '16' },
      partial: { type: 'string', default: '20000' },
      rate: { type: 'string', default: '200/10s' },
      'signin-rate': { type: 'string', default: '100' },
      'signin-seconds': { type: 'string', default: '60' },
      'after-seconds': { type: 'string', default: '60' },
      'time-limit': { type: 'string', default: '180' },
      label: { type: 'string', default: 'run' },
      skip: { type: 'string', default: '' },
      order: { type: 'string', default: 'drain,visibility,partial,signin' },
      'sender-processes': { type: 'string', default: '2' },
      profile: { type: 'string', default: '' },
      'heap-profile': { type: 'string', default: '' },
      'heap-survivors': { type: 'boolean', default: false },
      'trace-gc': { type: 'boolean', default: false },
      'poll-ms': { type: 'string', default: '25' },
      stall: { type: 'string', default: '' },
      hog: { type: 'string', default: '' },
    },
  });
  const scale = Number(values.scale);
  const count = (name: keyof typeof values) => Math.max(1, Math.round(Number(values[name]) * scale));
  const skip = new Set((values.skip ?? '').split(',').filter(Boolean));
  const order = (values.order ?? '').split(',').filter(Boolean);
  const tenantUsers = count('users');
  const results: Record<string, Record<string, number | string>> = {};
  const say = (title: string, rows: Record<string, number | string>) => {
    results[title] = rows;
    console.log(`\n## ${title}`);
    for (const [name, value] of Object.entries(rows)) console.log(`${name.padEnd(52)} ${value}`);
  };

  /**
   * With `--profile <dir>`: a CPU profile of this process (service and worker) per scenario, not of the setup.
   * With `--heap-profile <dir>`: a sampling heap profile of each scenario counting every allocation, those
   * collected since included (what the scenario allocated, not what it left), and its total. With
   * `--heap-survivors` as well, only what outlived a scavenge: under 1,000 arrivals/s each scavenge copied
   * ~16 MB and paused the loop 14-50 ms, the largest single wait in a slow sample (vis notes, round 33).
   */
  const profiler = createProfiler({ cpuDir: values.profile, heapDir: values['heap-profile'], survivors: values['heap-survivors'] });
  const allocatedWord = values['heap-survivors'] ? 'that survived a scavenge' : 'allocated';
  /** Bytes the last profiled scenario allocated (sampled), with `--heap-profile`. */
  let lastAllocated = Number.NaN;
  const profiled = async <T>(name: string, scenario: () => Promise<T>): Promise<T> => {
    if (values['trace-gc']) {
      // V8's line per collection (allocated, promoted, pause...) for this scenario only, between two marks.
      writeSync(1, `# trace-gc ${name} start\n`);
      setFlagsFromString('--trace-gc-nvp');
      try {
        return await profiledCpuAndHeap(name, scenario);
      } finally {
        setFlagsFromString('--no-trace-gc-nvp');
        writeSync(1, `# trace-gc ${name} end\n`);
      }
    }
    return profiledCpuAndHeap(name, scenario);
  };
  const profiledCpuAndHeap = async <T>(name: string, scenario: () => Promise<T>): Promise<T> => {
    await profiler.start();
    try {
      return await scenario();
    } finally {
      lastAllocated = await profiler.stop(`intake-${name}`);
    }
  };
  /** The old generation's bytes in use (old space and large objects), as they stand: no collection forced. */
  const oldGeneration = () =>
    getHeapSpaceStatistics()
      .filter((space) => space.space_name === 'old_space' || space.space_name === 'large_object_space')
      .reduce((sum, space) => sum + space.space_used_size, 0);
  const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

  const signingKey = randomBytes(24).toString('base64url');
  const port = 4600 + Math.floor(Math.random() * 300);
  const scratch = mkdtempSync(join(tmpdir(), 'las-intake-'));
  const children: ChildProcess[] = [];
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query('drop database if exists las_bench_intake with (force)');
  await admin.query('create database las_bench_intake');
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = '/las_bench_intake';
  const database: DatabaseHandle = await openDatabase({ url: url.toString(), dataDir: '' });
  await runMigrations(database);
  const db = database.db;
  const raw = new pg.Pool({ connectionString: url.toString(), max: 2 });

  const sim = await startSimulator([
    '--port', String(port + 1), '--users', String(tenantUsers), '--organizations', values.organizations!, '--roles', '6',
    '--seed', '2027', '--resource', 'self', '--webhook-url', `http://127.0.0.1:${port}/webhooks/logto`, `--signing-key=${signingKey}`,
  ]);
  children.push(sim.child);
  const simEnv = sim.env;
  const apiKey = `las_bench_${randomBytes(18).toString('base64url')}`;
  const configEnv = (rate: string): Record<string, string> => ({
    ...simEnv, LOGTO_RATE_LIMIT: rate, PORT: String(port), HOST: '127.0.0.1', API_KEYS: `bench:write:${apiKey}`,
    ROLE_SWEEP_INTERVAL: '24h', LOG_LEVEL: 'warn',
  });
  const configFor = (rate: string): Config => loadConfig(configEnv(rate));

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  /**
   * Deliveries not yet settled. `outcome is null` is the predicate of the inbox's open-row index: the test
   * on status had no index, so each count scanned the whole inbox, history and dead row versions included.
   */
  const unsettled = async () =>
    Number((await raw.query('select count(*)::int as n from webhook_deliveries where outcome is null')).rows[0].n);
  /**
   * Whether any delivery is still open: the first entry of the open-row index, a few buffers however large
   * the inbox. The drain used to poll a count every 25 ms, a sequential scan of the whole inbox that
   * PostgreSQL ran in three processes: after the drain and visibility scenarios (some 40,000 rows and as
   * many dead versions, no autovacuum on the bench's server) each took 110-130 ms, back to back, and they
   * took the cores from the worker being timed (11.2 s of polling in a 13.7 s partial drain).
   */
  const anyOpen = async () =>
    Boolean((await raw.query('select exists (select 1 from webhook_deliveries where outcome is null) as open')).rows[0].open);
  /**
   * Connections PostgreSQL has accepted for the bench's database so far (`pg_stat_database.sessions`, every
   * client's: the service's pools, the prober's listener, this process's own). A connection opened inside a
   * measured window costs its request a backend's start and cold caches, where a kept one costs nothing.
   */
  const sessionsOpened = async () =>
    Number((await raw.query("select sessions::int as n from pg_stat_database where datname = current_database()")).rows[0].n);
  const waitDrained = async (limitMs: number) => {
    const started = performance.now();
    for (;;) {
      if (!(await anyOpen())) return { seconds: (performance.now() - started) / 1000, left: 0 };
      if (performance.now() - started > limitMs) return { seconds: (performance.now() - started) / 1000, left: await unsettled() };
      // Even this poll walks the index entries of the rows settled so far (~11 ms each late in a partial
      // drain after the other scenarios): every 50 ms it takes less of the cores than every 25.
      await sleep(50);
    }
  };
  /**
   * Row updates of the inbox so far (all, and HOT: written beside the old version with no new index
   * entry), once every backend has reported them: at least `expected` updates, or no change for 11 s (a
   * backend that reported less than a second ago reports the rest after 10 s idle).
   */
  const inboxUpdates = async (expected = Number.POSITIVE_INFINITY) => {
    const read = async () =>
      (await raw.query(
        "select n_tup_upd::int as all, n_tup_hot_upd::int as hot from pg_stat_user_tables where relname = 'webhook_deliveries'",
      )).rows[0] as { all: number; hot: number };
    let last = await read();
    let stableSince = performance.now();
    while (last.all < expected && performance.now() - stableSince < 11_000) {
      await sleep(500);
      const row = await read();
      if (row.all !== last.all || row.hot !== last.hot) stableSince = performance.now();
      last = row;
    }
    return last;
  };
  let updatesSoFar: { all: number; hot: number } | null = null;
  const updatesSince = (before: { all: number; hot: number }, after: { all: number; hot: number }) =>
    `${after.all - before.all} / ${after.hot - before.hot}`;
  /** Stores deliveries not yet due, then makes them all due in one statement: a queue released at once. */
  const enqueueHeld = async (payloads: Record<string, unknown>[], tag: string) => {
    for (let start = 0; start < payloads.length; start += 2000) {
      const slice = payloads.slice(start, start + 2000);
      await raw.query(
        `insert into webhook_deliveries (dedup_key, content_hash, event, channel, payload, next_attempt_at)
         select $1 || ord, md5(p::text), p->>'event', 'logto', p, now() + interval '1 day'
         from jsonb_array_elements($2::jsonb) with ordinality as t(p, ord)`,
        [`${tag}-${start}-`, JSON.stringify(slice)],
      );
    }
  };
  const release = () => raw.query("update webhook_deliveries set next_attempt_at = now() where status = 'pending'");
  /** Runs a bench script in a process of its own with its plan as a JSON file; resolves with the last JSON line it prints. */
  const runChild = <T>(script: string, plan: Record<string, unknown>): Promise<T> => {
    const file = join(scratch, `plan-${Math.random()}.json`);
    writeFileSync(file, JSON.stringify(plan));
    const child = spawn(process.execPath, ['--import', 'tsx', script, file], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    return new Promise<T>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      // 'close', not 'exit': the last of a large line can still be in the pipe when the process has exited.
      child.once('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1)!) as T) : reject(new Error(`${script} exited ${code}`))));
    });
  };
  type Sent = { sent: number; accepted: number; seconds: number; sendingSeconds: number; lateP50: number; lateP95: number };
  /** Arrivals from `--sender-processes` processes, their bodies signed in advance; the totals of all of them. */
  const sender = (plan: Record<string, unknown>): { startAt: number; done: Promise<Sent> } => {
    const parts = Math.max(1, Number(values['sender-processes']));
    const startAt = Date.now() + 1500 + parts * 500;
    const one = (part: number) =>
      runChild<Sent>('bench/intake-sender.ts', {
        url: `http://127.0.0.1:${port}/webhooks/logto`, signingKey, usersFile: join(scratch, 'users.json'), startAt, part, parts, ...plan,
      });
    const done = Promise.all(Array.from({ length: parts }, (_, part) => one(part))).then((all) => ({
      sent: all.reduce((sum, part) => sum + part.sent, 0),
      accepted: all.reduce((sum, part) => sum + part.accepted, 0),
      seconds: Math.max(...all.map((part) => part.seconds)),
      sendingSeconds: Math.max(...all.map((part) => part.sendingSeconds)),
      // The worst process's percentiles: each sends every `parts`-th arrival, so they see the same load.
      lateP50: Math.max(...all.map((part) => part.lateP50)),
      lateP95: Math.max(...all.map((part) => part.lateP95)),
    }));
    return { startAt, done };
  };
  const percentile = (samples: number[], p: number) => {
    const sorted = [...samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
  };
  /**
   * This process's CPU (cores), its longest event-loop delay and the machine's idle cores in each whole
   * second from `from` (epoch ms) until `stop()`: beside each second's visibility they tell a slow second
   * spent working, or short of cores (none idle), from one spent waiting. A tick delayed by a busy loop
   * still closes the second it belongs to.
   */
  const secondBySecond = (from: number) => {
    const delay = monitorEventLoopDelay({ resolution: 5 });
    delay.enable();
    const seconds: { cores: number; longestDelayMs: number; idleCores: number; markCompactMs: number; scavengeMs: number }[] = [];
    // The service's mark-compact pauses, incremental marking steps included (this process): the first one after the drain, collecting what the
    // drain promoted (heap ~250-310 MB down to ~65 MB), came 1.6-3.5 s into the arrivals and its second had
    // the window's longest loop delay in each of 3 runs (vis2 notes).
    let markCompactMs = 0;
    // And its scavenges: under 1,000 arrivals/s one every ~125 ms, 4-10 ms each, about 5 % of the loop's time (vis notes, round 29).
    let scavengeMs = 0;
    /** Each pause as an interval (epoch ms): which samples it fell inside. */
    const pauses: { at: number; ms: number }[] = [];
    const gc = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const kind = (entry as unknown as { detail?: { kind?: number } }).detail?.kind;
        pauses.push({ at: performance.timeOrigin + entry.startTime, ms: entry.duration });
        if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR || kind === perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL) markCompactMs += entry.duration;
        else if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) scavengeMs += entry.duration;
      }
    });
    gc.observe({ entryTypes: ['gc'] });
    let cpuSince = process.cpuUsage();
    let idleSince = machineIdleSeconds();
    let since = performance.now();
    let timer: NodeJS.Timeout;
    const tick = () => {
      const cpu = process.cpuUsage(cpuSince);
      cpuSince = process.cpuUsage();
      const idle = machineIdleSeconds();
      const elapsedMs = performance.now() - since;
      seconds.push({
        cores: (cpu.user + cpu.system) / 1000 / elapsedMs,
        longestDelayMs: delay.max / 1e6,
        idleCores: ((idle - idleSince) * 1000) / elapsedMs,
        markCompactMs,
        scavengeMs,
      });
      markCompactMs = 0;
      scavengeMs = 0;
      idleSince = idle;
      since = performance.now();
      delay.reset();
      timer = setTimeout(tick, from + (seconds.length + 1) * 1000 - Date.now());
    };
    timer = setTimeout(tick, from + 1000 - Date.now());
    return {
      pauses,
      stop() {
        clearTimeout(timer);
        delay.disable();
        gc.disconnect();
        return seconds;
      },
    };
  };

  /**
   * `--stall` and `--hog`, timed from `from` (epoch ms). Whether the service falls behind and stays there
   * could only be waited for (some runs did, most did not); with these it can be caused: at 1,000
   * arrivals a second a stall over about a second leaves more deliveries waiting than the worker may hold,
   * and it stores the rest pending until a claim catches up. Returns a description for the results.
   */
  const disturb = (from: number): string => {
    const parse = (spec: string, parts: number) => {
      const fields = spec.split(':').map(Number);
      if (fields.length !== parts || fields.some((field) => !Number.isFinite(field))) throw new Error(`bad disturbance "${spec}"`);
      return fields;
    };
    const stalls = (values.stall ?? '').split(',').filter(Boolean).map((spec) => parse(spec, 2) as [number, number]);
    const hogs = (values.hog ?? '').split(',').filter(Boolean).map((spec) => parse(spec, 3) as [number, number, number]);
    for (const [atMs, forMs] of stalls) {
      setTimeout(() => {
        const until = performance.now() + forMs;
        while (performance.now() < until);
      }, from + atMs - Date.now());
    }
    for (const [atMs, forMs, processes] of hogs) {
      setTimeout(() => {
        for (let index = 0; index < processes; index += 1) {
          const hog = spawn(process.execPath, ['-e', `const until = Date.now() + ${forMs}; while (Date.now() < until);`], { stdio: 'ignore' });
          children.push(hog);
        }
      }, from + atMs - Date.now());
    }
    const described = [
      ...stalls.map(([atMs, forMs]) => `service loop held ${forMs} ms at ${atMs} ms`),
      ...hogs.map(([atMs, forMs, processes]) => `${processes} busy process(es) for ${forMs} ms at ${atMs} ms`),
    ];
    return described.length > 0 ? described.join('; ') : 'none';
  };

  let service: Service | null = null;
  try {
    console.log(`# intake bench (${values.label}): tenant ${tenantUsers} users, ${values.organizations} organizations; PostgreSQL; scale ${scale}`);
    // The baseline unthrottled; the scenarios under the budget being measured.
    service = await startService(configFor('100000/10s'), { logger: silentLogger, initialSync: false, jobs: false, database });
    const baseline = await (await startFullSync(service.deps, { kind: 'baseline', trigger: 'bench' })).done;
    await service.close();
    console.log(`baseline: ${baseline.counts.users} users in ${(baseline.counts.durationMs / 1000).toFixed(1)} s`);
    const config = configFor(values.rate!);
    service = await startService(config, { logger: silentLogger, initialSync: false, jobs: false, database });
    const logtoStats = () => service!.logto.stats().requests;

    // Users for the visibility probes (members, suspended and unsuspended in the tenant) and the rest for the arrivals.
    const pairs = await db.select({ userId: organizationMembers.userId, organizationId: organizationMembers.organizationId }).from(organizationMembers).limit(5000);
    const probeUsers = new Map<string, string>();
    for (const pair of pairs) if (probeUsers.size < count('changes') && !probeUsers.has(pair.userId)) probeUsers.set(pair.userId, pair.organizationId);
    const stored = await db.select({ id: users.id, raw: users.raw }).from(users);
    const others = stored.filter((row) => !probeUsers.has(row.id));
    writeFileSync(join(scratch, 'users.json'), JSON.stringify(others.map((row) => ({ ...row.raw, id: row.id }))));

    const scenarios: Record<string, () => Promise<void>> = {};
    scenarios.drain = async () => {
      const n = count('deliveries');
      const now = Date.now();
      const payloads = Array.from({ length: n }, (_, index) => {
        const row = others[index % others.length]!;
        return {
          event: 'User.Data.Updated', createdAt: new Date(now).toISOString(), userAgent: 'bench', ip: '127.0.0.1',
          path: `/users/${row.id}`, method: 'PATCH', status: 200, params: { userId: row.id }, matchedRoute: '/users/:userId',
          data: { ...row.raw, name: `drain ${index}`, updatedAt: now + Math.floor(index / others.length) }, hookId: 'bench',
        };
      });
      await enqueueHeld(payloads, 'drain');
      const updatesBefore = await inboxUpdates();
      const oldBefore = oldGeneration();
      let majorGcs = 0;
      const gcs = new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) {
          if ((entry as unknown as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) majorGcs += 1;
        }
      });
      gcs.observe({ entryTypes: ['gc'] });
      const simulatorBefore = sim.cpuSeconds();
      await release();
      const drained = await profiled('drain', () => waitDrained(Number(values['time-limit']) * 1000));
      const simulatorSeconds = sim.cpuSeconds() - simulatorBefore;
      const oldAfter = oldGeneration();
      gcs.disconnect();
      // Every delivery updated three times (release, claim, settlement) once the statistics are all in.
      const updatesAfter = await inboxUpdates(updatesBefore.all + 3 * (n - drained.left));
      updatesSoFar = updatesAfter;
      say('Drain of queued full-data deliveries', {
        deliveries: n,
        'left after the time limit': drained.left,
        'seconds': drained.seconds.toFixed(2),
        'deliveries per second': ((n - drained.left) / drained.seconds).toFixed(0),
        'target (per second)': 1000,
        'ratio to target': ((n - drained.left) / drained.seconds / 1000).toFixed(2),
        // Full-data deliveries need no read from the tenant: near zero, unless some delivery fell back to a read.
        'simulator CPU during the drain (seconds; cores)': `${simulatorSeconds.toFixed(2)}; ${(simulatorSeconds / drained.seconds).toFixed(2)}`,
        // What the drain leaves for the first mark-compact of the loaded window to collect.
        'service old generation before → after the drain (MB; mark-compacts during it)': `${mb(oldBefore)} → ${mb(oldAfter)} (${majorGcs})`,
        [`service bytes ${allocatedWord} per delivery (sampled, with --heap-profile)`]: Number.isNaN(lastAllocated) ? '-' : ((lastAllocated / n) | 0),
        // Each delivery: its release (next_attempt_at, indexed), its claim (HOT when it changes no indexed column
        // and fits in its page) and its settlement.
        'inbox row updates, release + claims + settlements: all / HOT (pg_stat_user_tables)': updatesSince(updatesBefore, updatesAfter),
      });
    };

    scenarios.visibility = async () => {
      const probes = [...probeUsers.entries()];
      type Probed = {
        samples: number[];
        madeAts: number[];
        userIds: string[];
        stamps: number[];
        getsPerSample: number[];
        answeredByPoll: boolean[];
        callMs: number[];
        clamped: number;
        resent: number;
        getsPerSecond: number;
        notificationsPerSecond: number;
      };
      /**
       * `--probe-rate` changes a second for `windowMs` from `startAt`, made and watched by a process of its
       * own (`bench/intake-prober.ts`), each on a user with no change in flight, without waiting for the
       * previous one to show: one probe at a time took 6-38 samples in a loaded window (each slow one held
       * up the rest), too few for a p95, and sampled the slow moments least. The quiet reference is taken
       * the same way.
       */
      const probe = (startAt: number, windowMs: number): Promise<Probed> =>
        runChild<Probed>('bench/intake-prober.ts', {
          env: configEnv('100000/10s'), serviceUrl: `http://127.0.0.1:${port}`, apiKey, databaseUrl: url.toString(), probes,
          probeRate: Number(values['probe-rate']), windowMs, startAt, pollMs: Number(values['poll-ms']),
        });
      const quiet: number[] = [];
      const seconds = Number(values['arrival-seconds']) * scale;
      // Probes begin a second into the arrivals and stop half a second before their end.
      const windowMs = (seconds - 1.5) * 1000;
      // Before the quiet probes: waiting for the statistics between them and the arrivals idles the keep-alive sockets.
      const updatesBefore = updatesSoFar ?? (await inboxUpdates());
      // The prober starts in a second or two (tsx): its window begins at a set instant after that.
      const sessionsBeforeQuiet = await sessionsOpened();
      const quietRun = await probe(Date.now() + 3000, windowMs);
      const quietSessions = (await sessionsOpened()) - sessionsBeforeQuiet;
      quiet.push(...quietRun.samples);
      const arrivals = sender({ rate: Number(values['arrival-rate']), seconds, kind: 'full' });
      const windowFrom = arrivals.startAt + 1000;
      const loadedProbes = probe(windowFrom, windowMs);
      const postgresLoad = runChild<{ cores: number[] }>('bench/intake-load-watch.ts', { from: windowFrom, seconds: Math.ceil(windowMs / 1000) });
      const disturbances = disturb(windowFrom);
      await sleep(windowFrom - Date.now());
      // This process's CPU (the service and its worker; the probes have their own) while the arrivals come.
      const cpuBefore = process.cpuUsage();
      const simulatorBefore = sim.cpuSeconds();
      const idleBefore = machineIdleSeconds();
      const cpuFrom = performance.now();
      // How late this process's timers run while loaded: every request and turn waits at least that long.
      const lag = monitorEventLoopDelay({ resolution: 5 });
      lag.enable();
      const perSecond = secondBySecond(windowFrom);
      const sessionsBeforeLoaded = await sessionsOpened();
      const loadedRun = await profiled('visibility', () => loadedProbes);
      const loadedSessions = (await sessionsOpened()) - sessionsBeforeLoaded;
      const loaded = loadedRun.samples;
      const load = perSecond.stop();
      const postgresCores = (await postgresLoad).cores;
      lag.disable();
      const cpu = process.cpuUsage(cpuBefore);
      const cpuShare = (cpu.user + cpu.system) / 1000 / (performance.now() - cpuFrom);
      const simulatorSeconds = sim.cpuSeconds() - simulatorBefore;
      const simulatorCores = (simulatorSeconds * 1000) / (performance.now() - cpuFrom);
      const idleCores = ((machineIdleSeconds() - idleBefore) * 1000) / (performance.now() - cpuFrom);
      const sent = await arrivals.done;
      const backlogAtStop = await unsettled();
      await waitDrained(60_000);
      const updatesAfter = await inboxUpdates();
      // Receipt to settlement of the probes' own deliveries, from the inbox's clock.
      const inbox = (
        await raw.query(
          `select extract(epoch from (processed_at - received_at)) * 1000 as ms from webhook_deliveries
           where event = 'User.SuspensionStatus.Updated' and processed_at is not null`,
        )
      ).rows.map((row: { ms: string | number }) => Number(row.ms));
      /**
       * Where each sample's time went, from clocks every process here shares (one machine): made (the
       * tenant's stamp of the change, `data.updatedAt`) → sent (the tenant stamps `createdAt` as it starts
       * the POST) → stored (the intake insert's transaction start) → applying (its change row's `at`, the
       * applying transaction's start) → settled (`processed_at`) → answered (the prober's GET that showed the
       * change). A sample's delivery is found by its user and stamp. Without temporary marks in the service,
       * it says whether a slow sample waited in the tenant, at intake, for the hand-over and its transaction,
       * for settling, or for the prober to ask.
       */
      const deliveries = new Map(
        (
          await raw.query(
            `select d.payload->'data'->>'id' || ':' || (d.payload->'data'->>'updatedAt') as key,
               extract(epoch from (d.payload->>'createdAt')::timestamptz) * 1000 as sent,
               extract(epoch from d.received_at) * 1000 as stored,
               extract(epoch from c.at) * 1000 as applying,
               extract(epoch from d.processed_at) * 1000 as settled
             from webhook_deliveries d
             join lateral (select min(at) as at from access_changes where delivery_id = d.id) c on c.at is not null
             where d.event = 'User.SuspensionStatus.Updated' and d.processed_at is not null`,
          )
        ).rows.map((row: { key: string; sent: string; stored: string; applying: string; settled: string }) => [
          row.key,
          { sent: Number(row.sent), stored: Number(row.stored), applying: Number(row.applying), settled: Number(row.settled) },
        ]),
      );
      const stageNames = ['made → sent', 'sent → stored', 'stored → applying', 'applying → settled', 'settled → answered'] as const;
      type Breakdown = { total: number; stages: number[]; gets: number; byPoll: boolean };
      const breakdown = (run: Probed): Breakdown[] =>
        run.samples.flatMap((total, index) => {
          const delivery = deliveries.get(`${run.userIds[index]}:${run.stamps[index]}`);
          if (!delivery) return [];
          const marks = [run.madeAts[index]!, delivery.sent, delivery.stored, delivery.applying, delivery.settled, run.madeAts[index]! + total];
          return [{ total, stages: marks.slice(1).map((mark, stage) => mark - marks[stage]!), gets: run.getsPerSample[index]!, byPoll: run.answeredByPoll[index]! }];
        });
      const stageRow = (rows: Breakdown[]) =>
        stageNames.map((_, stage) => {
          const column = rows.map((row) => row.stages[stage]!);
          return `${percentile(column, 50).toFixed(1)} / ${percentile(column, 95).toFixed(1)}`;
        }).join(', ');
      /** The slowest samples one by one, each stage's milliseconds: what a p95 is made of. */
      const slowest = (rows: Breakdown[]) =>
        [...rows]
          .sort((a, b) => b.total - a.total)
          .slice(0, 6)
          .map((row) => `${row.total.toFixed(0)} = ${row.stages.map((ms) => ms.toFixed(0)).join(' + ')} (${row.gets} GET${row.byPoll ? ', by poll' : ''})`)
          .join('; ');
      const loadedStages = breakdown(loadedRun);
      const quietStages = breakdown(quietRun);
      // The loaded changes by the second of the window they were made in. At 16 a second, a second's p95 is
      // its slowest change or the one before: a "bad" second is one where that took more than the target.
      const changesBySecond: number[][] = [];
      loaded.forEach((ms, index) => (changesBySecond[Math.floor((loadedRun.madeAts[index]! - windowFrom) / 1000)] ??= []).push(ms));
      const timeline = Array.from({ length: Math.max(changesBySecond.length, load.length) }, (_, second) => ({
        changes: changesBySecond[second] ?? [],
        load: load[second],
      }));
      /**
       * Whether the samples over the target are the ones a GC pause (10 ms or more) fell inside, from the
       * change until its answer: under 1,000 arrivals/s a scavenge every ~0.55 s paused the loop 14-50 ms
       * (round 33), and every stage of a sample waits for that loop.
       */
      const paused = loaded.map((ms, index) => {
        const from = loadedRun.madeAts[index]!;
        return perSecond.pauses.filter((pause) => pause.ms >= 10 && pause.at + pause.ms > from && pause.at < from + ms).reduce((sum, pause) => sum + pause.ms, 0);
      });
      const spanned = (keep: (ms: number) => boolean) => {
        const picked = loaded.flatMap((ms, index) => (keep(ms) ? [paused[index]!] : []));
        const hit = picked.filter((ms) => ms > 0);
        return `${hit.length} of ${picked.length}${hit.length > 0 ? `, pauses in them p50 ${percentile(hit, 50).toFixed(0)} ms` : ''}`;
      };
      const probedSeconds = timeline.filter((second) => second.changes.length > 0);
      const badSeconds = probedSeconds.filter((second) => percentile(second.changes, 95) > 50).length;
      say('Visibility in GET /v1/access while deliveries arrive', {
        'disturbance (--stall, --hog; from the start of the probed window)': disturbances,
        'arrivals sent / accepted (2xx)': `${sent.sent} / ${sent.accepted}`,
        'arrivals offered per second (target 1000)': (sent.sent / sent.sendingSeconds).toFixed(0),
        'arrivals answered per second': (sent.accepted / sent.seconds).toFixed(0),
        'arrivals answered after their due instant p50 / p95 (ms)': `${sent.lateP50.toFixed(0)} / ${sent.lateP95.toFixed(0)}`,
        'service GC pauses of 10 ms or more while probing: count, p50 / longest (ms)': (() => {
          const long = perSecond.pauses.filter((pause) => pause.ms >= 10 && pause.at >= windowFrom).map((pause) => pause.ms);
          return long.length === 0 ? '0' : `${long.length}, ${percentile(long, 50).toFixed(1)} / ${Math.max(...long).toFixed(1)}`;
        })(),
        'loaded samples a GC pause of 10 ms or more fell inside: the slowest 5 %; over 50 ms; at most 50 ms': `${spanned(
          (ms) => ms >= percentile(loaded, 95),
        )}; ${spanned((ms) => ms > 50)}; ${spanned((ms) => ms <= 50)}`,
        'backlog when arrivals stop': backlogAtStop,
        // The probes' window only (the arrivals of its first second and last half second are not in it).
        [`service bytes ${allocatedWord} per arrival in the probes' window (sampled, with --heap-profile)`]: Number.isNaN(lastAllocated)
          ? '-'
          : ((lastAllocated / (Number(values['arrival-rate']) * (windowMs / 1000))) | 0),
        'service process CPU while probing (cores; user+system)': cpuShare.toFixed(2),
        'machine cores idle while probing (of all; /proc/stat idle + iowait)': idleCores.toFixed(2),
        // The tenant makes the probed changes and sends their webhooks: its CPU in the window is the same work in
        // every run, so a run's figures can be judged divided by it when the machine's other load varies.
        'simulator CPU while probing (seconds; cores)': `${simulatorSeconds.toFixed(2)}; ${simulatorCores.toFixed(2)}`,
        'service event-loop delay while probing p50 / p99 (ms, 5 ms resolution)': `${(lag.percentile(50) / 1e6).toFixed(1)} / ${(lag.percentile(99) / 1e6).toFixed(1)}`,
        'service event-loop delay while probing, longest (ms)': (lag.max / 1e6).toFixed(1),
        // The clock of each sample starts at the tenant's stamp of the change (within its API call), so the call is apart.
        'tenant API call p50 / p95 (ms, loaded; not part of a sample)': `${percentile(loadedRun.callMs, 50).toFixed(1)} / ${percentile(loadedRun.callMs, 95).toFixed(1)}`,
        'changes whose tenant stamp fell outside their call (clock then its nearest end)': quietRun.clamped + loadedRun.clamped,
        'probe delivery received → settled p50 / p95 (ms, quiet and loaded)': `${percentile(inbox, 50).toFixed(1)} / ${percentile(inbox, 95).toFixed(1)}`,
        [`stages ${stageNames.join(', ')} p50 / p95 (ms, loaded)`]: stageRow(loadedStages),
        'the same, quiet (ms)': stageRow(quietStages),
        'slowest loaded samples: total = stages (ms)': slowest(loadedStages),
        'slowest quiet samples: total = stages (ms)': slowest(quietStages),
        'samples answered after a poll, not a notification (loaded / quiet)': `${loadedRun.answeredByPoll.filter(Boolean).length} / ${quietRun.answeredByPoll.filter(Boolean).length}`,
        // Reported by each backend within a second or so of its start; the loaded count starts as the window does.
        'PostgreSQL connections opened while probing (loaded / quiet; every client of the database)': `${loadedSessions} / ${quietSessions}`,
        'changes probed (loaded / quiet)': `${loaded.length} / ${quiet.length}`,
        'changes started per second (both)': Number(values['probe-rate']),
        'quiet p50 / p95 (ms)': `${percentile(quiet, 50).toFixed(1)} / ${percentile(quiet, 95).toFixed(1)}`,
        'loaded p50 / p95 (ms)': `${percentile(loaded, 50).toFixed(1)} / ${percentile(loaded, 95).toFixed(1)}`,
        'loaded p95 / quiet p95': (percentile(loaded, 95) / percentile(quiet, 95)).toFixed(2),
        'target p95 (ms)': 50,
        'loaded seconds with p95 over the target (bad) / seconds probed': `${badSeconds} / ${probedSeconds.length} (${((100 * badSeconds) / Math.max(1, probedSeconds.length)).toFixed(0)}%)`,
        // Each probe asks after every commit's NOTIFY, and at least every `--poll-ms`.
        'GET /v1/access asked per second, loaded (probes together) / commit notifications per second': `${loadedRun.getsPerSecond.toFixed(0)} / ${loadedRun.notificationsPerSecond.toFixed(0)}`,
        'GET /v1/access asked at least every (ms, per probe in flight)': values['poll-ms']!,
        // A GET whose connection was closed under it (ECONNRESET, EPIPE, socket hang up) is sent again, up to 3 attempts (the prober's `get`).
        'GET /v1/access re-sent after a connection reset (loaded / quiet)': `${loadedRun.resent} / ${quietRun.resent}`,
        // Per delivery: a claim and a settlement, or only the settlement when it was stored claimed at intake.
        'inbox row updates, quiet probes and arrivals: all / HOT (pg_stat_user_tables)': updatesSince(updatesBefore, updatesAfter),
      });
      const fixed = (value: number | undefined) => (value === undefined || Number.isNaN(value) ? '-' : value.toFixed(1));
      say('Loaded visibility per second of the window', {
        columns:
          'changes made, their visibility p50 / p95 (ms), service longest event-loop delay (ms), service CPU (cores), PostgreSQL CPU (cores), machine cores idle, service mark-compact GC pauses (ms), service scavenge pauses (ms)',
        ...Object.fromEntries(
          timeline.map(({ changes, load: spent }, second) => [
            `second ${second + 1}`,
            `${changes.length}, ${fixed(percentile(changes, 50))} / ${fixed(percentile(changes, 95))}, ${fixed(spent?.longestDelayMs)}, ${spent?.cores.toFixed(2) ?? '-'}, ${postgresCores[second]?.toFixed(2) ?? '-'}, ${spent?.idleCores.toFixed(2) ?? '-'}, ${fixed(spent?.markCompactMs)}, ${fixed(spent?.scavengeMs)}${percentile(changes, 95) > 50 ? ' (bad)' : ''}`,
          ]),
        ),
      });
    };

    scenarios.partial = async () => {
      const n = Math.min(count('partial'), others.length);
      const targets = others.slice(0, n);
      // The stored copies drift (older, other custom data): each read finds something to write.
      for (let start = 0; start < n; start += 5000) {
        await db
          .update(users)
          .set({ customData: { drifted: true }, updatedAt: new Date(0) })
          .where(inArray(users.id, targets.slice(start, start + 5000).map((row) => row.id)));
      }
      const payloads = targets.map((row) => ({
        event: 'User.Data.Updated', createdAt: new Date().toISOString(), userAgent: 'bench', ip: '127.0.0.1',
        path: `/users/${row.id}/custom-data`, method: 'PATCH', status: 200, params: { userId: row.id },
        matchedRoute: '/users/:userId/custom-data', data: { plan: 'gold' }, hookId: 'bench',
      }));
      await enqueueHeld(payloads, 'partial');
      const before = logtoStats();
      await release();
      const drained = await profiled('partial', () => waitDrained(Number(values['time-limit']) * 1000));
      const requests = logtoStats() - before;
      const [budgetRequests, budgetSeconds] = (() => {
        const match = /^(\d+)\/(\d+)s$/.exec(values.rate!);
        return match ? [Number(match[1]), Number(match[2])] : [200, 10];
      })();
      const idealSeconds = Math.ceil(n / 100) / (budgetRequests / budgetSeconds);
      const drainedCount = n - drained.left;
      const restored = Number((await raw.query(`select count(*)::int as n from users where custom_data ? 'drifted'`)).rows[0].n);
      say(`Partial deliveries under ${values.rate}`, {
        deliveries: n,
        'drained / left after the time limit': `${drainedCount} / ${drained.left}`,
        'wall seconds': drained.seconds.toFixed(2),
        'projected seconds for all': ((drained.seconds * n) / Math.max(1, drainedCount)).toFixed(1),
        'ideal seconds (⌈n/100⌉ requests at the budget pace)': idealSeconds.toFixed(1),
        'ratio to ideal (target ≤ 1.2)': ((drained.seconds * n) / Math.max(1, drainedCount) / idealSeconds).toFixed(2),
        'requests to Logto': requests,
        '⌈n/100⌉': Math.ceil(n / 100),
        'users still drifted': restored,
      });
    };

    scenarios.signin = async () => {
      const rate = Number(values['signin-rate']);
      const seconds = Number(values['signin-seconds']) * scale;
      const before = logtoStats();
      const sent = await profiled('signin', () => sender({ rate, seconds, kind: 'signin' }).done);
      const backlogAtStop = await unsettled();
      await sleep(Number(values['after-seconds']) * scale * 1000);
      const backlog = await unsettled();
      say(`PostSignIn burst under ${values.rate}`, {
        'sign-ins sent / accepted': `${sent.sent} / ${sent.accepted}`,
        'per second (target 100)': (sent.sent / sent.sendingSeconds).toFixed(0),
        'backlog when they stop': backlogAtStop,
        [`backlog ${(Number(values['after-seconds']) * scale).toFixed(0)} s later (target 0)`]: backlog,
        'requests to Logto': logtoStats() - before,
      });
    };

    for (const name of order) {
      const scenario = scenarios[name];
      if (!scenario) throw new Error(`unknown intake scenario "${name}"; one of: ${Object.keys(scenarios).join(', ')}`);
      if (!skip.has(name)) await scenario();
    }

    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    mkdirSync('bench/results', { recursive: true });
    const base = `bench/results/intake-${values.label}-${stamp}`;
    writeFileSync(`${base}.json`, JSON.stringify({ label: values.label, scale, tenantUsers, rate: values.rate, results }, null, 2));
    const markdown = [`# intake bench: ${values.label} (scale ${scale}, ${tenantUsers} users, budget ${values.rate})`, ''];
    for (const [title, rows] of Object.entries(results)) {
      markdown.push(`## ${title}`, '', '| | |', '| --- | --- |', ...Object.entries(rows).map(([k, v]) => `| ${k} | ${v} |`), '');
    }
    writeFileSync(`${base}.md`, markdown.join('\n'));
    console.log(`\nresults: ${base}.json, ${base}.md`);
  } finally {
    await service?.close().catch(() => {});
    profiler.close();
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
    await raw.end();
    await database.close();
    rmSync(scratch, { recursive: true, force: true });
  }
};
