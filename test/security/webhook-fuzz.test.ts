import { randomUUID } from 'node:crypto';
import { gt, max } from 'drizzle-orm';
import fc from 'fast-check';
import { Webhook } from 'svix';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges } from '../../db/schema.js';
import { createApp } from '../../src/api/app.js';
import type { Config } from '../../src/config.js';
import type { InboxWorker } from '../../src/jobs/inbox-worker.js';
import { silentLogger } from '../../src/logger.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { logtoOrganizationRoleSchema, logtoOrganizationSchema, logtoUserSchema } from '../../src/logto/index.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { signLogtoBody } from '../../src/webhooks/signature.js';
import { stubActions } from '../api/harness.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { recordedDeliveries } from '../helpers/recordings.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';
import { deliveries, listen, svixSecret, testWorker, webhookConfig, type Receiver } from '../webhooks/harness.js';
import { deeplyNested, fingerprint, hostileJson, hostileString, invalidUtf8Bytes, prototypeKeys, rawClient, runs, batchOf } from './hostile.js';

const events = [...new Set(recordedDeliveries().map((delivery) => JSON.parse(delivery.rawBody).event as string))];

/** Header names a sender may set (fetch refuses the hop-by-hop ones, which Node's parser owns anyway). */
const headerNames = ['logto-signature-sha-256', 'svix-id', 'svix-timestamp', 'svix-signature', 'webhook-id', 'webhook-timestamp', 'webhook-signature', 'content-type', 'content-encoding', 'x-request-id', 'user-agent', 'x-forwarded-for'];
const headerValue = fc
  .string({ maxLength: 200, unit: fc.integer({ min: 0x20, max: 0xff }).filter((code) => code < 0x7f || code > 0x9f).map((code) => String.fromCharCode(code)) })
  .map((value) => value.trim());

/** Mostly small, now and then up to `max`: big bodies are few so that many cases fit in a short run. */
const rarelyHuge = (max: number) =>
  fc.oneof({ weight: 19, arbitrary: fc.integer({ min: 1, max: 300 }) }, { weight: 1, arbitrary: fc.integer({ min: 300, max }) });

const creations = new Map<unknown, { safeParse(value: unknown): { success: boolean } }>([
  ['User.Created', logtoUserSchema],
  ['Organization.Created', logtoOrganizationSchema],
  ['OrganizationRole.Created', logtoOrganizationRoleSchema],
]);
/**
 * A signed creation whose `data` is a whole valid entity is not hostile: the service stores what Logto says
 * it created (it once did, rightly, for a generated role with id "null" and a random name), so such a case
 * would fail the check below that hostile deliveries leave the copy equal to the tenant.
 */
const createsValidEntity = (payload: { event?: unknown; data?: unknown }): boolean =>
  creations.get(payload.event)?.safeParse(payload.data).success ?? false;

/** A Logto-shaped payload whose every field may have the wrong type or a hostile value. */
const logtoShaped = fc.record(
  {
    event: fc.oneof(fc.constantFrom(...events), hostileString(), hostileJson),
    createdAt: fc.oneof(fc.date({ noInvalidDate: true }).map((date) => date.toISOString()), hostileString(), hostileJson),
    hookId: fc.oneof(hostileString(), hostileJson),
    data: fc.oneof(hostileJson, fc.dictionary(fc.constantFrom('id', 'name', 'isSuspended', 'customData', ...prototypeKeys), hostileJson)),
    organizationId: fc.oneof(hostileString(), hostileJson),
    params: fc.oneof(hostileJson, fc.record({ id: hostileString(), userId: hostileString() })),
  },
  { requiredKeys: [] },
).filter((payload) => !createsValidEntity(payload));

