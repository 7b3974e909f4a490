import { createHash } from 'node:crypto';
import { eq } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { apiKeys } from '../../db/schema.js';
import { createApiKey, listApiKeys, revokeApiKey } from '../../src/db/api-keys.js';
import { AppError } from '../../src/errors.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, ENV_KEY_SECRET, expectProblem, type TestApp } from './harness.js';

describe('API keys', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });

  describe('createApiKey, listApiKeys, revokeApiKey', () => {
    it('creates a las_ key, stores only its SHA-256 and an 8-character prefix, and shows the secret once', async () => {
      const key = await createApiKey(database.db, { name: 'ci', scope: 'write' });
      expect(key).toMatchObject({ name: 'ci', scope: 'write' });
      expect(key.secret).toMatch(/^las_[A-Za-z0-9_-]{43}$/);
      const [row] = await database.db.select().from(apiKeys).where(eq(apiKeys.id, key.id));
      expect(row!.hash).toBe(createHash('sha256').update(key.secret).digest('hex'));
      expect(row!.prefix).toBe(key.secret.slice(0, 8));
      expect(JSON.stringify(row)).not.toContain(key.secret);
      const listed = (await listApiKeys(database.db)).find((entry) => entry.id === key.id)!;
      expect(listed).toMatchObject({ name: 'ci', scope: 'write', prefix: key.secret.slice(0, 8), revokedAt: null });
      expect(Object.keys(listed).sort()).toEqual(['createdAt', 'id', 'lastUsedAt', 'name', 'prefix', 'revokedAt', 'scope']);
      const other = await createApiKey(database.db, { name: 'ci-2', scope: 'read' });
      expect(other.secret).not.toBe(key.secret);
    });

    it('refuses a duplicate name (409) and an empty one (400)', async () => {
      await createApiKey(database.db, { name: 'dup', scope: 'read' });
      await expect(createApiKey(database.db, { name: 'dup', scope: 'write' })).rejects.toMatchObject({ status: 409, code: 'api_key_exists' });
      await expect(createApiKey(database.db, { name: '  ', scope: 'read' })).rejects.toBeInstanceOf(AppError);
    });

    it('revokes by name or id; null when there is no such active key', async () => {
      const byName = await createApiKey(database.db, { name: 'revoke-by-name', scope: 'read' });
      const byId = await createApiKey(database.db, { name: 'revoke-by-id', scope: 'read' });
      expect((await revokeApiKey(database.db, 'revoke-by-name'))?.id).toBe(byName.id);
      expect((await revokeApiKey(database.db, String(byId.id)))?.revokedAt).toBeInstanceOf(Date);
      expect(await revokeApiKey(database.db, 'revoke-by-name')).toBeNull();
      expect(await revokeApiKey(database.db, 'no-such-key')).toBeNull();
      expect(await revokeApiKey(database.db, 987654)).toBeNull();
      const listed = await listApiKeys(database.db);
      expect(listed.find((key) => key.id === byName.id)?.revokedAt).toBeInstanceOf(Date);
    });
  });

  describe('authentication', () => {
    let t: TestApp;
    let now = 1_700_000_000_000;
    beforeAll(async () => {
      t = await createTestApp(database.db, {
        apiKeys: `robot:read:${ENV_KEY_SECRET},deployer:write:env-deployer-secret-abcdefghij`,
        app: { clock: () => now },
      });
    });

    it('rejects a request without a key, or with another scheme: 401 with WWW-Authenticate', async () => {
      const missing = await request(t.app).get('/v1/users');
      expectProblem(missing, 401, 'missing_api_key');
      expect(missing.headers['www-authenticate']).toMatch(/^Bearer/);
      expectProblem(await request(t.app).get('/v1/users').set('Authorization', `Basic ${t.keys.read.secret}`), 401, 'missing_api_key');
      expectProblem(await request(t.app).get('/v1/users').set('Authorization', 'Bearer'), 401, 'missing_api_key');
    });

    it('rejects an unknown key: 401', async () => {
      expectProblem(await t.get('/v1/users', 'las_not-a-real-key'), 401, 'invalid_api_key');
      expectProblem(await t.get('/v1/users', `${t.keys.read.secret}x`), 401, 'invalid_api_key');
      // The bearer scheme is case-insensitive.
      await request(t.app).get('/v1/users').set('Authorization', `bearer ${t.keys.read.secret}`).expect(200);
    });

    it('guards every /v1 path, even unknown ones (401 before 404)', async () => {
      expectProblem(await request(t.app).get('/v1/nothing-here'), 401, 'missing_api_key');
      expectProblem(await t.get('/v1/nothing-here'), 404, 'route_not_found');
      expectProblem(await request(t.app).post('/v1/sync/reconcile'), 401, 'missing_api_key');
    });

    it('rejects a key revoked before its first use', async () => {
      const key = await createApiKey(database.db, { name: 'revoked-early', scope: 'write' });
      await revokeApiKey(database.db, key.id);
      expectProblem(await t.get('/v1/users', key.secret), 401, 'invalid_api_key');
    });

    it('caches lookups, and a revoked key stops working once the cache window passes', async () => {
      const key = await createApiKey(database.db, { name: 'revoked-later', scope: 'read' });
      await t.get('/v1/users', key.secret).expect(200);
      await revokeApiKey(database.db, key.id);
      // Within the window the cached lookup answers (no query on the hot path)...
      now += 4000;
      await t.get('/v1/users', key.secret).expect(200);
      // ...and once it has passed, the revocation holds.
      now += 1001;
      expectProblem(await t.get('/v1/users', key.secret), 401, 'invalid_api_key');
    });

    it('records when a stored key was last used', async () => {
      const key = await createApiKey(database.db, { name: 'used', scope: 'read' });
      await t.get('/v1/users', key.secret).expect(200);
      await vi.waitFor(async () => {
        const [row] = await database.db.select().from(apiKeys).where(eq(apiKeys.id, key.id));
        expect(row!.lastUsedAt).toBeInstanceOf(Date);
      });
    });

    it('gives a read key 403 on write routes, and lets a write key read', async () => {
      expectProblem(await t.post('/v1/sync/reconcile', t.keys.read.secret), 403, 'insufficient_scope');
      expectProblem(await t.post('/v1/webhooks/dead-letters/1/retry', t.keys.read.secret), 403, 'insufficient_scope');
      await t.get('/v1/organizations', t.keys.write.secret).expect(200);
      await t.post('/v1/sync/reconcile', t.keys.write.secret).expect(202);
    });

    it('accepts keys from API_KEYS with their scope, and records their name as actor', async () => {
      await t.get('/v1/users', ENV_KEY_SECRET).expect(200);
      expectProblem(await t.post('/v1/users/alice/suspend', ENV_KEY_SECRET), 403, 'insufficient_scope');
      expectProblem(await t.get('/v1/users', `${ENV_KEY_SECRET.slice(0, -1)}X`), 401, 'invalid_api_key');
      await t.post('/v1/users/alice/suspend', 'env-deployer-secret-abcdefghij').expect(200);
      expect(t.calls.at(-1)).toEqual({ name: 'setUserSuspended', args: ['alice', true, { actor: 'deployer' }] });
    });

    it('leaves the operational routes open', async () => {
      await request(t.app).get('/healthz').expect(200);
      await request(t.app).get('/metrics').expect(200);
      await request(t.app).get('/openapi.json').expect(200);
      await request(t.app).get('/readyz').expect(200);
    });

    it('never writes a key to the logs', async () => {
      await t.get('/v1/users', t.keys.read.secret).expect(200);
      await t.get('/v1/users', 'las_wrong-key-for-the-log-test');
      const lines = t.log.lines.join('\n');
      expect(lines).toContain('"route":"/v1/users"');
      for (const secret of [t.keys.read.secret, t.keys.write.secret, ENV_KEY_SECRET, 'las_wrong-key-for-the-log-test']) {
        expect(lines).not.toContain(secret);
      }
      expect(lines).toContain(`"apiKey":"${t.keys.read.name}"`);
    });
  });
});
