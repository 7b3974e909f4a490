import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { createLogtoClient } from '../src/logto/index.js';

/**
 * The visibility probes of `bench/intake.ts`, in a process of their own: run in the service's process,
 * their tenant calls, polls and JSON parsing waited for the service's busy event loop and took turns from
 * it, so the figure held the bench's costs as well as the service's. Argument: a JSON file
 * `{ env, serviceUrl, apiKey, databaseUrl, probes: [userId, organizationId][], probeRate, windowMs,
 * startAt, pollMs }`. Prints one JSON line: each change's milliseconds from the instant the tenant made
 * it until `GET /v1/access` answered with it, and that instant, and each tenant call's duration.
 *
 * The clock starts when the change is made in the tenant: the `updatedAt` the simulated Management API
 * stamps on the user as it changes it (epoch ms, the clock every process here shares), kept within the
 * call's own interval. Logto sends the webhook once it has answered, so what the tenant's API call itself
 * costs the caller is not part of "visible after the change", and is printed apart.
 *
 * When to look: every applying transaction NOTIFYs `access_changes` at its commit, so after each
 * notification every probe in flight asks `GET /v1/access` once (its read starts after that commit); and
 * at least every `pollMs` regardless, should a notification come before the service can answer with it.
 * A sample is taken when a GET's answer shows the change: the figure is the service's, to within the
 * notification's own delivery, and never earlier than the service answered.
 */
type Plan = {
  env: Record<string, string>;
  serviceUrl: string;
  apiKey: string;
  databaseUrl: string;
  probes: [string, string][];
  probeRate: number;
  windowMs: number;
  startAt: number;
  pollMs: number;
};

const plan = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Plan;
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const maxSockets = 64;
// `fifo`: the free sockets take turns, so none sits idle long enough for the server to close it.
const agent = new Agent({ keepAlive: true, maxSockets, scheduling: 'fifo' });
let gets = 0;
let resent = 0;
/** Attempts of one GET at the most: the first and two re-sends. */
const maxAttempts = 3;
/**
 * A GET can meet its connection being closed under it: ECONNRESET or EPIPE, "socket hang up" among them
 * (Node's ECONNRESET for a socket closed before any answer). On a kept-alive socket that is the server
 * closing it as the request goes out. One re-send, and only on a reused socket, still let "socket hang up"
 * crash 2 of ~27 runs in round 29: a new socket meets it too, and so can the re-send (with `fifo` the next
 * free socket is the one idle longest, as likely to be closing). A client race, not the service failing to
 * answer, and a GET changes nothing, so it is sent again on any socket, up to `maxAttempts` in all; any
 * other error, or the last attempt's, still fails the run. The re-sends are counted and printed.
 */
const retriable = (error: NodeJS.ErrnoException) => error.code === 'ECONNRESET' || error.code === 'EPIPE';
const get = (path: string, attempt = 1): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    gets += 1;
    let failed = false;
    const fail = (error: NodeJS.ErrnoException) => {
      if (failed) return;
      failed = true;
      if (attempt >= maxAttempts || !retriable(error)) return reject(error);
      resent += 1;
      resolve(get(path, attempt + 1));
    };
    const req = request(`${plan.serviceUrl}${path}`, { agent, headers: { authorization: `Bearer ${plan.apiKey}` } }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      // The connection closed while the answer came in (ECONNRESET "aborted"): the same race, later.
      res.on('error', fail);
    });
    req.on('error', fail);
    req.end();
  });

/** Notifications seen so far, and the waiters for the next one. */
let notifications = 0;
let waiters: (() => void)[] = [];
const nextSignal = (timeoutMs: number) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    waiters.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });

