import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

/**
 * The load generator of `bench/hot-paths.ts`, run in its own process so that it never shares an event
 * loop with the server it measures. Reads a spec (JSON file named by argv[2]) and prints one JSON line.
 *
 * GET specs draw a path at random for every request; webhook specs sign a fresh, distinct body per request.
 */
export type LoadSpec = {
  url: string;
  connections: number;
  durationSeconds: number;
  headers?: Record<string, string>;
  /** GET: one of these paths per request, drawn at random. */
  paths?: string[];
  /** POST a signed Logto delivery built from one of these templates; `nonce` and `createdAt` make each distinct. */
  webhook?: { path: string; signingKey: string; templates: Record<string, unknown>[]; runId: string };
};

export type LoadResult = {
  requests: number;
  throughput: number;
  p50: number;
  p99: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Filled in by bench/hot-paths.ts: CPU milliseconds per request of the server process and of PostgreSQL. */
  serverCpuMs?: number;
  postgresCpuMs?: number;
};

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as LoadSpec;
const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!;
let nonce = 0;

const setupRequest = (request: autocannon.Request): autocannon.Request => {
  if (spec.paths) return { ...request, method: 'GET', path: pick(spec.paths) };
  const webhook = spec.webhook!;
  nonce += 1;
  const body = JSON.stringify({ ...pick(webhook.templates), createdAt: new Date().toISOString(), hookId: webhook.runId, nonce });
  const signature = createHmac('sha256', webhook.signingKey).update(body).digest('hex');
  return {
    ...request,
    method: 'POST',
    path: webhook.path,
    body,
    headers: { ...request.headers, 'content-type': 'application/json', 'logto-signature-sha-256': signature },
  };
};

const result = await autocannon({
  url: spec.url,
  connections: spec.connections,
  duration: spec.durationSeconds,
  headers: spec.headers ?? {},
  requests: [{ setupRequest }],
});

const output: LoadResult = {
  requests: result.requests.total,
  throughput: result.requests.total / (result.duration || spec.durationSeconds),
  p50: result.latency.p50,
  p99: result.latency.p99,
  ok: result['2xx'],
  non2xx: result.non2xx,
  errors: result.errors,
  timeouts: result.timeouts,
};
process.stdout.write(`${JSON.stringify(output)}\n`);
