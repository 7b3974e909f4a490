import express from 'express';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, type TestApp } from './harness.js';

type Json = Record<string, unknown>;

/** Every (METHOD, OpenAPI path) the express app routes, nested routers included. */
const servedRoutes = (app: express.Express): string[] => {
  const found: string[] = [];
  type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: Layer[] }; rawPath?: unknown };
  const visit = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        for (const [method, enabled] of Object.entries(layer.route.methods)) {
          if (enabled && method !== '_all') found.push(`${method.toUpperCase()} ${(prefix + layer.route.path).replace(/:(\w+)/g, '{$1}')}`);
        }
      } else if (layer.handle?.stack && typeof layer.rawPath === 'string') {
        visit(layer.handle.stack, prefix + layer.rawPath);
      }
    }
  };
  visit((app as unknown as { router: { stack: Layer[] } }).router.stack, '');
  return found.sort();
};

const documentedRoutes = (document: Json): string[] =>
  Object.entries(document.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`))
    .sort();

const resolvePointer = (document: Json, ref: string): unknown => {
  if (!ref.startsWith('#/')) return undefined;
  return ref
    .slice(2)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<unknown>((node, part) => (node && typeof node === 'object' ? (node as Json)[part] : undefined), document);
};

const collectRefs = (node: unknown, refs: string[] = []): string[] => {
  if (Array.isArray(node)) node.forEach((child) => collectRefs(child, refs));
  else if (node && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string') refs.push(value);
      else collectRefs(value, refs);
    }
  }
  return refs;
};

describe('OpenAPI document', () => {
  let database: TestDatabase;
  let t: TestApp;
  let document: Json;
  beforeAll(async () => {
    database = await createTestDatabase();
    const webhookRouter = express.Router();
    webhookRouter.post('/logto', (_req, res) => {
      res.status(204).end();
    });
    t = await createTestApp(database.db, { webhookRouter });
    const response = await request(t.app).get('/openapi.json').expect(200);
    document = response.body as Json;
  });
  afterAll(async () => {
    await database.drop();
  });

  it('is OpenAPI 3.1 with a bearer security scheme required by default', () => {
    expect(document.openapi).toBe('3.1.0');
    expect(document.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    expect(document.security).toEqual([{ bearerAuth: [] }]);
    expect((document.components as Json).securitySchemes).toMatchObject({ bearerAuth: { type: 'http', scheme: 'bearer' } });
  });

  it('documents exactly the routes the app serves, the webhook receiver included', () => {
    const served = servedRoutes(t.app);
    expect(served).toContain('POST /webhooks/logto');
    expect(served).toContain('GET /v1/access');
    expect(served.length).toBeGreaterThan(25);
    expect(documentedRoutes(document)).toEqual(served);
  });

  it('gives every operation an id, responses, its path parameters, and the right security', () => {
    const operationIds = new Set<string>();
    for (const [path, item] of Object.entries(document.paths as Record<string, Record<string, Json>>)) {
      for (const [method, operation] of Object.entries(item)) {
        const where = `${method.toUpperCase()} ${path}`;
        expect(typeof operation.operationId, where).toBe('string');
        expect(operationIds.has(operation.operationId as string), `${where} repeats an operationId`).toBe(false);
        operationIds.add(operation.operationId as string);
        const responses = operation.responses as Json;
        expect(Object.keys(responses).length, where).toBeGreaterThan(0);
        expect(Object.keys(responses).some((status) => status.startsWith('2')), where).toBe(true);
        const pathParams = [...path.matchAll(/\{(\w+)\}/g)].map((match) => match[1]);
        const declared = ((operation.parameters as Json[] | undefined) ?? []).filter((param) => param.in === 'path');
        expect(declared.map((param) => param.name).sort(), where).toEqual(pathParams.sort());
        for (const param of declared) expect(param.required, where).toBe(true);
        if (path.startsWith('/v1/')) {
          expect(operation.security, where).toBeUndefined(); // inherits bearerAuth
          expect(['read', 'write'], where).toContain(operation['x-required-scope']);
          expect(responses['401'], where).toBeDefined();
          if (method !== 'get') expect(responses['403'], where).toBeDefined();
          if (method === 'get') expect((responses['200'] as Json).headers, where).toHaveProperty('X-Access-State-As-Of');
        } else {
          expect(operation.security, where).toEqual([]);
        }
      }
    }
  });

  it('resolves every $ref', () => {
    const refs = collectRefs(document);
    expect(refs.length).toBeGreaterThan(50);
    const unresolved = [...new Set(refs)].filter((ref) => resolvePointer(document, ref) === undefined);
    expect(unresolved).toEqual([]);
  });

  it('derives parameters and bodies from the validating zod schemas', () => {
    const paths = document.paths as Record<string, Record<string, Json>>;
    const listUsers = paths['/v1/users']!.get!;
    const parameters = Object.fromEntries((listUsers.parameters as Json[]).map((param) => [param.name, param]));
    expect(Object.keys(parameters).sort()).toEqual(['cursor', 'isSuspended', 'limit', 'organizationId', 'search']);
    expect(parameters.limit).toMatchObject({ in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 500, default: 100 } });
    expect(parameters.isSuspended).toMatchObject({ schema: { type: 'string', enum: ['true', 'false'] } });
    const access = Object.fromEntries((paths['/v1/access']!.get!.parameters as Json[]).map((param) => [param.name, param]));
    expect(access.userId).toMatchObject({ required: true, schema: { type: 'string', pattern: expect.any(String) } });
    expect(access.role).toMatchObject({ required: false });

    const schemas = (document.components as { schemas: Record<string, Json> }).schemas;
    const createUser = paths['/v1/users']!.post!;
    const bodyRef = ((createUser.requestBody as Json).content as Record<string, { schema: { $ref: string } }>)['application/json']!.schema.$ref;
    const body = resolvePointer(document, bodyRef) as Json;
    expect(Object.keys(body.properties as Json).sort()).toEqual(['name', 'password', 'primaryEmail', 'primaryPhone', 'username']);
    expect(body.additionalProperties).toBe(false);
    expect(schemas.User).toMatchObject({ type: 'object', required: expect.arrayContaining(['id', 'isSuspended', 'createdAt']) });
    const getUser = paths['/v1/users/{id}']!.get!;
    const userRef = (((getUser.responses as Json)['200'] as Json).content as Record<string, { schema: { $ref: string } }>)['application/json']!.schema.$ref;
    expect(Object.keys((resolvePointer(document, userRef) as Json).properties as Json)).toContain('organizations');
    const problem = resolvePointer(document, '#/components/responses/BadRequest') as Json;
    expect(problem.content).toHaveProperty(['application/problem+json']);
  });

  it('serves an offline reference page at /docs', async () => {
    const redirect = await request(t.app).get('/docs').expect(301);
    expect(redirect.headers.location).toBe('docs/');
    const page = await request(t.app).get('/docs/').expect(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.text).toContain('swagger-ui-bundle.js');
    expect(page.text).toContain('../openapi.json');
    expect(page.text).not.toMatch(/https?:\/\//); // nothing from a CDN
    const bundle = await request(t.app).get('/docs/swagger-ui-bundle.js').expect(200);
    expect(bundle.headers['content-type']).toMatch(/javascript/);
    await request(t.app).get('/docs/swagger-ui.css').expect(200);
  });
});
