import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';

/**
 * The arrivals of `bench/intake.ts`, from processes of their own (so their cost is not the service's):
 * signed deliveries posted to the receiver at a steady rate for a while, then a JSON line with what was
 * sent. Argument: a JSON file `{ url, signingKey, rate, seconds, kind: 'full' | 'signin', usersFile,
 * startAt, part, parts }`. Each of `parts` processes sends every `parts`-th delivery from `part` on.
 * The bodies are built and signed before `startAt` (epoch ms): at 1,000/s one process's JSON and HMAC
 * work would otherwise be what limits the rate, not the service. Its sockets are opened before it too.
 */
type Plan = {
  url: string;
  signingKey: string;
  rate: number;
  seconds: number;
  kind: 'full' | 'signin';
  usersFile: string;
  startAt: number;
  part: number;
  parts: number;
};

const plan = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Plan;
const users = JSON.parse(readFileSync(plan.usersFile, 'utf8')) as Record<string, unknown>[];
/**
 * Logto sends each webhook as a request of its own. 64 sockets a process made the arrivals closed-loop:
 * once the receiver took ~130 ms a request, the rest waited in this agent, up to 5 s late (a run "offering"
 * 1,000/s put 721/s on the wire). With 256 the offered rate reaches the receiver; the lateness is printed.
 */
const maxSockets = 256;
const agent = new Agent({ keepAlive: true, maxSockets });

type Signed = { body: string; signature: string };

const post = ({ body, signature }: Signed) =>
  new Promise<number>((resolve) => {
    const req = request(
      plan.url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'logto-signature-sha-256': signature,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', () => resolve(0));
    req.end(body);
  });

/** A request that only opens (or reuses) one of the agent's sockets: the receiver's health route. */
const warm = () =>
  new Promise<void>((resolve) => {
    const req = request(new URL('/healthz', plan.url), { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', () => resolve());
    req.end();
  });

const payload = (index: number, at: number): string => {
  const user = users[index % users.length]!;
  const createdAt = new Date(at).toISOString();
  if (plan.kind === 'signin') {
    return JSON.stringify({ event: 'PostSignIn', createdAt, interactionEvent: 'SignIn', userId: user.id, nonce: index, hookId: 'bench' });
  }
  return JSON.stringify({
    event: 'User.Data.Updated', createdAt, userAgent: 'bench-arrivals', ip: '127.0.0.1', path: `/users/${String(user.id)}`,
    method: 'PATCH', status: 200, params: { userId: user.id }, matchedRoute: '/users/:userId',
    // Later deliveries carry later copies: each one finds something to write.
    data: { ...user, name: `arrival ${index}`, updatedAt: at + index }, hookId: 'bench',
  });
};

const main = async () => {
  const total = Math.round(plan.rate * plan.seconds);
  const mine: { index: number; signed: Signed }[] = [];
  for (let index = plan.part; index < total; index += plan.parts) {
    const body = payload(index, plan.startAt);
    mine.push({ index, signed: { body, signature: createHmac('sha256', plan.signingKey).update(body).digest('hex') } });
  }
  // Open every socket this process may use before the first arrival, as a sender already sending at this
  // rate has them. Opened on demand, they came while the arrivals did, and a busy Node server accepts one
  // connection per event-loop turn (libuv no longer accepts in a loop): for the first 3-5 s of arrivals
  // ~100 connections, the simulated tenant's webhook connections among them, waited 2-6 s to be accepted.
  const warmAt = plan.startAt - 500 - Date.now();
  if (warmAt > 0) await new Promise((resolve) => setTimeout(resolve, warmAt));
  await Promise.all(Array.from({ length: maxSockets }, () => warm()));
  const wait = plan.startAt - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const started = performance.now();
  let sent = 0;
  let accepted = 0;
  /** Per arrival, from the instant it was due to its answer (ms). */
  const late: number[] = [];
  const inFlight = new Set<Promise<void>>();
  while (sent < mine.length) {
    // Paced by the clock: the deliveries (of all parts) due by now are sent, then a short sleep.
    const dueOverall = Math.min(total, Math.floor(((performance.now() - started) / 1000) * plan.rate));
    while (sent < mine.length && mine[sent]!.index < dueOverall) {
      const due = started + (mine[sent]!.index / plan.rate) * 1000;
      const done: Promise<void> = post(mine[sent]!.signed).then((status) => {
        late.push(performance.now() - due);
        if (status >= 200 && status < 300) accepted += 1;
        inFlight.delete(done);
      });
      inFlight.add(done);
      sent += 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const sendingSeconds = (performance.now() - started) / 1000;
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  late.sort((a, b) => a - b);
  const at = (p: number) => late[Math.min(late.length - 1, Math.floor(p * late.length))] ?? 0;
  process.stdout.write(`${JSON.stringify({ sent, accepted, seconds, sendingSeconds, lateP50: at(0.5), lateP95: at(0.95) })}\n`);
  agent.destroy();
};

void main();
