import { STATUS_CODES } from 'node:http';
import { z } from 'zod';
import { needsFirstSync } from './not-synced.js';
import type { Route } from './route.js';
import { isIdempotentWrite } from './idempotency.js';
import { components } from './schemas.js';

type JsonObject = Record<string, unknown>;

/** `/v1/users/:id` → `/v1/users/{id}` */
export const toOpenApiPath = (expressPath: string): string => expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

/** See README "Provisioning": the same key and request get the stored answer; another request 422; while running 409. */
const idempotencyKeyParameter: JsonObject = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Makes a retry safe: the first answer (status and body) is kept 24 hours per API key; the same request with the same key gets it back (header Idempotent-Replayed: true) without running again; the key with a different request is 422; while the first request runs, 409. 5xx answers are not kept.',
  schema: { type: 'string', minLength: 1, maxLength: 255 },
};

const responseNames: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  409: 'Conflict',
  413: 'PayloadTooLarge',
  415: 'UnsupportedMediaType',
  422: 'UnprocessableContent',
  429: 'TooManyRequests',
  500: 'InternalServerError',
  502: 'BadGateway',
  503: 'ServiceUnavailable',
};

const responseDescriptions: Record<number, string> = {
  400: 'A parameter is invalid; `invalid_params` names each one',
  401: 'The API key is missing, unknown or revoked',
  403: 'The API key lacks the scope this route needs',
  404: 'The resource does not exist',
  409: 'The request conflicts with the current state',
  429: 'Too many requests with an unknown API key from this address; `Retry-After` says when to try again',
  500: 'An unexpected error; quote `requestId` when reporting it',
  502: 'Logto could not be reached or answered with an error',
  503: 'The service is not ready: `not_synced` (with Retry-After) until the first full sync has succeeded, or shutting down',
};

const pascal = (text: string): string => text.replace(/(^|[^A-Za-z0-9]+)([A-Za-z0-9])/g, (_match, _sep, letter: string) => letter.toUpperCase());

/** JSON Schema as OpenAPI 3.1 embeds it: without the `$schema`/`$id` of a standalone document. */
const embeddable = (schema: JsonObject): JsonObject => {
  const { $schema: _schema, $id: _id, ...rest } = schema;
  return rest;
};

/** A date-time is documented by its format; zod's equivalent regular expression would only add noise. */
const override = (context: { jsonSchema: JsonObject }) => {
  if (context.jsonSchema.format === 'date-time') delete context.jsonSchema.pattern;
};

type Registry = ReturnType<typeof z.registry<{ id: string }>>;

const refTo = (registry: Registry, schema: z.ZodType, id: string): JsonObject => {
  const existing = registry.get(schema)?.id;
  if (!existing) registry.add(schema, { id });
  return { $ref: `#/components/schemas/${existing ?? id}` };
};

const parametersOf = (schema: z.ZodObject | undefined, location: 'path' | 'query'): JsonObject[] => {
  if (!schema) return [];
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', override }) as {
    properties?: Record<string, JsonObject>;
    required?: string[];
  };
  return Object.entries(json.properties ?? {}).map(([name, property]) => {
    const { description, ...propertySchema } = property;
    return {
      name,
      in: location,
      required: location === 'path' || (json.required ?? []).includes(name),
      ...(description ? { description } : {}),
      schema: propertySchema,
    };
  });
};

export type OpenApiOptions = {
  title?: string;
  version?: string;
  /** Documentation-only operations for routes served by routers mounted from elsewhere. */
  external?: { path: string; method: string; operation: JsonObject }[];
};

/**
 * Builds the OpenAPI 3.1 document from the route declarations: parameters, request bodies and
 * response bodies are the JSON Schema (2020-12, which OpenAPI 3.1 uses as is) of the very zod
 * schemas that validate requests and describe responses.
 */