/** The raw body of a signed delivery: hostile JSON, hostile text, or bytes that are not UTF-8. */
const signedBody: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: logtoShaped.map((payload) => Buffer.from(JSON.stringify(payload))) },
  { weight: 2, arbitrary: hostileJson.map((value) => Buffer.from(JSON.stringify(value) ?? 'null')) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(rarelyHuge(300_000), fc.constantFrom('array' as const, 'object' as const))
      .map(([depth, kind]) => Buffer.from(`{"event":"User.Created","data":${deeplyNested(depth, kind)}}`)),
  },
  {
    weight: 1,
    arbitrary: fc
      .constant(null)
      .chain(() => rarelyHuge(1_200_000))
      .map((length) => Buffer.from(`{"event":"User.Data.Updated","data":{"id":"u1","name":"${'A'.repeat(length)}"}}`)),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...events), invalidUtf8Bytes)
      .map(([event, bytes]) => Buffer.concat([Buffer.from(`{"event":"${event}","data":{"id":"`), bytes, Buffer.from('"}}')])),
  },
  { weight: 1, arbitrary: fc.constantFrom('{"a":"\\u0000"}', '{"\\ud800":"\\udc00x"}', '{"__proto__":{"isAdmin":true}}', '{', '', ' ', 'null', '[]', '"x"', '1').map((text) => Buffer.from(text)) },
);

