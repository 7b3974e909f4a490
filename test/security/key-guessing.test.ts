import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config.js';
import { createTestApp, expectProblem, testConfig, type TestApp } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

describe('failed key lookups are rate limited per client address', () => {
  let database: TestDatabase;
  let t: TestApp;
  // Behind one trusted proxy the client address comes from X-Forwarded-For, so one test process can be many clients.
  const from = (address: string, key?: string) => {
    const test = request(t.app).get('/v1/users').set('X-Forwarded-For', address);
    return key === undefined ? test : test.set('Authorization', `Bearer ${key}`);
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    t = await createTestApp(database.db, { env: { API_KEY_FAILURE_LIMIT: '5/1m', TRUST_PROXY: 'loopback' } });
  });
  afterAll(async () => {
    await database.drop();
  });

  it('answers 429 with Retry-After once an address has used up its failures, even to a right key', async () => {
    for (let attempt = 0; attempt < 5; attempt += 1) expectProblem(await from('203.0.113.7', `las_guess-${attempt}`), 401, 'invalid_api_key');
    const refused = await from('203.0.113.7', 'las_guess-5');
    expectProblem(refused, 429, 'too_many_failed_keys');
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // A guess that happens to be right learns nothing while the address is blocked.
    expectProblem(await from('203.0.113.7', t.keys.read.secret), 429, 'too_many_failed_keys');
    // Other addresses are not affected.
    await from('203.0.113.8', t.keys.read.secret).expect(200);
  });

  it('counts only failures: successful requests and requests without a key cost nothing', async () => {
    for (let index = 0; index < 30; index += 1) await from('198.51.100.1', t.keys.read.secret).expect(200);
    for (let index = 0; index < 10; index += 1) expectProblem(await from('198.51.100.1'), 401, 'missing_api_key');
    for (let attempt = 0; attempt < 4; attempt += 1) expectProblem(await from('198.51.100.1', `las_nope-${attempt}`), 401, 'invalid_api_key');
    await from('198.51.100.1', t.keys.read.secret).expect(200);
    expectProblem(await from('198.51.100.1', 'las_nope-last'), 401, 'invalid_api_key');
    expectProblem(await from('198.51.100.1', t.keys.read.secret), 429, 'too_many_failed_keys');
  });

  it('treats the addresses of one IPv6 /56 as one client', async () => {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      expectProblem(await from(`2001:db8:0:${attempt}::${attempt + 1}`, `las_v6-${attempt}`), 401, 'invalid_api_key');
    }
    expectProblem(await from('2001:db8:0:ff::99', t.keys.read.secret), 429, 'too_many_failed_keys');
    await from('2001:db8:1::1', t.keys.read.secret).expect(200);
  });

  it('ignores X-Forwarded-For unless the proxy is trusted', async () => {
    const direct = await createTestApp(database.db, { env: { API_KEY_FAILURE_LIMIT: '2/1m' } });
    for (const address of ['192.0.2.1', '192.0.2.2']) {
      expectProblem(await request(direct.app).get('/v1/users').set('X-Forwarded-For', address).set('Authorization', 'Bearer las_x'), 401, 'invalid_api_key');
    }
    expectProblem(await request(direct.app).get('/v1/users').set('X-Forwarded-For', '192.0.2.3').set('Authorization', `Bearer ${direct.keys.read.secret}`), 429, 'too_many_failed_keys');
  });

  it('reads its numbers from API_KEY_FAILURE_LIMIT and refuses a malformed value', () => {
    expect(testConfig(undefined).http.apiKeyFailureLimit).toEqual({ requests: 20, intervalMs: 60_000 });
    expect(testConfig(undefined, { API_KEY_FAILURE_LIMIT: '100/10m' }).http.apiKeyFailureLimit).toEqual({ requests: 100, intervalMs: 600_000 });
    expect(() => testConfig(undefined, { API_KEY_FAILURE_LIMIT: 'lots' })).toThrow(ConfigError);
    expect(() => testConfig(undefined, { API_KEY_FAILURE_LIMIT: 'lots' })).toThrow(/API_KEY_FAILURE_LIMIT/);
    expect(testConfig(undefined, { TRUST_PROXY: '2' }).http.trustProxy).toBe(2);
    expect(testConfig(undefined, {}).http.trustProxy).toBe(false);
  });
});
