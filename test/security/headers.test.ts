import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { silentLogger } from '../../src/logger.js';
import { createTestApp, expectProblem, type TestApp } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { listen, webhookConfig, type Receiver } from '../webhooks/harness.js';
import { rawClient, type RawResponse } from './hostile.js';
import { operationsOf } from './operations.js';

const directives = (policy: string | undefined): Map<string, string[]> =>
  new Map(
    (policy ?? '')
      .split(';')
      .map((part) => part.trim().split(/\s+/))
      .filter((words) => words[0])
      .map(([name, ...values]) => [name!, values]),
  );

const expectSecurityHeaders = (response: { headers: Record<string, unknown> }, where: string) => {
  expect(response.headers['x-content-type-options'], where).toBe('nosniff');
  expect(response.headers['referrer-policy'], where).toBe('no-referrer');
  expect(response.headers['x-powered-by'], where).toBeUndefined();
  expect(response.headers['x-frame-options'], where).toBe('SAMEORIGIN');
  expect(response.headers['content-security-policy'], where).toEqual(expect.any(String));
};

describe('security headers and size limits', () => {
  let database: TestDatabase;
  let t: TestApp;
  let server: Receiver;
  let client: ReturnType<typeof rawClient>;
  const signingKey = 'headers-test-signing-key';

  beforeAll(async () => {
    database = await createTestDatabase();
    const config = webhookConfig({ signingKeys: [signingKey] });
    t = await createTestApp(database.db, { webhookRouter: createWebhookRouter({ db: database.db, config, logger: silentLogger }) });
    server = await listen(t.app);
    client = rawClient(server.url.replace('/webhooks/logto', ''));
  });
  afterAll(async () => {
    client.close();
    await server.close();
    await database.drop();
  });

  it('sends them on every response, errors included, with a CSP that allows nothing outside /docs', async () => {
    const document = (await request(t.app).get('/openapi.json')).body as Record<string, unknown>;
    const responses: [string, request.Response][] = [];
    for (const operation of operationsOf(document)) {
      if (operation.path.startsWith('/docs')) continue;
      const path = operation.path.replace(/\{[^}]+\}/g, '1');
      const method = operation.method.toLowerCase() as 'get' | 'post' | 'delete';
      responses.push([`${operation.method} ${path}`, await request(t.app)[method](path).set('Authorization', `Bearer ${t.keys.write.secret}`).send({})]);
      responses.push([`${operation.method} ${path} (no key)`, await request(t.app)[method](path)]);
    }
    responses.push(['404', await request(t.app).get('/nothing-here')]);
    responses.push(['400', await t.get('/v1/users?limit=0')]);
    responses.push(['bad JSON', await t.post('/v1/users').set('content-type', 'application/json').send('{')]);
    expect(responses.map(([, response]) => response.status)).toEqual(expect.arrayContaining([200, 202, 400, 401, 404]));
    for (const [where, response] of responses) {
      expectSecurityHeaders(response, where);
      const policy = directives(response.headers['content-security-policy']);
      expect(policy.get('default-src'), where).toEqual(["'none'"]);
      expect(policy.get('frame-ancestors'), where).toEqual(["'none'"]);
      expect(policy.has('script-src'), where).toBe(false);
    }
  });

  it('gives /docs a policy of its own under which the reference page loads every asset and runs only its own script', async () => {
    const redirect = await request(t.app).get('/docs');
    expectSecurityHeaders(redirect, '/docs');
    const page = await request(t.app).get('/docs/').expect(200);
    expectSecurityHeaders(page, '/docs/');
    const policy = directives(page.headers['content-security-policy']);
    expect(policy.get('default-src')).toEqual(["'none'"]);
    expect(policy.get('frame-ancestors')).toEqual(["'none'"]);
    expect(policy.get('script-src')).not.toContain("'unsafe-inline'");
    expect(policy.get('script-src')).not.toContain("'unsafe-eval'");
    expect(policy.get('connect-src')).toEqual(["'self'"]);

    const html = page.text;
    expect(html).not.toMatch(/\son[a-z]+\s*=/i);
    const inline = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((match) => match[1]!);
    expect(inline.length).toBeGreaterThan(0);
    for (const script of inline) {
      expect(policy.get('script-src')).toContain(`'sha256-${createHash('sha256').update(script).digest('base64')}'`);
    }
    const scripts = [...html.matchAll(/<script src="([^"]+)"/g)].map((match) => match[1]!);
    const styles = [...html.matchAll(/<link rel="stylesheet" href="([^"]+)"/g)].map((match) => match[1]!);
    expect(scripts.length).toBeGreaterThanOrEqual(2);
    expect(styles.length).toBeGreaterThanOrEqual(1);
    // Every asset is same-origin (allowed by 'self') and is served with the type the browser needs under nosniff.
    for (const [asset, type] of [...scripts.map((src) => [src, /javascript/] as const), ...styles.map((href) => [href, /text\/css/] as const)]) {
      expect(asset).toMatch(/^\.\//);
      const response = await request(t.app).get(new URL(asset, 'http://host/docs/').pathname);
      expect(response.status, asset).toBe(200);
      expect(response.headers['content-type'], asset).toMatch(type);
      expectSecurityHeaders(response, asset);
    }
    expect(policy.get('script-src')).toContain("'self'");
    expect(policy.get('style-src')).toContain("'self'");
    // The spec the page fetches is same-origin too.
    expect(html).toContain("'../openapi.json'");
  });

  it('refuses an API body over 64 kB with 413, also when it only grows that large once inflated', async () => {
    const callsBefore = t.calls.length;
    const big = JSON.stringify({ name: 'x'.repeat(70_000) });
    expectProblem(await t.post('/v1/users').set('content-type', 'application/json').send(big), 413, 'body_too_large');
    const bomb = gzipSync(Buffer.from(JSON.stringify({ name: ' '.repeat(50_000_000) })));
    expect(bomb.length).toBeLessThan(100_000);
    const response = await client.send('POST', '/v1/users', {
      headers: { authorization: `Bearer ${t.keys.write.secret}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: bomb,
    });
    expect(response.status).toBe(413);
    expect(t.calls.length).toBe(callsBefore);
  });

  it('refuses a webhook body over 1 MiB with 413, declared, chunked or inflated', async () => {
    const headers = { 'content-type': 'application/json', 'logto-signature-sha-256': 'a'.repeat(64) };
    const declared = await client.send('POST', '/webhooks/logto', { headers, body: Buffer.alloc(1024 * 1024 + 1, 0x20) });
    expect(declared.status).toBe(413);
    const chunked = await new Promise<RawResponse>((resolve, reject) => {
      // No Content-Length: the limit must hold while the body streams in.
      const socket = connect(Number(new URL(server.url).port), '127.0.0.1', () => {
        socket.write(
          'POST /webhooks/logto HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
        );
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        for (let index = 0; index < 40; index += 1) socket.write(`${chunk.length.toString(16)}\r\n${chunk.toString()}\r\n`);
        // What is past the limit is read and dropped, not kept; the answer comes once the body ends.
        socket.write('0\r\n\r\n');
      });
      let answer = '';
      socket.on('data', (data: Buffer) => {
        answer += data.toString();
        if (!answer.includes('\r\n\r\n')) return;
        const status = Number(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1] ?? 0);
        resolve({ status, headers: {}, body: Buffer.from(answer), text: answer });
        socket.destroy();
      });
      socket.on('error', () => {});
      setTimeout(() => reject(new Error('no answer to a chunked body over the limit')), 20_000).unref();
    });
    expect(chunked.status).toBe(413);
    const bomb = await client.send('POST', '/webhooks/logto', {
      headers: { ...headers, 'content-encoding': 'gzip' },
      body: gzipSync(Buffer.alloc(30 * 1024 * 1024, 0x20)),
    });
    expect(bomb.status).toBe(413);
  });

  it("answers 431 to headers over Node's 16 KiB limit, 400 to a flood of header fields, and a request with some headers normally", async () => {
    const huge = await client.send('GET', '/healthz', { headers: { 'x-filler': 'a'.repeat(20_000) } });
    expect(huge.status).toBe(431);
    const headers = (count: number) => Object.fromEntries(Array.from({ length: count }, (_, index) => [`x-h${index}`, '1']));
    const some = await client.send('GET', '/healthz', { headers: headers(100) });
    expect(some.status).toBe(200);
    expect(some.headers['x-content-type-options']).toBe('nosniff');
    // A flood of header fields is refused by Node's parser before any of our code runs.
    const flood = await client.send('GET', '/healthz', { headers: headers(3000) });
    expect([400, 431]).toContain(flood.status);
    const longPath = await client.send('GET', `/v1/users/${'a'.repeat(20_000)}`);
    expect(longPath.status).toBe(431);
  });

  it('refuses an API body nested 20,000 deep with 400, not a stack overflow', async () => {
    const callsBefore = t.calls.length;
    const deep = `{"userIds":${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
    const response = await t.post('/v1/organizations/org1/members').set('content-type', 'application/json').send(deep);
    expectProblem(response, 400, 'invalid_params');
    expect(t.calls.length).toBe(callsBefore);
  });
});
