import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { organizationRoles, organizations, syncRuns, users } from '../../db/schema.js';
import { loadConfig } from '../../src/config.js';
import { encodeCursor } from '../../src/db/queries/pagination.js';
import { createApiKey } from '../../src/db/api-keys.js';
import { silentLogger } from '../../src/logger.js';
import { startService, type Service } from '../../src/service.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startTenant, tenantEnvironment } from '../helpers/tenant.js';
import { operationsOf, type Operation, type Schema } from './operations.js';
import { batchOf, fingerprint, hostileJson, hostileString, prototypeKeys, rawClient, runs, type RawResponse } from './hostile.js';

type Json = Record<string, unknown>;

/** A value the schema accepts, or close to it (ints out of range, ids of real entities from `ids`). */
const plausible = (schema: Schema | undefined, ids: string[]): fc.Arbitrary<unknown> => {
  if (!schema) return hostileJson;
  if (schema.enum) return fc.constantFrom(...schema.enum);
  switch (schema.type) {
    case 'integer':
    case 'number':
      return fc.integer({ min: (schema.minimum ?? 0) - 2, max: (schema.maximum ?? 1000) + 2 });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(plausible(schema.items, ids), { maxLength: 120 });
    case 'object':
      return fc.record(Object.fromEntries(Object.entries(schema.properties ?? {}).map(([key, inner]) => [key, fc.oneof(plausible(inner, ids), hostileJson)])), {
        requiredKeys: [],
      });
    case 'string':
      if (schema.pattern === '^[1-9][0-9]{0,14}$') return fc.integer({ min: 1, max: 50 }).map(String);
      if (schema.pattern) return fc.oneof(fc.constantFrom(...ids), fc.stringMatching(new RegExp(schema.pattern)));
      return fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom(...ids));
    default:
      return hostileJson;
  }
};

/** A cursor as the API encodes them, around hostile sort keys: it is opaque to clients, not to attackers. */
const forgedCursor = fc
  .array(fc.oneof(hostileJson, fc.constantFrom(1e20, -1, 0, 2 ** 53, 1.5, '\u0000', 'a\u0000b', '')), { minLength: 1, maxLength: 3 })
  .map((key) => encodeCursor(key));

/** Text for a URL: usually a plausible value, otherwise hostile; as the client would encode it, or broken on purpose. */
const urlValue = (schema: Schema, ids: string[], name = ''): fc.Arbitrary<string> =>
  fc
    .tuple(
      fc.oneof(
        { weight: 2, arbitrary: plausible(schema, ids).map((value) => (typeof value === 'string' ? value : JSON.stringify(value) ?? '')) },
        { weight: 2, arbitrary: hostileString() },
        { weight: name === 'cursor' ? 3 : 0, arbitrary: forgedCursor },
      ),
      fc.nat(9),
    )
    .map(([value, mode]) => {
      const encoded = encodeURIComponent(value.replace(/[\uD800-\uDFFF]/g, '\uFFFD'));
      if (mode === 0) return `${encoded}%`; // a broken escape
      if (mode === 1) return `%E0%A4%A${encoded}`; // bytes that are not UTF-8
      if (mode === 2) return encodeURIComponent(encoded); // encoded twice
      return encoded;
    });

type Request = { method: string; path: string; headers: Record<string, string>; body: Buffer | undefined };