export const buildOpenApiDocument = (routes: readonly Route[], options: OpenApiOptions = {}): JsonObject => {
  const outputs: Registry = z.registry<{ id: string }>();
  const inputs: Registry = z.registry<{ id: string }>();
  for (const [schema, id] of components) outputs.add(schema, { id });
  const usedStatuses = new Set<number>();
  const paths: Record<string, Record<string, JsonObject>> = {};

  for (const route of routes) {
    const name = pascal(route.operationId);
    const responses: Record<string, JsonObject> = {};
    const headers: JsonObject = { 'X-Request-Id': { $ref: '#/components/headers/RequestId' } };
    if (route.method === 'get' && route.auth !== 'none') headers['X-Access-State-As-Of'] = { $ref: '#/components/headers/AccessStateAsOf' };
    const success: JsonObject = { description: route.success.description, headers };
    if (route.success.schema) {
      success.content = { 'application/json': { schema: refTo(outputs, route.success.schema, `${name}Response`) } };
    } else if (route.success.contentType) {
      success.content = { [route.success.contentType]: { schema: { type: 'string' } } };
    }
    responses[String(route.success.status)] = success;
    if (route.success.also) responses[String(route.success.also.status)] = { ...success, description: route.success.also.description };

    const errors = new Set<number>(route.errors ?? []);
    const idempotent = isIdempotentWrite(route);
    if (idempotent) {
      errors.add(409);
      errors.add(422);
    }
    if (route.params || route.query || route.body || route.auth !== 'none') errors.add(400);
    if (route.auth !== 'none') errors.add(401).add(429);
    if (route.auth === 'write') errors.add(403);
    if (needsFirstSync(route)) errors.add(503);
    errors.add(500);
    for (const status of [...errors].sort()) {
      usedStatuses.add(status);
      responses[String(status)] = { $ref: `#/components/responses/${responseNames[status] ?? `Problem${status}`}` };
    }

    const operation: JsonObject = {
      operationId: route.operationId,
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: route.tags,
      parameters: [
        ...parametersOf(route.params, 'path'),
        ...parametersOf(route.query, 'query'),
        ...(idempotent ? [idempotencyKeyParameter] : []),
      ],
      ...(route.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: refTo(inputs, route.body, `${name}Request`) } },
            },
          }
        : {}),
      responses,
      ...(route.auth === 'none' ? { security: [] } : { 'x-required-scope': route.auth }),
    };
    (paths[toOpenApiPath(route.path)] ??= {})[route.method] = operation;
  }
  for (const external of options.external ?? []) {
    (paths[external.path] ??= {})[external.method] = external.operation;
    const responses = (external.operation.responses ?? {}) as Record<string, JsonObject>;
    for (const response of Object.values(responses)) {
      const ref = typeof response.$ref === 'string' ? /\/(\w+)$/.exec(response.$ref)?.[1] : undefined;
      const status = Object.entries(responseNames).find(([, value]) => value === ref)?.[0];
      if (status) usedStatuses.add(Number(status));
    }
  }

  const generated = (registry: Registry, io: 'input' | 'output'): Record<string, JsonObject> => {
    const { schemas } = z.toJSONSchema(registry, {
      io,
      unrepresentable: 'any',
      override,
      uri: (id) => `#/components/schemas/${id}`,
    }) as { schemas: Record<string, JsonObject> };
    return Object.fromEntries(Object.entries(schemas).map(([id, schema]) => [id, embeddable(schema)]));
  };

  const problemResponses = Object.fromEntries(
    [...usedStatuses].sort().map((status) => [
      responseNames[status] ?? `Problem${status}`,
      {
        description: responseDescriptions[status] ?? STATUS_CODES[status] ?? 'Error',
        headers: { 'X-Request-Id': { $ref: '#/components/headers/RequestId' } },
        content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
      },
    ]),
  );

  return {
    openapi: '3.1.0',
    info: {
      title: options.title ?? 'logto-access-sync',
      version: options.version ?? '1',
      description:
        "Who has access to what in a Logto tenant, right now and since when, answered from this service's copy of its users, " +
        'organizations, organization roles and memberships. Every `/v1` route needs `Authorization: Bearer <key>`; keys have ' +
        'the `read` or `write` scope (write includes read). Every read response carries `X-Access-State-As-Of`: the time up ' +
        'to which the data is known to follow Logto (`never` before the first full sync). Lists are `{ data, nextCursor }` ' +
        'with keyset pagination; errors are RFC 9457 problem details.',
    },
    tags: [
      { name: 'access', description: 'The one question: may this user into this organization?' },
      { name: 'users' },
      { name: 'organizations' },
      { name: 'organization roles' },
      { name: 'history', description: 'The change log and grant intervals' },
      { name: 'sync', description: 'The state of the copy: runs, inbox, freshness' },
      { name: 'provisioning', description: 'Writes made in Logto through this service, applied to the copy at once' },
      { name: 'webhooks' },
      { name: 'operations', description: 'Health, readiness, metrics and this document' },
    ],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'las_<base64url>',
          description: 'An API key created with `npm run cli -- keys create`, or configured in API_KEYS',
        },
      },
      headers: {
        RequestId: {
          description: 'The request id (taken from the request when it sent a valid one); quote it when reporting a problem',
          schema: { type: 'string' },
        },
        AccessStateAsOf: {
          description:
            'The time up to which the data is known to follow Logto: `never` before the first successful full sync, the receipt time ' +
            'of the oldest webhook delivery not yet applied, or the time of the check',
          schema: { oneOf: [{ type: 'string', format: 'date-time' }, { const: 'never' }] },
        },
      },
      responses: problemResponses,
      schemas: { ...generated(outputs, 'output'), ...generated(inputs, 'input') },
    },
  };
};