describe('POST /webhooks/logto under hostile input', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let config: Config;
  let receiver: Receiver;
  let worker: InboxWorker;
  const relay = new Webhook(svixSecret);

  let client: ReturnType<typeof rawClient>;
  const post = (body: Buffer, headers: Record<string, string>) =>
    client.send('POST', '/webhooks/logto', { body, headers: { 'content-type': 'application/json', ...headers } });

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 14, generate: { users: 40, organizations: 6, organizationRoles: 3 } });
    config = webhookConfig({ sim, svix: true });
    const logto = clientFor(sim);
    await runFullSync(syncDepsFor(database, logto), { kind: 'baseline', trigger: 'test' });
    worker = testWorker(database, logto, config);
    const app = createApp({
      db: database.db,
      config,
      logger: silentLogger,
      actions: stubActions().actions,
      webhookRouter: createWebhookRouter({ db: database.db, config, logger: silentLogger }),
    });
    receiver = await listen(app);
    client = rawClient(receiver.url.replace('/webhooks/logto', ''));
  });
  afterAll(async () => {
    client?.close();
    await worker?.stop();
    await receiver?.close();
    await sim?.close();
    await database?.drop();
  });

  it('refuses every unsigned or wrongly signed request with a 4xx and stores nothing', async () => {
    const before = await fingerprint(database.db);
    const aRealBody = Buffer.from(recordedDeliveries()[0]!.rawBody);
    const forgedHeaders = fc.oneof(
      // Random values in the signature headers, and random other headers.
      fc.dictionary(fc.constantFrom(...headerNames), headerValue, { maxKeys: 8 }),
      // Logto's signature, made with another key or over other bytes.
      fc.tuple(hostileString(40), fc.boolean()).map(([key, otherBytes]) => ({
        'logto-signature-sha-256': signLogtoBody(otherBytes ? sim.signingKey : key || 'k', otherBytes ? Buffer.from('{"other":1}') : aRealBody),
      })),
      // A Standard Webhooks signature that does not match, or is too old, or too far in the future (replay).
      fc.tuple(fc.integer({ min: -100_000, max: 100_000 }), fc.boolean()).map(([skewSeconds, otherBytes]) => {
        const id = `msg_${randomUUID()}`;
        const sentAt = new Date(Date.now() + (Math.abs(skewSeconds) < 400 ? 400 * Math.sign(skewSeconds || 1) : skewSeconds) * 1000);
        const signature = relay.sign(id, sentAt, otherBytes ? '{"other":1}' : aRealBody.toString());
        return { 'svix-id': id, 'svix-timestamp': String(Math.floor(sentAt.getTime() / 1000)), 'svix-signature': signature };
      }),
    );
    const body = fc.oneof(fc.constant(aRealBody), fc.uint8Array({ maxLength: 4096 }).map((bytes) => Buffer.from(bytes)), signedBody);
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(batchOf(fc.tuple(body, forgedHeaders)), async (batch) => {
        const responses = await Promise.all(batch.map(([raw, headers]) => post(raw, headers)));
        cases += batch.length;
        for (const response of responses) {
          expect([400, 401, 413, 415], `status ${response.status}: ${response.text.slice(0, 200)}`).toContain(response.status);
          expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
        }
      }),
      { numRuns: runs(500) },
    );
    expect(cases).toBeGreaterThanOrEqual(runs(500) * 8);
    expect(await fingerprint(database.db)).toEqual(before);
  }, 600_000);

  it('stores or refuses with a 4xx every signed hostile body (never 5xx), and the worker settles each without changing the access state', async () => {
    const accessBefore = await fingerprint(database.db);
    const [{ last } = { last: 0 }] = await database.db.select({ last: max(accessChanges.id) }).from(accessChanges);
    const changesBefore = last ?? 0;
    let accepted = 0;
    const sendSigned = async ([body, relayed]: [Buffer, boolean]) => {
      let raw = body;
      let headers: Record<string, string>;
      if (relayed) {
        const id = `msg_${randomUUID()}`;
        const now = new Date();
        // Svix signs text: bodies that are not UTF-8 only come straight from Logto.
        const text = raw.toString('utf8');
        raw = Buffer.from(text);
        headers = { 'svix-id': id, 'svix-timestamp': String(Math.floor(now.getTime() / 1000)), 'svix-signature': relay.sign(id, now, text) };
      } else {
        headers = { 'logto-signature-sha-256': signLogtoBody(sim.signingKey, raw) };
      }
      const response = await post(raw, headers);
      expect([202, 400, 413], `status ${response.status}: ${response.text.slice(0, 300)}`).toContain(response.status);
      if (response.status === 202) {
        const answer = JSON.parse(response.text) as Record<string, unknown>;
        expect(answer).toEqual({ id: expect.any(Number), duplicate: expect.any(Boolean) });
        if (!answer.duplicate) accepted += 1;
      }
    };
    // The shapes that once answered 503 (jsonb and JSON.stringify refused them), always among the cases.
    const known: [Buffer, boolean][] = [
      [Buffer.from(`{"event":"User.Created","data":${deeplyNested(200_000, 'array')}}`), false],
      [Buffer.from(`{"event":"User.Created","data":${deeplyNested(65, 'object')}}`), true],
      [Buffer.from('{"event":"User.Data.Updated","data":{"id":"u\\u0000","name":"\\u0000"}}'), false],
      [Buffer.from('{"event":"User.Data.Updated","data":{"\\ud800":"\\udc00x"}}'), true],
      [Buffer.from('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}'), false],
    ];
    await fc.assert(fc.asyncProperty(batchOf(fc.tuple(signedBody, fc.boolean()), 4), async (batch) => {
      await Promise.all(batch.map(sendSigned));
    }), { numRuns: runs(300), examples: [[known.slice(0, 4)], [known.slice(4)]] });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const stored = await deliveries(database.db);
    expect(stored).toHaveLength(accepted);
    // The hostile deliveries are signed, so they are applied: each must end applied, ignored or dead,
    // and none may leave the copy different from Logto (their ids name nobody in the tenant).
    worker.start();
    await worker.drain({ includeDelayed: true });
    const settled = await deliveries(database.db);
    expect(settled.filter((delivery) => !['applied', 'ignored', 'dead'].includes(delivery.status))).toEqual([]);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const after = await fingerprint(database.db);
    for (const table of ['users', 'organizations', 'organization_roles', 'organization_members', 'organization_member_roles', 'api_keys']) {
      expect(after[table], table).toEqual(accessBefore[table]);
    }
    // A signed deletion of an id the copy never held leaves a tombstone (it keeps a late creation from
    // resurrecting the entity); nothing else may enter the change log.
    const logged = await database.db.select().from(accessChanges).where(gt(accessChanges.id, changesBefore));
    expect(logged.filter((change) => !(change.kind.endsWith('.deleted') && change.details?.stored === false))).toEqual([]);
  }, 600_000);
});
