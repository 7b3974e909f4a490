import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import request from 'supertest';
import { Webhook } from 'svix';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import express from 'express';
import { webhookDeliveries } from '../../db/schema.js';
import { createApp } from '../../src/api/app.js';
import { contentHash } from '../../src/db/inbox.js';
import { silentLogger } from '../../src/logger.js';
import { metrics } from '../../src/metrics.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { signLogtoBody, verifyLogtoSignature } from '../../src/webhooks/signature.js';
import { stubActions } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { recordedDeliveries, recordedSigningKey } from '../helpers/recordings.js';
import { receiverApp, svixSecret, webhookConfig } from './harness.js';

const outcomeCount = async (outcome: string) =>
  (await metrics.webhookDeliveries.get()).values.find((value) => value.labels.outcome === outcome)?.value ?? 0;

describe('the recorded deliveries', () => {
  it('every one verifies with its recorded key over its exact raw bytes, and with no other key', () => {
    const recorded = recordedDeliveries();
    expect(recorded).toHaveLength(36);
    for (const delivery of recorded) {
      const raw = Buffer.from(delivery.rawBody, 'utf8');
      const signature = delivery.headers['logto-signature-sha-256'];
      expect(signLogtoBody(recordedSigningKey, raw)).toBe(signature);
      expect(verifyLogtoSignature([recordedSigningKey], raw, signature)).toBe(true);
      expect(verifyLogtoSignature(['another-key'], raw, signature)).toBe(false);
      expect(verifyLogtoSignature([recordedSigningKey], Buffer.concat([raw, Buffer.from(' ')]), signature)).toBe(false);
    }
  });
});

