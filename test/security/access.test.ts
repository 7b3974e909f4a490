import express from 'express';
import { sql } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, hashApiKey } from '../../src/db/api-keys.js';
import { rows } from '../../src/db/client.js';
import { createTestApp, ENV_KEY_SECRET, expectProblem, type TestApp } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { operationsOf, type Operation } from './operations.js';

/** A concrete path for an operation: every path parameter filled with a value its schema accepts. */
const concretePath = (operation: Operation): string =>
  operation.path.replace(/\{([^}]+)\}/g, (_match, name: string) => {
    const param = operation.pathParams.find((candidate) => candidate.name === name);
    return param?.schema.pattern?.startsWith('^[1-9]') ? '7' : `fuzz${name}0001`;
  });

/** The routes that answer without a key: operations, probes and the documents. Nothing under /v1. */
const openRoutes = ['GET /docs', 'GET /healthz', 'GET /metrics', 'GET /openapi.json', 'GET /readyz', 'POST /webhooks/logto'];

describe('every /v1 route needs a key, and keys are stored hashed', () => {
  let database: TestDatabase;
  let t: TestApp;
  let operations: Operation[];
  const writeEnvSecret = 'env-deployer-secret-0123456789abcdef';

  beforeAll(async () => {
    database = await createTestDatabase();
    const webhookRouter = express.Router();
    webhookRouter.post('/logto', (_req, res) => {
      res.status(401).end();
    });
    t = await createTestApp(database.db, {
      apiKeys: `robot:read:${ENV_KEY_SECRET},deployer:write:${writeEnvSecret}`,
      webhookRouter,
      env: { API_KEY_FAILURE_LIMIT: '100000/1m' },
    });
    operations = operationsOf((await request(t.app).get('/openapi.json').expect(200)).body as Record<string, unknown>);
  });
  afterAll(async () => {
    await database.drop();
  });

  it('documents a scope for every /v1 operation, and only the probes, documents and webhook receiver are open', () => {
    const open = operations.filter((operation) => operation.scope === undefined).map((operation) => `${operation.method} ${operation.path}`);
    expect(open.sort()).toEqual(openRoutes);
    expect(operations.filter((operation) => operation.path.startsWith('/v1/')).length).toBeGreaterThanOrEqual(20);
  });

  it('answers 401 to every /v1 operation without a key, with an unknown key and with a malformed header', async () => {
    const walked: string[] = [];
    for (const operation of operations.filter((candidate) => candidate.path.startsWith('/v1/'))) {
      const path = concretePath(operation);
      const method = operation.method.toLowerCase() as 'get' | 'post' | 'delete';
      expectProblem(await request(t.app)[method](path).send({}), 401, 'missing_api_key');
      expectProblem(await request(t.app)[method](path).set('Authorization', 'Bearer las_not-a-key').send({}), 401, 'invalid_api_key');
      expectProblem(await request(t.app)[method](path).set('Authorization', `Token ${t.keys.write.secret}`).send({}), 401, 'missing_api_key');
      walked.push(`${operation.method} ${operation.path}`);
    }
    expect(walked.length).toBe(operations.length - openRoutes.length);
    expect(t.calls).toEqual([]);
  });

  it('answers 403 to every write operation with a read key (stored or configured), before looking at the request', async () => {
    const writes = operations.filter((operation) => operation.scope === 'write');
    expect(writes.length).toBeGreaterThanOrEqual(8);
    for (const operation of writes) {
      const method = operation.method.toLowerCase() as 'post' | 'delete';
      for (const key of [t.keys.read.secret, ENV_KEY_SECRET]) {
        expectProblem(await request(t.app)[method](concretePath(operation)).set('Authorization', `Bearer ${key}`).send({ nonsense: true }), 403, 'insufficient_scope');
      }
    }
    expect(t.calls).toEqual([]);
  });

  it('lets a read key through every read operation (the walk above is not vacuous)', async () => {
    // The live stream never ends when it answers 200 (this app has no change feed, so it answers 503);
    // its read-key answers are tested with a feed in test/api/change-stream.test.ts.
    const reads = operations.filter((candidate) => candidate.scope === 'read' && candidate.path !== '/v1/changes/stream');
    expect(reads.length).toBeGreaterThan(10);
    for (const operation of reads) {
      const response = await request(t.app).get(concretePath(operation)).set('Authorization', `Bearer ${t.keys.read.secret}`);
      expect([200, 400, 404], `${operation.path} → ${response.status}`).toContain(response.status);
    }
  });

  it('holds no key secret in clear anywhere in the database, only their SHA-256', async () => {
    const extra = await createApiKey(database.db, { name: 'scanned', scope: 'write' });
    await request(t.app).get('/v1/users').set('Authorization', `Bearer ${extra.secret}`).expect(200);
    const secrets = [t.keys.read.secret, t.keys.write.secret, extra.secret, ENV_KEY_SECRET, writeEnvSecret];
    const tables = await rows<{ table_name: string }>(
      database.db,
      sql`select table_name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE'`,
    );
    let dump = '';
    for (const { table_name: table } of tables) {
      dump += JSON.stringify(await rows(database.db, sql.raw(`select * from "${table}"`)));
    }
    expect(dump).toContain(hashApiKey(extra.secret));
    for (const secret of secrets) {
      expect(dump).not.toContain(secret);
      // Not even the part after the recognisable prefix.
      expect(dump).not.toContain(secret.slice(8));
    }
  });
});
