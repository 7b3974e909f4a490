import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

/**
 * A minimal Logto (token endpoint + `GET /api/users/:id`) running in a worker thread, for tests that
 * judge the request budget by the times requests reach the server. A server on the test's own event
 * loop reads sockets only when the client side lets it: under CPU load a stalled loop delivers two
 * batches sent 300 ms apart in one tick, and the timestamps would lie. A worker has its own loop.
 */

const source = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const received = [];
let count = 0;
const server = http.createServer((request, response) => {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    const send = (status, body) => {
      const text = body === undefined ? '' : JSON.stringify(body);
      response.writeHead(status, text ? { 'content-type': 'application/json' } : {});
      response.end(text);
    };
    if (request.method === 'POST' && request.url === '/oidc/token') {
      return send(200, { access_token: 'threaded-token', expires_in: 3600, token_type: 'Bearer', scope: 'all' });
    }
    const match = /^\/api\/users\/([^/?]+)$/.exec(request.url || '');
    if (!match) return send(404, { code: 'entity.not_found', message: 'not found' });
    received.push(performance.timeOrigin + performance.now());
    count += 1;
    if (workerData.failEvery && count % workerData.failEvery === 0) return send(500, { message: 'Internal server error.' });
    const id = decodeURIComponent(match[1]);
    send(200, {
      id, username: null, primaryEmail: null, primaryPhone: null, name: null, avatar: null, customData: {},
      identities: {}, lastSignInAt: null, createdAt: 1, updatedAt: 1, profile: {}, applicationId: null,
      isSuspended: false,
    });
  });
});
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ type: 'listening', port: server.address().port }));
parentPort.on('message', (message) => {
  if (message === 'report') parentPort.postMessage({ type: 'report', received });
  if (message === 'close') server.close(() => parentPort.close());
});
`;

export type ThreadedLogto = {
  baseUrl: string;
  /** Arrival times (ms) of every `GET /api/users/:id`, as the server thread saw them. */
  received(): Promise<number[]>;
  close(): Promise<void>;
};

export const startThreadedLogto = async (options: { failEvery?: number } = {}): Promise<ThreadedLogto> => {
  const worker = new Worker(source, { eval: true, workerData: options });
  const [ready] = (await once(worker, 'message')) as [{ type: string; port: number }];
  const baseUrl = `http://127.0.0.1:${ready.port}`;
  return {
    baseUrl,
    async received() {
      const reply = once(worker, 'message');
      worker.postMessage('report');
      const [message] = (await reply) as [{ received: number[] }];
      return message.received;
    },
    async close() {
      const exited = once(worker, 'exit');
      worker.postMessage('close');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 1000))]);
      await worker.terminate();
    },
  };
};

/** The largest number of arrivals inside any window of `windowMs` starting at an arrival. */
export const busiestWindow = (times: readonly number[], windowMs: number): number => {
  const sorted = [...times].sort((a, b) => a - b);
  let worst = 0;
  for (const [index, start] of sorted.entries()) {
    let count = 0;
    for (let other = index; other < sorted.length && sorted[other]! < start + windowMs; other += 1) count += 1;
    worst = Math.max(worst, count);
  }
  return worst;
};
