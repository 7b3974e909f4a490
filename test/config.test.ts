import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseRateLimit } from '../src/config.js';

const valid = {
  LOGTO_BASE_URL: 'https://acme.logto.app/',
  LOGTO_CLIENT_ID: 'm2m-app',
  LOGTO_CLIENT_SECRET: 'super-secret-value-123',
};

const problemsOf = (environment: NodeJS.ProcessEnv): string[] => {
  try {
    loadConfig(environment);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
};

describe('loadConfig', () => {
  it('derives the Cloud token URL and Management API resource from the base URL', () => {
    const config = loadConfig(valid);
    expect(config.logto.baseUrl).toBe('https://acme.logto.app');
    expect(config.logto.tokenUrl).toBe('https://acme.logto.app/oidc/token');
    expect(config.logto.resource).toBe('https://acme.logto.app/api');
    expect(config.logto.rateLimit).toEqual({ requests: 200, intervalMs: 10_000 });
    expect(config.database.url).toBeUndefined();
    expect(config.database.dataDir).toBe('./data');
    expect(config.database.queryTimeoutMs).toBe(5_000);
    expect(loadConfig({ ...valid, DATABASE_QUERY_TIMEOUT_MS: '2500' }).database.queryTimeoutMs).toBe(2500);
    expect(config.http.port).toBe(3000);
    expect(config.jobs).toEqual({
      reconcileCron: '0 3 * * *',
      reconcileTimezone: 'UTC',
      roleSweepIntervalMs: 600_000,
      missedDeliveriesIntervalMs: 300_000,
    });
    expect(config.http.serveBeforeFirstSync).toBe(false);
  });

  it('reads the missed-deliveries interval and the choice to serve before the first sync', () => {
    const config = loadConfig({ ...valid, MISSED_DELIVERIES_INTERVAL: '30s', SERVE_BEFORE_FIRST_SYNC: 'true' });
    expect(config.jobs.missedDeliveriesIntervalMs).toBe(30_000);
    expect(config.http.serveBeforeFirstSync).toBe(true);
    expect(problemsOf({ ...valid, MISSED_DELIVERIES_INTERVAL: 'often', SERVE_BEFORE_FIRST_SYNC: 'yes please' }).map((p) => p.split(' ')[0])).toEqual([
      'MISSED_DELIVERIES_INTERVAL',
      'SERVE_BEFORE_FIRST_SYNC',
    ]);
    expect(problemsOf({ ...valid, MISSED_DELIVERIES_INTERVAL: '0m' })).toEqual(['MISSED_DELIVERIES_INTERVAL must look like 10m, 30s or 1h']);
  });

  it('keeps an explicit self-hosted resource and splits signing keys for rotation', () => {
    const config = loadConfig({
      ...valid,
      LOGTO_MANAGEMENT_API_RESOURCE: 'https://default.logto.app/api',
      LOGTO_WEBHOOK_SIGNING_KEYS: 'old-key, new-key',
      API_KEYS: 'ci:read:0123456789abcdef0123,ops:write:abcdefabcdefabcdefab',
    });
    expect(config.logto.resource).toBe('https://default.logto.app/api');
    expect(config.webhooks.signingKeys).toEqual(['old-key', 'new-key']);
    expect(config.http.apiKeys.map((key) => `${key.name}:${key.scope}`)).toEqual(['ci:read', 'ops:write']);
  });

  it('names every missing or malformed setting in one error', () => {
    const problems = problemsOf({
      LOGTO_BASE_URL: 'not a url',
      LOGTO_RATE_LIMIT: 'lots',
      PORT: 'eighty',
      DATABASE_URL: 'mysql://x',
      RECONCILE_CRON: 'every night',
      RECONCILE_TZ: 'Mars/Olympus',
    });
    const named = problems.map((problem) => problem.split(' ')[0]);
    expect(named).toEqual(
      expect.arrayContaining([
        'LOGTO_BASE_URL',
        'LOGTO_CLIENT_ID',
        'LOGTO_CLIENT_SECRET',
        'LOGTO_RATE_LIMIT',
        'PORT',
        'DATABASE_URL',
        'RECONCILE_CRON',
        'RECONCILE_TZ',
      ]),
    );
    expect(problems.find((problem) => problem.startsWith('LOGTO_CLIENT_SECRET'))).toBe('LOGTO_CLIENT_SECRET is required');
  });

  it('never echoes a secret value in its message', () => {
    const secret = 'tSllWIAWxatwm6LXx6CxWBMA0bYn6pU8';
    try {
      loadConfig({ ...valid, LOGTO_BASE_URL: secret, API_KEYS: `bad:admin:${secret}` });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).not.toContain(secret);
      expect((error as Error).message).toContain('API_KEYS');
    }
  });
});

describe('parseRateLimit', () => {
  it('reads count per duration', () => {
    expect(parseRateLimit('200/10s')).toEqual({ requests: 200, intervalMs: 10_000 });
    expect(parseRateLimit('50/500ms')).toEqual({ requests: 50, intervalMs: 500 });
    expect(parseRateLimit('1000/m')).toEqual({ requests: 1000, intervalMs: 60_000 });
    expect(parseRateLimit('0/10s')).toBeNull();
    expect(parseRateLimit('ten per second')).toBeNull();
  });
});
