import { createHash } from 'node:crypto';
import request from 'supertest';
import { Webhook } from 'svix';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { webhookDeliveries } from '../../db/schema.js';
import { createApp } from '../../src/api/app.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import { signLogtoBody, verifyLogtoSignature } from '../../src/webhooks/signature.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { stubActions } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { recordedDeliveries, recordedSigningKey } from '../helpers/recordings.js';

const svixSecret = `whsec_${Buffer.from('a-relay-secret-of-some-length!!').toString('base64')}`;

describe('the recorded deliveries', () => {
  it('every one verifies with its recorded key, over its exact raw bytes, and not with another key', () => {
    const deliveries = recordedDeliveries();
    expect(deliveries).toHaveLength(36);
    for (const delivery of deliveries) {
      const raw = Buffer.from(delivery.rawBody, 'utf8');
      expect(signLogtoBody(recordedSigningKey, raw)).toBe(delivery.headers['logto-signature-sha-256']);
      expect(verifyLogtoSignature([recordedSigningKey], raw, delivery.headers['logto-signature-sha-256'])).toBe(true);
      expect(verifyLogtoSignature(['another-key'], raw, delivery.headers['logto-signature-sha-256'])).toBe(false);
    }
  });
});

describe('POST /webhooks/logto', () => {
  let database: TestDatabase;
  let woken = 0;
  const app = () => {
    const config = loadConfig({
      LOGTO_BASE_URL: 'http://logto.invalid',
      LOGTO_CLIENT_ID: 'client',
      LOGTO_CLIENT_SECRET: 'client-secret',
      LOGTO_WEBHOOK_SIGNING_KEYS: `old-rotated-key,${recordedSigningKey}`,
      SVIX_WEBHOOK_SECRET: svixSecret,
    });
    return createApp({
      db: database.db,
      config,
      logger: silentLogger,
      webhookRouter: createWebhookRouter({ db: database.db, config, logger: silentLogger, onDelivery: () => (woken += 1) }),
      actions: stubActions().actions,
    });
  };
  const stored = () => database.db.select().from(webhookDeliveries);
  const [userCreated] = recordedDeliveries();
  const post = (body: string | Buffer, headers: Record<string, string>) =>
    request(app()).post('/webhooks/logto').set('content-type', 'application/json').set(headers).send(body);

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

  it('stores a recorded delivery before answering 202, and wakes the worker', async () => {
    const response = await post(userCreated!.rawBody, { 'logto-signature-sha-256': userCreated!.headers['logto-signature-sha-256']! });
    expect(response.status).toBe(202);
    expect(response.body).toEqual({ id: expect.any(Number), duplicate: false });
    const [row] = await stored();
    expect(row).toMatchObject({
      id: response.body.id,
      event: 'User.Created',
      channel: 'logto',
      status: 'pending',
      dedupKey: `sha256:${createHash('sha256').update(userCreated!.rawBody).digest('hex')}`,
    });
    expect(row!.payload).toEqual(JSON.parse(userCreated!.rawBody));
    expect(woken).toBe(1);
  });

  it('answers a duplicate 2xx with the first id and stores it once', async () => {
    const headers = { 'logto-signature-sha-256': userCreated!.headers['logto-signature-sha-256']! };
    const first = await post(userCreated!.rawBody, headers);
    const second = await post(userCreated!.rawBody, headers);
    expect(second.status).toBe(202);
    expect(second.body).toEqual({ id: first.body.id, duplicate: true });
    expect(await stored()).toHaveLength(1);
    expect(woken).toBe(1);
  });

  it('accepts either configured key, so a key can be rotated without downtime', async () => {
    const body = JSON.stringify({ event: 'User.Created', createdAt: new Date().toISOString(), data: { id: 'rotated' } });
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody('old-rotated-key', body) });
    expect(response.status).toBe(202);
  });

  it.each([
    ['no signature', {}, undefined],
    ['a signature made with the wrong key', { 'logto-signature-sha-256': 'WRONG' }, undefined],
    ['a tampered body', { 'logto-signature-sha-256': 'RECORDED' }, 'tamper'],
    ['a signature that is not hex', { 'logto-signature-sha-256': 'not-a-signature' }, undefined],
  ])('refuses %s with 401 problem+json and stores nothing', async (_name, headers: Record<string, string>, mode) => {
    let body = userCreated!.rawBody;
    const signature = headers['logto-signature-sha-256'];
    const resolved: Record<string, string> = {};
    if (signature === 'WRONG') resolved['logto-signature-sha-256'] = signLogtoBody('wrong-key', body);
    else if (signature === 'RECORDED') resolved['logto-signature-sha-256'] = userCreated!.headers['logto-signature-sha-256']!;
    else if (signature) resolved['logto-signature-sha-256'] = signature;
    if (mode === 'tamper') body = body.replace('"alice"', '"mallory"');
    const response = await post(body, resolved);
    expect(response.status).toBe(401);
    expect(response.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(response.body).toMatchObject({ status: 401, code: 'invalid_signature' });
    expect(response.body.detail).not.toContain(recordedSigningKey);
    expect(await stored()).toEqual([]);
  });

  it('refuses a signed body that is not JSON with 400', async () => {
    const body = 'this is not json';
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('invalid_json');
    expect(await stored()).toEqual([]);
  });

  it('refuses a signed JSON value that is not an object with 400', async () => {
    const body = '[1,2,3]';
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(400);
    expect(await stored()).toEqual([]);
  });

  it('refuses an empty body with 400', async () => {
    const response = await request(app()).post('/webhooks/logto').set('logto-signature-sha-256', signLogtoBody(recordedSigningKey, ''));
    expect(response.status).toBe(400);
    expect(response.body.code).toBe('empty_body');
    expect(await stored()).toEqual([]);
  });

  it('refuses a body over 1 MiB with 413', async () => {
    const body = JSON.stringify({ event: 'User.Created', padding: 'x'.repeat(1024 * 1024) });
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(413);
    expect(response.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(await stored()).toEqual([]);
  });

  it('stores an unknown event (the worker marks it ignored)', async () => {
    const body = JSON.stringify({ event: 'Something.New', createdAt: new Date().toISOString() });
    const response = await post(body, { 'logto-signature-sha-256': signLogtoBody(recordedSigningKey, body) });
    expect(response.status).toBe(202);
    expect((await stored())[0]?.event).toBe('Something.New');
  });

  it('verifies deliveries relayed through Svix, deduplicates them by message id, and refuses stale ones', async () => {
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
    const forged = await post(body, { ...sign('msg_4', new Date()), 'svix-signature': 'v1,AAAA' });
    expect(forged.status).toBe(401);
    const rows = await stored();
    expect(rows.map((row) => [row.channel, row.dedupKey]).sort()).toEqual([
      ['svix', 'svix:msg_1'],
      ['svix', 'svix:msg_2'],
    ]);
  });

  it('answers 503 when the database cannot take the delivery', async () => {
    const closed = await createTestDatabase();
    const config = loadConfig({
      LOGTO_BASE_URL: 'http://logto.invalid',
      LOGTO_CLIENT_ID: 'client',
      LOGTO_CLIENT_SECRET: 'client-secret',
      LOGTO_WEBHOOK_SIGNING_KEYS: recordedSigningKey,
    });
    const broken = createApp({
      db: closed.db,
      config,
      logger: silentLogger,
      webhookRouter: createWebhookRouter({ db: closed.db, config, logger: silentLogger }),
      actions: stubActions().actions,
    });
    await closed.drop();
    const response = await request(broken)
      .post('/webhooks/logto')
      .set('content-type', 'application/json')
      .set('logto-signature-sha-256', userCreated!.headers['logto-signature-sha-256']!)
      .send(userCreated!.rawBody);
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('5');
    expect(response.body.code).toBe('inbox_unavailable');
  });
});