const requestFor = (operation: Operation, ids: string[], keys: { write: string; read: string }): fc.Arbitrary<Request> => {
  const pathParts = fc.tuple(...operation.pathParams.map((param) => urlValue(param.schema, ids)));
  const query = fc.array(
    fc.oneof(
      { weight: 4, arbitrary: operation.queryParams.length > 0 ? fc.constantFrom(...operation.queryParams).chain((param) => urlValue(param.schema, ids, param.name).map((value) => `${param.name}=${value}`)) : fc.constant('') },
      { weight: 1, arbitrary: fc.tuple(fc.oneof(fc.constantFrom(...prototypeKeys, 'limit[]', 'a[b]', 'cursor'), hostileString(10)), hostileString(20)).map(([name, value]) => `${encodeURIComponent(name.replace(/[\uD800-\uDFFF]/g, '?'))}=${encodeURIComponent(value.replace(/[\uD800-\uDFFF]/g, '?'))}`) },
    ),
    { maxLength: 4 },
  );
  const body = fc.oneof(
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 4, arbitrary: plausible(operation.body ?? { type: 'object', properties: {} }, ids).map((value) => Buffer.from(JSON.stringify(value) ?? 'null')) },
    { weight: 1, arbitrary: hostileJson.map((value) => Buffer.from(JSON.stringify(value) ?? 'null')) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }).map((bytes) => Buffer.from(bytes)) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 40_000 }).map((depth) => Buffer.from(`${'['.repeat(depth)}${']'.repeat(depth)}`)) },
  );
  const contentType = fc.constantFrom('application/json', 'application/json', 'application/merge-patch+json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', '');
  const auth = fc.oneof({ weight: 8, arbitrary: fc.constant(keys.write) }, { weight: 1, arbitrary: fc.constant(keys.read) }, { weight: 1, arbitrary: fc.constantFrom('', 'las_guess', 'x'.repeat(600)) });
  return fc.tuple(pathParts, query, body, contentType, auth).map(([parts, queryParts, payload, type, key]) => {
    let index = 0;
    const path = operation.path.replace(/\{[^}]+\}/g, () => parts[index++] ?? 'x');
    const search = queryParts.filter(Boolean).join('&');
    return {
      method: operation.method,
      path: search ? `${path}?${search}` : path,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(type && payload ? { 'content-type': type } : {}) },
      body: operation.method === 'GET' ? undefined : payload,
    };
  });
};

const expectSafeAnswer = (request: Request, response: RawResponse) => {
  const where = `${request.method} ${request.path.slice(0, 200)} → ${response.status} ${response.text.slice(0, 300)}`;
  expect(response.status, where).toBeLessThan(500);
  // Node's HTTP parser refuses a request line or headers over its 16 KiB limit before the app sees them.
  if (response.status === 431) return;
  expect(response.headers['x-content-type-options'], where).toBe('nosniff');
  if (response.status >= 400) {
    expect(response.headers['content-type'], where).toMatch(/^application\/problem\+json/);
    const problem = JSON.parse(response.text) as Json;
    expect(problem.status, where).toBe(response.status);
    expect(response.text, where).not.toMatch(/\bat .+:\d+:\d+\)?/);
  }
};

