import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type RelayedDelivery = {
  /** The inbox's dedup key for these bytes (what the receiver derives from a Logto delivery). */
  dedupKey: string;
  event: string;
  /** The status of each attempt, or 0 when no answer came (connection refused or reset). */
  attempts: number[];
  /** True once an attempt was answered 2xx. */
  acknowledged: boolean;
};

export type WebhookRelay = {
  /** Where the simulated tenant sends its deliveries. */
  url: string;
  deliveries: RelayedDelivery[];
  /** Receivers to forward to, taken in turn (one per attempt). */
  setTargets(urls: string[]): void;
  /** Resolves once every delivery received so far was acknowledged. */
  idle(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
};

const readBody = (request: IncomingMessage) =>
  new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });

/**
 * Sits between the simulated tenant and the service: takes each signed delivery (answering 200 at
 * once) and forwards its exact bytes and headers to the service, in order, one at a time, again and
 * again until one attempt is answered 2xx: the at-least-once sender the service is built for (a relay
 * such as Svix, or Logto's hook logs read back). Each attempt's answer is recorded, so a test can tell
 * which deliveries the service acknowledged.
 */
export const startWebhookRelay = async (options: { retryDelayMs?: number } = {}): Promise<WebhookRelay> => {
  const retryDelayMs = options.retryDelayMs ?? 100;
  const deliveries: RelayedDelivery[] = [];
  const queue: { delivery: RelayedDelivery; body: Buffer; headers: Record<string, string> }[] = [];
  let targets: string[] = [];
  let turn = 0;
  let forwarding = false;
  let closed = false;
  const idleWaiters: (() => void)[] = [];

  const attempt = async (body: Buffer, headers: Record<string, string>): Promise<number> => {
    const target = targets[turn % Math.max(1, targets.length)];
    turn += 1;
    if (!target) return 0;
    try {
      const response = await fetch(target, { method: 'POST', body, headers, signal: AbortSignal.timeout(10_000) });
      await response.arrayBuffer();
      return response.status;
    } catch {
      return 0;
    }
  };

  const forward = async () => {
    if (forwarding) return;
    forwarding = true;
    try {
      while (queue.length > 0 && !closed) {
        const next = queue[0]!;
        const status = await attempt(next.body, next.headers);
        next.delivery.attempts.push(status);
        if (status >= 200 && status < 300) {
          next.delivery.acknowledged = true;
          queue.shift();
        } else {
          await new Promise((resolve) => setTimeout(resolve, retryDelayMs));
        }
      }
    } finally {
      forwarding = false;
    }
    if (queue.length === 0) for (const resolve of idleWaiters.splice(0)) resolve();
  };

  const server: Server = createServer((request, response) => {
    void readBody(request).then((body) => {
      const headers: Record<string, string> = {};
      for (const name of ['content-type', 'logto-signature-sha-256', 'user-agent']) {
        const value = request.headers[name];
        if (typeof value === 'string') headers[name] = value;
      }
      let event = 'unknown';
      try {
        event = String((JSON.parse(body.toString('utf8')) as { event?: unknown }).event);
      } catch {
        // Forwarded as is: the service decides what a bad body is.
      }
      const delivery: RelayedDelivery = {
        dedupKey: `sha256:${createHash('sha256').update(body).digest('hex')}`,
        event,
        attempts: [],
        acknowledged: false,
      };
      deliveries.push(delivery);
      queue.push({ delivery, body, headers });
      response.writeHead(200).end();
      void forward();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/relay`,
    deliveries,
    setTargets(urls) {
      targets = [...urls];
      void forward();
    },
    idle(timeoutMs = 30_000) {
      if (queue.length === 0) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${queue.length} deliveries still unacknowledged after ${timeoutMs} ms`)), timeoutMs);
        idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        closed = true;
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
};
