import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'svix';

export type ReceivedEvent = {
  webhookId: string;
  signature: string;
  headers: IncomingHttpHeaders;
  body: { type: string; timestamp: string; data: Record<string, unknown> & { changeId: number } };
  /** The body as received, byte for byte. */
  raw: string;
  /** Whether this attempt was answered with a 2xx. */
  accepted: boolean;
};

export type EventReceiver = {
  url: string;
  /** Every attempt that arrived with a valid signature, in arrival order. */
  received: ReceivedEvent[];
  /** Attempts whose signature did not verify. */
  rejected: number;
  /** The answer for each attempt (default 204); may wait. */
  respond: (event: ReceivedEvent) => number | Promise<number>;
  /** The events answered with a 2xx, one per webhook-id. */
  delivered(): ReceivedEvent[];
  /** Resolves when `predicate` holds of `received`. */
  waitFor(predicate: (received: ReceivedEvent[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
};

/**
 * A subscriber over real HTTP that verifies every delivery with svix's `Webhook.verify`, as a receiver
 * using any Standard Webhooks library would. `secret()` is read at each request, so a test can switch it.
 */
export const startEventReceiver = async (secret: () => string | string[]): Promise<EventReceiver> => {
  const receiver: EventReceiver = {
    url: '',
    received: [],
    rejected: 0,
    respond: () => 204,
    delivered() {
      const seen = new Map<string, ReceivedEvent>();
      for (const event of this.received) if (event.accepted && !seen.has(event.webhookId)) seen.set(event.webhookId, event);
      return [...seen.values()];
    },
    async waitFor(predicate, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(this.received)) {
        if (Date.now() > deadline) throw new Error(`the receiver did not get what was expected (got ${this.received.length} attempts)`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    close: async () => {},
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const secrets = [secret()].flat();
      const headers = {
        'webhook-id': String(req.headers['webhook-id']),
        'webhook-timestamp': String(req.headers['webhook-timestamp']),
        'webhook-signature': String(req.headers['webhook-signature']),
      };
      const verified = secrets.every((key) => {
        try {
          new Webhook(key).verify(raw, headers);
          return true;
        } catch {
          return false;
        }
      });
      if (!verified) {
        receiver.rejected += 1;
        res.statusCode = 401;
        res.end();
        return;
      }
      const event: ReceivedEvent = {
        webhookId: headers['webhook-id'],
        signature: headers['webhook-signature'],
        headers: req.headers,
        body: JSON.parse(raw) as ReceivedEvent['body'],
        raw,
        accepted: false,
      };
      Promise.resolve(receiver.respond(event)).then((status) => {
        event.accepted = status >= 200 && status < 300;
        receiver.received.push(event);
        res.statusCode = status;
        res.end();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/access`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return receiver;
};
