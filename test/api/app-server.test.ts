import { IncomingMessage, ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { constructing, createAppServer } from '../../src/api/app-server.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

const listen = async (server: Server): Promise<string> => {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
};

describe('createAppServer', () => {
  it('builds requests and responses with the app’s prototypes, so express has none to change', async () => {
    const app = express();
    app.get('/items/:id', (req, res) => {
      res.status(201).set('X-Seen', req.get('x-probe') ?? 'none').json({ id: req.params.id, path: req.path });
    });
    const server = createAppServer(app);
    const arrivals: { request: boolean; response: boolean; incoming: boolean; outgoing: boolean }[] = [];
    // Runs before express's handler: what the server built, before any setPrototypeOf.
    server.prependListener('request', (req, res) => {
      arrivals.push({
        request: Object.getPrototypeOf(req) === app.request,
        response: Object.getPrototypeOf(res) === app.response,
        incoming: req instanceof IncomingMessage,
        outgoing: res instanceof ServerResponse,
      });
    });
    const url = await listen(server);

    for (const id of ['a', 'b']) {
      const response = await fetch(`${url}/items/${id}`, { headers: { 'x-probe': `probe-${id}` } });
      expect(response.status).toBe(201);
      expect(response.headers.get('x-seen')).toBe(`probe-${id}`);
      expect(response.headers.get('x-powered-by')).toBe('Express');
      expect(await response.json()).toEqual({ id, path: `/items/${id}` });
    }
    const missing = await fetch(`${url}/nowhere`);
    expect(missing.status).toBe(404);
    expect(arrivals).toEqual(Array(3).fill({ request: true, response: true, incoming: true, outgoing: true }));
  });

  it('reads request bodies and streams responses as a plain server does', async () => {
    const app = express();
    app.post('/echo', express.text({ type: '*/*' }), (req, res) => {
      res.type('text/plain');
      res.write(`${req.body as string}|`);
      setImmediate(() => res.end('done'));
    });
    const url = await listen(createAppServer(app));
    const response = await fetch(`${url}/echo`, { method: 'POST', body: 'x'.repeat(100_000) });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(`${'x'.repeat(100_000)}|done`);
  });

  it('builds from a plain constructor function or a class, with the prototype given and the constructor run', () => {
    function Plain(this: { value: number }, value: number) {
      this.value = value;
    }
    class Modern {
      value: number;
      constructor(value: number) {
        this.value = value;
      }
    }
    for (const base of [Plain as unknown as new (value: number) => { value: number }, Modern]) {
      const prototype = Object.create(base.prototype as object) as object;
      const Built = constructing(base as never, prototype) as unknown as new (value: number) => { value: number };
      const built = new Built(7);
      expect(Object.getPrototypeOf(built)).toBe(prototype);
      expect(built).toBeInstanceOf(base);
      expect(built.value).toBe(7);
    }
  });
});
