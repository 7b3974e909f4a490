import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import request from 'supertest';
import { Webhook } from 'svix';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncRuns } from '../../db/schema.js';
import { createApp } from '../../src/api/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createApiKey } from '../../src/db/api-keys.js';
import { createLogger } from '../../src/logger.js';
import { createLogtoClient } from '../../src/logto/index.js';
import { basicAuthorization } from '../../src/logto/token.js';
import { startService, type Service } from '../../src/service.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { createWebhookRouter } from '../../src/webhooks/router.js';
import { signLogtoBody } from '../../src/webhooks/signature.js';
import { stubActions } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startTenant } from '../helpers/tenant.js';
import { svixSecret } from '../webhooks/harness.js';

const secret = (label: string) => `${label}-${randomBytes(18).toString('base64url')}`;

/**
 * A whole scenario with the service's own logger at `trace`, writing into memory: a baseline, Logto
 * failing (5xx, 429, expired tokens, a token endpoint down, a wrong client secret), provisioning that
 * Logto refuses, forged and hostile webhooks, guessed API keys, and a database that is gone. Then every
 * log line and every answer is searched for every secret the service holds or was sent.
 */
describe('secrets never reach a log line or an error body', () => {
  let database: TestDatabase;
  let lostDatabase: TestDatabase;
  let sim: SimulatedTenant;
  let service: Service;
  let config: Config;
  const lines: string[] = [];
  const answers: string[] = [];
  const issuedTokens: string[] = [];
  const clientSecret = secret('client-secret');
  const signingKey = secret('signing-key');
  const envWriteKey = secret('env-write-key');
  const wrongClientSecret = secret('wrong-client-secret');
  const guessedKeys = [secret('las_guess'), `Bearer-${secret('odd')}`];
  const storedKeys: string[] = [];
  const password = secret('Pw1!');

  const logger = createLogger(
    'trace',
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(chunk.toString('utf8'));
        callback();
      },
    }),
  );
  const keep = (response: request.Response) => {
    answers.push(`${response.status} ${JSON.stringify(response.headers)} ${response.text}`);
    return response;
  };
  const api = () => request(service.url);
  const withKey = (test: request.Test, key = envWriteKey) => test.set('Authorization', `Bearer ${key}`);
  const waitForRuns = async () => {
    for (let waited = 0; waited < 600; waited += 1) {
      const runs = await database.db.select().from(syncRuns);
      if (runs.length > 0 && runs.every((run) => run.status !== 'running')) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    lostDatabase = await createTestDatabase();
    sim = await startTenant({ seed: 7, clientSecret, signingKey, generate: { users: 25, organizations: 4, organizationRoles: 3 } });
    const issue = sim.tokens.issue.bind(sim.tokens);
    sim.tokens.issue = (scopes) => {
      const issued = issue(scopes);
      issuedTokens.push(issued.accessToken);
      return issued;
    };
    config = loadConfig({
      LOGTO_BASE_URL: sim.baseUrl,
      LOGTO_MANAGEMENT_API_RESOURCE: sim.resource,
      LOGTO_CLIENT_ID: sim.clientId,
      LOGTO_CLIENT_SECRET: clientSecret,
      LOGTO_WEBHOOK_SIGNING_KEYS: `${signingKey},${secret('old-signing-key')}`,
      SVIX_WEBHOOK_SECRET: svixSecret,
      LOGTO_MAX_RETRIES: '2',
      LOGTO_TIMEOUT_MS: '2000',
      PORT: '0',
      HOST: '127.0.0.1',
      API_KEYS: `deployer:write:${envWriteKey}`,
      LOG_LEVEL: 'trace',
    });
    service = await startService(config, { logger, jobs: false, database });
    sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);
    await waitForRuns();
    for (const scope of ['read', 'write'] as const) storedKeys.push((await createApiKey(database.db, { name: `secrets-${scope}`, scope })).secret);
  }, 120_000);
  afterAll(async () => {
    await service?.close();
    await sim?.close();
    await database?.drop();
    await lostDatabase?.drop().catch(() => {});
  });

  it('runs the scenario, failures included', async () => {
    // Reads with every kind of key, and guessed keys.
    for (const key of [envWriteKey, ...storedKeys]) keep(await withKey(api().get('/v1/users?limit=2'), key).expect(200));
    for (const key of guessedKeys) keep(await api().get('/v1/users').set('Authorization', `Bearer ${key}`));
    keep(await api().get('/v1/users').set('Authorization', `Basic ${Buffer.from(`x:${envWriteKey}`).toString('base64')}`));

    // Logto failing under a reconcile: 5xx, then throttling, then every token revoked while the token endpoint is down.
    sim.faults.failNext(2, { status: 500 });
    sim.faults.failNext(1, { status: 429, retryAfterSeconds: 1 });
    keep(await withKey(api().post('/v1/sync/reconcile')).expect(202));
    await waitForRuns();
    sim.expireAllTokens();
    sim.faults.failNext(1, { status: 503, paths: /^\/oidc\// });
    keep(await withKey(api().post('/v1/sync/reconcile')).expect(202));
    await waitForRuns();

    // Provisioning that works, that Logto refuses, and that fails because Logto is down.
    const created = keep(await withKey(api().post('/v1/users')).send({ username: 'secret_scenario', password }));
    expect(created.status).toBe(201);
    keep(await withKey(api().post('/v1/users')).send({ username: 'secret_scenario' }));
    const organizationId = sim.state.listOrganizations()[0]!.id;
    keep(await withKey(api().post(`/v1/organizations/${organizationId}/members`)).send({ userIds: ['nosuchuser0001'] }));
    sim.faults.failNext(20, { status: 503 });
    keep(await withKey(api().post(`/v1/users/${sim.state.listUsers()[0]!.id}/suspend`)));
    sim.faults.reset();
    keep(await withKey(api().post('/v1/users')).set('content-type', 'application/json').send(`{"password":"${envWriteKey}"`));

    // Webhooks: real ones from Logto, forged ones, a replayed relay, a hostile signed one.
    await sim.api.patch(`/users/${sim.state.listUsers()[1]!.id}`, { name: 'Renamed for the secrets test' });
    await sim.webhooks.idle();
    const body = JSON.stringify({ event: 'User.Data.Updated', createdAt: new Date().toISOString(), data: { id: 'x' } });
    keep(await api().post('/webhooks/logto').set('content-type', 'application/json').set('logto-signature-sha-256', signLogtoBody(secret('forged'), body)).send(body));
    const old = new Date(Date.now() - 3_600_000);
    const id = `msg_${randomUUID()}`;
    keep(
      await api()
        .post('/webhooks/logto')
        .set({ 'content-type': 'application/json', 'svix-id': id, 'svix-timestamp': String(Math.floor(old.getTime() / 1000)), 'svix-signature': new Webhook(svixSecret).sign(id, old, body) })
        .send(body),
    );
    const hostile = `{"event":"User.Data.Updated","data":${'['.repeat(100)}${']'.repeat(100)}}`;
    keep(await api().post('/webhooks/logto').set('content-type', 'application/json').set('logto-signature-sha-256', signLogtoBody(signingKey, hostile)).send(hostile));
    await service.drainInbox();

    // A wrong client secret: the token endpoint refuses it.
    const misconfigured = createLogtoClient({ ...config.logto, clientSecret: wrongClientSecret, maxRetries: 0 }, { logger });
    await expect(misconfigured.getUser('anyone')).rejects.toThrow();
    await misconfigured.getUser('anyone').catch((error: unknown) => logger.error({ err: error }, 'Logto call failed'));

    // The database gone: the same app over a closed pool.
    await lostDatabase.close();
    const orphan = createApp({
      db: lostDatabase.db,
      config,
      logger,
      actions: stubActions().actions,
      webhookRouter: createWebhookRouter({ db: lostDatabase.db, config, logger }),
    });
    keep(await request(orphan).get('/v1/users').set('Authorization', `Bearer ${storedKeys[0]}`));
    keep(await request(orphan).get('/readyz'));
    const signed = JSON.stringify({ event: 'User.Created', createdAt: new Date().toISOString(), data: { id: 'dbdown' } });
    keep(await request(orphan).post('/webhooks/logto').set('content-type', 'application/json').set('logto-signature-sha-256', signLogtoBody(signingKey, signed)).send(signed));

    // The scenario did reach the failure paths whose logs are searched below.
    const logged = lines.join('');
    expect(logged).toContain('webhook refused');
    expect(logged).toContain('retrying');
    expect(logged).toContain('webhook not stored');
    expect(logged).toContain('"level":50');
    expect(answers.some((answer) => answer.startsWith('502 ') || answer.startsWith('503 '))).toBe(true);
    expect(answers.some((answer) => answer.startsWith('401 '))).toBe(true);
    expect(issuedTokens.length).toBeGreaterThanOrEqual(2);
  }, 180_000);

  it('finds none of them in any log line or answer', () => {
    const basic = basicAuthorization(sim.clientId, clientSecret).slice('Basic '.length);
    const svixKey = Buffer.from(svixSecret.slice('whsec_'.length), 'base64').toString('utf8');
    const secrets: Record<string, string[]> = {
      'client secret': [clientSecret, wrongClientSecret, basic],
      'webhook signing key': [signingKey, ...config.webhooks.signingKeys],
      'Svix secret': [svixSecret, svixSecret.slice('whsec_'.length), svixKey],
      'API key': [envWriteKey, ...storedKeys, ...guessedKeys],
      'Management API token': issuedTokens,
      'user password': [password],
    };
    const haystacks = { logs: lines.join(''), answers: answers.join('\n') };
    expect(haystacks.logs.length).toBeGreaterThan(10_000);
    for (const [what, values] of Object.entries(secrets)) {
      for (const value of values) {
        for (const [where, text] of Object.entries(haystacks)) {
          expect(text.includes(value), `${what} ${value.slice(0, 6)}… appears in ${where}`).toBe(false);
        }
      }
    }
  });
});
