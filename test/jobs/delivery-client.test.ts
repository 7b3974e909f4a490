import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeliveryClient, describeDeliveryError } from '../../src/jobs/delivery-client.js';

/** The event sender's HTTP client against a real local server: statuses, redirects, and the address guard. */
describe('the delivery client', () => {
  let server: Server;
  let port: number;
  const received: { method?: string; headers: http.IncomingHttpHeaders; body: string }[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        received.push({ method: req.method, headers: req.headers, body });
        if (req.url === '/moved') {
          res.writeHead(302, { location: '/hook' }).end('moved');
          return;
        }
        res.writeHead(req.url === '/fail' ? 503 : 204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('posts the body with its headers and answers with the status, without following redirects', async () => {
    const client = createDeliveryClient({ timeoutMs: 5_000, connectionsPerOrigin: 2, allowPrivateUrls: true });
    try {
      expect(await client.post(`http://127.0.0.1:${port}/hook`, '{"a":1}', { 'content-type': 'application/json', 'webhook-id': 'evt_1' })).toBe(204);
      expect(received.at(-1)).toMatchObject({ method: 'POST', body: '{"a":1}', headers: { 'webhook-id': 'evt_1' } });
      expect(await client.post(`http://127.0.0.1:${port}/fail`, '{}', {})).toBe(503);
      const before = received.length;
      expect(await client.post(`http://127.0.0.1:${port}/moved`, '{}', {})).toBe(302);
      expect(received).toHaveLength(before + 1);
    } finally {
      await client.close();
    }
  });

  it('refuses to connect to a name that resolves to a loopback address unless private addresses are allowed', async () => {
    const guarded = createDeliveryClient({ timeoutMs: 5_000, connectionsPerOrigin: 2, allowPrivateUrls: false });
    const before = received.length;
    try {
      const error = await guarded.post(`http://localhost:${port}/hook`, '{}', {}).then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(describeDeliveryError(error)).toMatch(/private, loopback or link-local/);
      expect(received).toHaveLength(before);
    } finally {
      await guarded.close();
    }
  });

  it('refuses a URL whose host is a private address literal, IPv4 or IPv6, without connecting, unless private addresses are allowed', async () => {
    const guarded = createDeliveryClient({ timeoutMs: 5_000, connectionsPerOrigin: 2, allowPrivateUrls: false });
    const before = received.length;
    try {
      for (const url of [`http://127.0.0.1:${port}/hook`, `http://[::1]:${port}/hook`, 'http://10.1.2.3/hook', 'http://[::ffff:192.168.0.1]/hook']) {
        const error = await guarded.post(url, '{}', {}).then(
          () => null,
          (caught: unknown) => caught,
        );
        expect(describeDeliveryError(error)).toMatch(/ is a private, loopback or link-local address$/);
      }
      expect(received).toHaveLength(before);
    } finally {
      await guarded.close();
    }
    const open = createDeliveryClient({ timeoutMs: 5_000, connectionsPerOrigin: 2, allowPrivateUrls: true });
    try {
      expect(await open.post(`http://127.0.0.1:${port}/hook`, '{}', {})).toBe(204);
    } finally {
      await open.close();
    }
  });
});