describe('POST /webhooks/logto', () => {
  let database: TestDatabase;
  let woken = 0;
  const config = webhookConfig({ signingKeys: ['old-rotated-key', recordedSigningKey], svix: true });
  // Every delivery wakes the worker here; how a stream of them is coalesced is tested in coalesced-wake.test.ts.
  const app = () => receiverApp(database.db, config, () => (woken += 1), { wakeIntervalMs: 0 });
  const stored = () => database.db.select().from(webhookDeliveries).orderBy(webhookDeliveries.id);
  const recorded = recordedDeliveries();
  const userCreated = recorded[0]!;
  const recordedSignature = userCreated.headers['logto-signature-sha-256']!;
  const post = (body: string | Buffer, headers: Record<string, string>, target = app()) =>
    request(target).post('/webhooks/logto').set('content-type', 'application/json').set(headers).send(body);

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });
  beforeEach(async () => {
    await database.db.delete(webhookDeliveries);
    woken = 0;
  });

  it('stores every recorded delivery, replayed with its recorded headers, before answering 202', async () => {
    const target = app();
    for (const delivery of recorded) {
      const headers = Object.fromEntries(
        Object.entries(delivery.headers).filter(([name]) => !['host', 'content-length', 'connection'].includes(name)),
      );
      const response = await request(target).post('/webhooks/logto').set(headers).send(delivery.rawBody);
      expect(response.status).toBe(202);
      expect(response.body).toEqual({ id: expect.any(Number), duplicate: false });
    }
    const rows = await stored();
    expect(rows).toHaveLength(36);
    expect(woken).toBe(36);
    rows.forEach((row, index) => {
      const delivery = recorded[index]!;
      const payload = JSON.parse(delivery.rawBody) as Record<string, unknown>;
      expect(row).toMatchObject({
        event: payload.event,
        channel: 'logto',
        status: 'pending',
        attempts: 0,
        dedupKey: `sha256:${createHash('sha256').update(delivery.rawBody).digest('hex')}`,
        contentHash: contentHash(payload),
      });
      expect(row.payload).toEqual(payload);
    });
  });

  it('answers a duplicate 2xx with the first id, stores it once and does not wake the worker again', async () => {
    const headers = { 'logto-signature-sha-256': recordedSignature };
    const first = await post(userCreated.rawBody, headers);
    const second = await post(userCreated.rawBody, headers);
    expect(first.status).toBe(202);
    expect(second.status).toBe(202);
    expect(second.body).toEqual({ id: first.body.id, duplicate: true });
    expect(await stored()).toHaveLength(1);
    expect(woken).toBe(1);
  });

  it('accepts either configured key, so a key can be rotated without downtime', async () => {
    const body = JSON.stringify({ event: 'User.Created', createdAt: new Date().toISOString(), data: { id: 'rotated' } });
    expect((await post(body, { 'logto-signature-sha-256': signLogtoBody('old-rotated-key', body) })).status).toBe(202);
    const other = JSON.stringify({ event: 'User.Created', createdAt: new Date().toISOString(), data: { id: 'rotated-2' } });
    expect((await post(other, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, other) })).status).toBe(202);
    const onlyNew = receiverApp(database.db, webhookConfig({ signingKeys: [recordedSigningKey] }));
    const third = JSON.stringify({ event: 'User.Created', createdAt: new Date().toISOString(), data: { id: 'rotated-3' } });
    expect((await post(third, { 'logto-signature-sha-256': signLogtoBody('old-rotated-key', third) }, onlyNew)).status).toBe(401);
    expect(await stored()).toHaveLength(2);
  });

  it.each([
    ['no signature', () => ({ body: userCreated.rawBody, headers: {} })],
    ['a signature made with the wrong key', () => ({ body: userCreated.rawBody, headers: { 'logto-signature-sha-256': signLogtoBody('wrong-key', userCreated.rawBody) } })],
    ['a tampered body', () => ({ body: userCreated.rawBody.replace('"alice"', '"mallory"'), headers: { 'logto-signature-sha-256': recordedSignature } })],
    ['a signature that is not hex', () => ({ body: userCreated.rawBody, headers: { 'logto-signature-sha-256': 'not-a-signature' } })],
    ['a truncated signature', () => ({ body: userCreated.rawBody, headers: { 'logto-signature-sha-256': recordedSignature.slice(0, 32) } })],
  ])('refuses %s with 401 problem+json and stores nothing', async (_name, make) => {
    const before = await outcomeCount('unauthorized');
    const { body, headers } = make();
    const response = await post(body, headers);
    expect(response.status).toBe(401);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ type: expect.any(String), title: 'Unauthorized', status: 401, code: 'invalid_signature', detail: expect.any(String) });
    expect(JSON.stringify(response.body)).not.toContain(recordedSigningKey);
    expect(await stored()).toEqual([]);
    expect(await outcomeCount('unauthorized')).toBe(before + 1);
    expect(woken).toBe(0);
  });

  it('logs a refused delivery without its body and without its signature', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) }));
    const logged = express().use('/webhooks', createWebhookRouter({ db: database.db, config, logger }));
    const signature = signLogtoBody('wrong-key', userCreated.rawBody);
    expect((await post(userCreated.rawBody, { 'logto-signature-sha-256': signature }, logged)).status).toBe(401);
    const output = lines.join('');
    expect(output).toContain('missing or wrong signature');
    expect(output).not.toContain(signature);
    expect(output).not.toContain('alice@example.com');
  });

  it('refuses a signed body that is not JSON, or not an object, with 400 and stores nothing', async () => {
    const notJson = 'this is not json';
    const response = await post(notJson, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, notJson) });
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ status: 400, code: 'invalid_json' });
    for (const value of ['[1,2,3]', '"text"', 'null', '42']) {
      const refused = await post(value, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, value) });
      expect(refused.status).toBe(400);
      expect(refused.body.code).toBe('invalid_payload');
    }
    expect(await stored()).toEqual([]);
  });

  it('refuses an empty body with 400 problem+json', async () => {
    const response = await request(app()).post('/webhooks/logto').set('logto-signature-sha-256', signLogtoBody(recordedSigningKey, ''));
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ status: 400, code: 'empty_body' });
    expect(await stored()).toEqual([]);
  });

  it('refuses a body over 1 MiB with 413 problem+json, even with a valid signature', async () => {
    const before = await outcomeCount('too_large');
    const body = JSON.stringify({ event: 'User.Created', padding: 'x'.repeat(1024 * 1024) });
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(413);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ status: 413, code: 'body_too_large' });
    expect(await stored()).toEqual([]);
    expect(await outcomeCount('too_large')).toBe(before + 1);
  });

  it('accepts a body just under 1 MiB', async () => {
    const padding = 'x'.repeat(1024 * 1024 - 200);
    const body = JSON.stringify({ event: 'Something.Big', padding });
    expect(Buffer.byteLength(body)).toBeLessThanOrEqual(1024 * 1024);
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(202);
  });

  it('reads a body however it is framed: declared length, chunked, gzip; one cut short stores nothing', async () => {
    const server = app().listen(0);
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as AddressInfo;
    const send = (body: Buffer, headers: Record<string, string | number>, sent = body) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpRequest({ port, method: 'POST', path: '/webhooks/logto', headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        });
        req.on('error', reject);
        // Several writes: the body arrives in more than one chunk.
        const half = Math.floor(sent.length / 2);
        req.write(sent.subarray(0, half));
        setTimeout(() => req.end(sent.subarray(half)), 5);
      });
    const delivery = (framing: string) => {
      const body = Buffer.from(JSON.stringify({ event: 'User.Created', createdAt: new Date().toISOString(), data: { id: `u-${framing}`, name: 'ü'.repeat(2000) } }));
      return { body, signature: signLogtoBody(recordedSigningKey, body) };
    };
    try {
      const declared = delivery('declared');
      expect((await send(declared.body, { 'content-type': 'application/json', 'content-length': declared.body.length, 'logto-signature-sha-256': declared.signature })).status).toBe(202);
      const chunked = delivery('chunked');
      expect((await send(chunked.body, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'logto-signature-sha-256': chunked.signature })).status).toBe(202);
      const zipped = delivery('gzip');
      const compressed = gzipSync(zipped.body);
      expect(
        (await send(zipped.body, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': compressed.length, 'logto-signature-sha-256': zipped.signature }, compressed)).status,
      ).toBe(202);
      expect((await stored()).map((row) => (row.payload as { data: { id: string } }).data.id)).toEqual(['u-declared', 'u-chunked', 'u-gzip']);

      // Declared longer than what is sent before the connection closes.
      const short = delivery('short');
      await new Promise<void>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.write(
            `POST /webhooks/logto HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${short.body.length}\r\n` +
              `logto-signature-sha-256: ${short.signature}\r\n\r\n`,
          );
          socket.write(short.body.subarray(0, 100), () => setTimeout(() => socket.destroy(), 20));
        });
        socket.on('close', () => resolve());
        socket.on('error', () => {});
      });
      const after = delivery('after');
      expect((await send(after.body, { 'content-type': 'application/json', 'content-length': after.body.length, 'logto-signature-sha-256': after.signature })).status).toBe(202);
      expect((await stored()).map((row) => (row.payload as { data: { id: string } }).data.id)).toEqual(['u-declared', 'u-chunked', 'u-gzip', 'u-after']);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('stores an unknown event (the worker marks it ignored)', async () => {
    const body = JSON.stringify({ event: 'Something.New', createdAt: new Date().toISOString() });
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(202);
    expect((await stored()).map((row) => row.event)).toEqual(['Something.New']);
  });

  it('verifies deliveries relayed through Svix, deduplicates them by message id, and refuses stale or forged ones', async () => {
    const body = JSON.stringify({ event: 'Organization.Created', createdAt: new Date().toISOString(), data: { id: 'org1' } });
    const relay = new Webhook(svixSecret);
    const sign = (id: string, at: Date) => ({
      'svix-id': id,
      'svix-timestamp': String(Math.floor(at.getTime() / 1000)),
      'svix-signature': relay.sign(id, at, body),
    });
    const first = await post(body, sign('msg_1', new Date()));
    expect(first.status).toBe(202);
    const again = await post(body, sign('msg_1', new Date()));
    expect(again.body).toEqual({ id: first.body.id, duplicate: true });
    // The Standard Webhooks header names work as well.
    const standard = sign('msg_2', new Date());
    const viaStandard = await post(body, {
      'webhook-id': standard['svix-id'],
      'webhook-timestamp': standard['svix-timestamp'],
      'webhook-signature': standard['svix-signature'],
    });
    expect(viaStandard.status).toBe(202);
    const stale = await post(body, sign('msg_3', new Date(Date.now() - 3600_000)));
    expect(stale.status).toBe(401);
    expect(stale.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect((await post(body, { ...sign('msg_4', new Date()), 'svix-signature': 'v1,AAAA' })).status).toBe(401);
    expect((await post(`${body} `, sign('msg_5', new Date()))).status).toBe(401);
    // Signed by a relay, but no relay secret is configured: refused.
    const noRelay = receiverApp(database.db, webhookConfig({ signingKeys: [recordedSigningKey] }));
    expect((await post(body, sign('msg_6', new Date()), noRelay)).status).toBe(401);
    const rows = await stored();
    expect(rows.map((row) => [row.channel, row.dedupKey])).toEqual([
      ['svix', 'svix:msg_1'],
      ['svix', 'svix:msg_2'],
    ]);
  });

  it('refuses a relayed body that verifies but is not JSON with 400', async () => {
    const body = 'plain text';
    const at = new Date();
    const response = await post(body, {
      'svix-id': 'msg_text',
      'svix-timestamp': String(Math.floor(at.getTime() / 1000)),
      'svix-signature': new Webhook(svixSecret).sign('msg_text', at, body),
    });
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('invalid_json');
    expect(await stored()).toEqual([]);
  });

  it('is served at /webhooks/logto by the API app, ahead of its JSON parser', async () => {
    const served = createApp({
      db: database.db,
      config,
      logger: silentLogger,
      webhookRouter: createWebhookRouter({ db: database.db, config, logger: silentLogger }),
      actions: stubActions().actions,
    });
    const response = await post(userCreated.rawBody, { 'logto-signature-sha-256': recordedSignature }, served);
    expect(response.status).toBe(202);
    expect((await post('x', {}, served)).status).toBe(401);
    expect(await stored()).toHaveLength(1);
  });

  it('answers 503 problem+json with Retry-After when the database cannot take the delivery', async () => {
    const closed = await createTestDatabase();
    const broken = receiverApp(closed.db, config);
    await closed.drop();
    const before = await outcomeCount('unavailable');
    const response = await post(userCreated.rawBody, { 'logto-signature-sha-256': recordedSignature }, broken);
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('5');
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body).toMatchObject({ status: 503, code: 'inbox_unavailable' });
    expect(await outcomeCount('unavailable')).toBe(before + 1);
  });
});