const main = async () => {
  const logto = createLogtoClient({ ...loadConfig(plan.env).logto, concurrency: 64 });
  const listener = new pg.Client({ connectionString: plan.databaseUrl });
  await listener.connect();
  listener.on('notification', () => {
    notifications += 1;
    const woken = waiters;
    waiters = [];
    for (const wake of woken) wake();
  });
  await listener.query('listen access_changes');
  const ids = plan.probes.map(([userId]) => userId);
  /** Each probe user's suspension as stored now (every earlier change shown): each probe flips it. */
  const suspended = new Map(
    (await listener.query('select id, is_suspended from users where id = any($1)', [ids])).rows.map(
      (row: { id: string; is_suspended: boolean }) => [row.id, row.is_suspended],
    ),
  );
  // Every socket the probes may use opened before the window, as a steady client has them. With 8 opened,
  // the probes in flight under load opened the rest during the window, and a connection waits for a busy
  // server to accept it (libuv accepts one per event-loop turn): GETs on new sockets took 0.8 s at the
  // median and up to 1.5 s, on reused ones 44 ms, which put the prober's connection setup in the figure.
  await Promise.all(
    Array.from({ length: maxSockets }, (_, index) => plan.probes[index % plan.probes.length]!).map(([userId, organizationId]) =>
      get(`/v1/access?userId=${userId}&organizationId=${organizationId}`),
    ),
  );
  gets = 0;

  const samples: number[] = [];
  /** Each sample's change instant (epoch ms, same order as `samples`): the bench groups them per second of the load. */
  const madeAts: number[] = [];
  /**
   * Each sample's user and the tenant's stamp of its change (same order as `samples`): the bench finds the
   * sample's delivery by them and splits the sample into its stages (made → sent → stored → applying →
   * settled → answered). And how many GETs the sample took, and whether the last one followed a commit's
   * notification or the `pollMs` timer: a sample answered by a poll waited for the prober, not the service.
   */
  const userIds: string[] = [];
  const stamps: number[] = [];
  const getsPerSample: number[] = [];
  const answeredByPoll: boolean[] = [];
  const callMs: number[] = [];
  let clamped = 0;
  const probeOne = async (userId: string, organizationId: string) => {
    const suspend = !suspended.get(userId);
    const sentAt = now();
    const seenBefore = notifications;
    const user = await logto.setUserSuspended(userId, suspend);
    const returnedAt = now();
    suspended.set(userId, suspend);
    callMs.push(returnedAt - sentAt);
    const stamped = Number(user.updatedAt);
    if (!(stamped >= Math.floor(sentAt) && stamped <= returnedAt)) clamped += 1;
    const madeAt = Math.min(returnedAt, Math.max(sentAt, stamped));
    let seen = seenBefore;
    let asked = 0;
    let byPoll = false;
    for (;;) {
      byPoll = false;
      if (notifications === seen) {
        await nextSignal(plan.pollMs);
        byPoll = notifications === seen;
      }
      seen = notifications;
      asked += 1;
      const response = await get(`/v1/access?userId=${userId}&organizationId=${organizationId}`);
      if (response.status === 200 && (JSON.parse(response.body) as { isSuspended: boolean }).isSuspended === suspend) break;
      if (now() - madeAt > 10_000) break;
    }
    samples.push(now() - madeAt);
    madeAts.push(madeAt);
    userIds.push(userId);
    stamps.push(stamped);
    getsPerSample.push(asked);
    answeredByPoll.push(byPoll);
  };

  const inFlight = new Set<string>();
  const running: Promise<void>[] = [];
  const spacingMs = 1000 / plan.probeRate;
  let nextProbe = 0;
  const wait = plan.startAt - Date.now();
  if (wait > 0) await sleep(wait);
  const started = performance.now();
  const notificationsBefore = notifications;
  for (let index = 0; ; index += 1) {
    const due = started + index * spacingMs;
    if (due - started >= plan.windowMs) break;
    await sleep(Math.max(0, due - performance.now()));
    let pick: [string, string] | undefined;
    for (let tries = 0; tries < plan.probes.length && !pick; tries += 1) {
      const candidate = plan.probes[nextProbe++ % plan.probes.length]!;
      if (!inFlight.has(candidate[0])) pick = candidate;
    }
    if (!pick) continue;
    const [userId, organizationId] = pick;
    inFlight.add(userId);
    running.push(probeOne(userId, organizationId).finally(() => inFlight.delete(userId)));
  }
  await Promise.all(running);
  const seconds = (performance.now() - started) / 1000;
  await listener.end();
  agent.destroy();
  process.stdout.write(`${JSON.stringify({ samples, madeAts, userIds, stamps, getsPerSample, answeredByPoll, callMs, clamped, resent, getsPerSecond: gets / seconds, notificationsPerSecond: (notifications - notificationsBefore) / seconds })}\n`);
};

// Exits once its line is written (a pipe: written synchronously): the Logto client's keep-alive sockets kept the
// process alive ~11 s after its last sample, and the bench measures the service's CPU and loop delay until this
// process exits, so half of that window was idle (0.36-0.41 cores printed where /proc showed 0.72-0.75).
main().then(() => process.exit(0)).catch((error) => {
  console.error(error);
  process.exit(1);
});