describe('every route under hostile path, query and body input', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let service: Service;
  let client: ReturnType<typeof rawClient>;
  let operations: Operation[];
  let ids: string[];
  const keys = { write: 'fuzz-writer-secret-0123456789abcdef', read: '' };
  const settle = async () => {
    for (let waited = 0; waited < 600; waited += 1) {
      const running = (await database.db.select().from(syncRuns)).filter((run) => run.status === 'running');
      if (running.length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await sim.webhooks.idle();
    await service.drainInbox();
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 41, generate: { users: 30, organizations: 5, organizationRoles: 3 } });
    const config = loadConfig({
      ...tenantEnvironment(sim),
      LOGTO_MAX_RETRIES: '1',
      PORT: '0',
      HOST: '127.0.0.1',
      API_KEYS: `fuzzer:write:${keys.write}`,
      // The fuzzer sends wrong keys on purpose; the limiter has its own tests.
      API_KEY_FAILURE_LIMIT: '1000000/1m',
      LOG_LEVEL: 'silent',
    });
    service = await startService(config, { logger: silentLogger, jobs: false, database });
    sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);
    for (let waited = 0; waited < 400; waited += 1) {
      const [run] = await database.db.select().from(syncRuns);
      if (run && run.status !== 'running') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    keys.read = (await createApiKey(database.db, { name: 'fuzz-reader', scope: 'read' })).secret;
    client = rawClient(service.url);
    // The live stream answers a valid request with a response that never ends; its parameters are tested
    // in test/api/change-stream.test.ts.
    operations = operationsOf(JSON.parse((await client.send('GET', '/openapi.json')).text) as Json).filter(
      (operation) => operation.path !== '/v1/changes/stream',
    );
    ids = [
      ...(await database.db.select({ id: users.id }).from(users).limit(5)),
      ...(await database.db.select({ id: organizations.id }).from(organizations).limit(3)),
      ...(await database.db.select({ id: organizationRoles.id }).from(organizationRoles).limit(2)),
    ].map((row) => row.id);
  });
  afterAll(async () => {
    client?.close();
    await service?.close();
    await sim?.close();
    await database?.drop();
  });

  it('derives the operations from the OpenAPI document', () => {
    expect(operations.filter((operation) => operation.path.startsWith('/v1/')).length).toBeGreaterThanOrEqual(20);
    expect(operations.some((operation) => operation.body)).toBe(true);
  });

  it('never answers 5xx, and every refusal is a problem document', async () => {
    const anyRequest = fc.constantFrom(...operations).chain((operation) => requestFor(operation, ids, keys));
    let cases = 0;
    await fc.assert(
      fc.asyncProperty(batchOf(anyRequest), async (batch) => {
        const responses = await Promise.all(batch.map((request) => client.send(request.method, request.path, request)));
        cases += batch.length;
        batch.forEach((request, index) => expectSafeAnswer(request, responses[index]!));
      }),
      {
        numRuns: runs(600),
        // What once answered 500 (NUL into PostgreSQL text, a sort key beyond bigint), always among the cases.
        examples: [
          [
            [
              '/v1/organization-roles?search=%00',
              `/v1/users?cursor=${encodeCursor(['a\u0000'])}`,
              `/v1/changes?cursor=${encodeCursor([1e20])}`,
              `/v1/sync/runs?cursor=${encodeCursor([2 ** 63])}`,
              `/v1/access?userId=${ids[0]}&organizationId=${ids[5]}&role=%00`,
              `/v1/organizations/${ids[5]}/members?roleName=a%00`,
              `/v1/organization-roles/${ids[8]}/members?cursor=${encodeCursor(['\u0000', 'x'])}`,
              '/v1/users?search=%00',
              `/docs?q=${'x'.repeat(15_000)}`,
            ].map((path) => ({ method: 'GET', path, headers: { authorization: `Bearer ${keys.write}` }, body: undefined })),
          ],
        ],
      },
    );
    expect(cases).toBeGreaterThanOrEqual(runs(600) * 8);
  }, 600_000);

  it('changes nothing, in the database or in Logto, for a request without a valid key or with a read key on a write route', async () => {
    // Let the writes of the test before settle: reconciles it started, webhooks Logto sent back.
    await settle();
    const before = await fingerprint(database.db);
    const tenantBefore = JSON.stringify(sim.state.snapshot());
    const guarded = operations.filter((operation) => operation.scope !== undefined);
    const unauthorized = fc
      .constantFrom(...guarded)
      .chain((operation) => requestFor(operation, ids, keys).map((request) => ({ request, operation })))
      .chain(({ request, operation }) =>
        fc
          .constantFrom(...(operation.scope === 'write' ? ['', 'las_wrong', keys.read] : ['', 'las_wrong']))
          .map((key) => ({ ...request, headers: { ...request.headers, authorization: key ? `Bearer ${key}` : '' } })),
      );
    await fc.assert(
      fc.asyncProperty(batchOf(unauthorized), async (batch) => {
        const responses = await Promise.all(batch.map((request) => client.send(request.method, request.path, request)));
        batch.forEach((request, index) => {
          const response = responses[index]!;
          expectSafeAnswer(request, response);
          expect([400, 401, 403, 404, 431], `${request.method} ${request.path.slice(0, 200)} → ${response.status}`).toContain(response.status);
        });
      }),
      { numRuns: runs(150) },
    );
    await settle();
    expect(await fingerprint(database.db)).toEqual(before);
    expect(JSON.stringify(sim.state.snapshot())).toBe(tenantBefore);
  }, 600_000);
});
