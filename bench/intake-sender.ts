import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';

/**
 * The arrivals of `bench/intake.ts`, from a process of its own (so their cost is not the service's):
 * signed deliveries posted to the receiver at a steady rate for a while, then a JSON line with what was
 * sent. Argument: a JSON file `{ url, signingKey, rate, seconds, kind: 'full' | 'signin', usersFile }`.
 */
type Plan = { url: string; signingKey: string; rate: number; seconds: number; kind: 'full' | 'signin'; usersFile: string };

const plan = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Plan;
const users = JSON.parse(readFileSync(plan.usersFile, 'utf8')) as Record<string, unknown>[];
const agent = new Agent({ keepAlive: true, maxSockets: 32 });

const post = (body: string) =>
  new Promise<number>((resolve) => {
    const signature = createHmac('sha256', plan.signingKey).update(body).digest('hex');
    const req = request(
      plan.url,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'logto-signature-sha-256': signature } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', () => resolve(0));
    req.end(body);
  });

const payload = (index: number): string => {
  const user = users[index % users.length]!;
  const createdAt = new Date().toISOString();
  if (plan.kind === 'signin') {
    return JSON.stringify({ event: 'PostSignIn', createdAt, interactionEvent: 'SignIn', userId: user.id, nonce: index, hookId: 'bench' });
  }
  return JSON.stringify({
    event: 'User.Data.Updated', createdAt, userAgent: 'bench-arrivals', ip: '127.0.0.1', path: `/users/${String(user.id)}`,
    method: 'PATCH', status: 200, params: { userId: user.id }, matchedRoute: '/users/:userId',
    data: { ...user, name: `arrival ${index}`, updatedAt: Date.now() }, hookId: 'bench',
  });
};

const main = async () => {
  const total = Math.round(plan.rate * plan.seconds);
  const started = performance.now();
  let sent = 0;
  let accepted = 0;
  const inFlight = new Set<Promise<void>>();
  while (sent < total) {
    // Paced by the clock: deliveries due by now are sent, then a short sleep.
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * plan.rate));
    while (sent < due) {
      const index = sent++;
      const done: Promise<void> = post(payload(index)).then((status) => {
        if (status >= 200 && status < 300) accepted += 1;
        inFlight.delete(done);
      });
      inFlight.add(done);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ sent, accepted, seconds })}\n`);
  agent.destroy();
};

void main();
