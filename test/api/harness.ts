import { Writable } from 'node:stream';
import express from 'express';
import { pino } from 'pino';
import request from 'supertest';
import { createApp, type ApiDeps, type AppOptions, type ProvisionedUser } from '../../src/api/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createApiKey } from '../../src/db/api-keys.js';
import type { Database } from '../../src/db/client.js';
import { AppError } from '../../src/errors.js';

/** A configured env key (API_KEYS), for the tests of environment keys. */
export const ENV_KEY_SECRET = 'env-robot-secret-0123456789abcdef';

/**
 * The route tests seed only the rows they need and never run a full sync, so by default they serve reads
 * as before the first sync (SERVE_BEFORE_FIRST_SYNC=true); the tests of the not_synced answer pass 'false'.
 */
export const testConfig = (apiKeys = `robot:read:${ENV_KEY_SECRET}`, env: Record<string, string> = {}) =>
  loadConfig({
    LOGTO_BASE_URL: 'http://logto.invalid',
    LOGTO_CLIENT_ID: 'client',
    LOGTO_CLIENT_SECRET: 'client-secret',
    API_KEYS: apiKeys,
    SERVE_BEFORE_FIRST_SYNC: 'true',
    ...env,
  });

export type Call = { name: string; args: unknown[] };

/**
 * Stub actions that record their calls: our own interface, standing in for the sync engine. Their
 * behaviour is switched through `state`.
 */
export const stubActions = () => {
  const calls: Call[] = [];
  const state = {
    reconcileRunningId: null as number | null,
    nextRunId: 41,
    deadLetterIds: new Set<number>(),
    nextReconcileAt: null as Date | null,
    fail: null as Error | null,
  };
  const record = (name: string, args: unknown[]) => {
    calls.push({ name, args });
    if (state.fail) throw state.fail;
  };
  const logtoUser = (id: string, fields: Record<string, unknown>): ProvisionedUser => ({
    id,
    username: null,
    primaryEmail: null,
    primaryPhone: null,
    name: null,
    avatar: null,
    customData: {},
    identities: {},
    profile: {},
    lastSignInAt: null,
    createdAt: Date.parse('2024-07-01T12:00:00.000Z'),
    updatedAt: Date.parse('2024-07-01T12:30:00.000Z'),
    applicationId: null,
    isSuspended: false,
    hasPassword: false,
    ...fields,
  });
  const actions: ApiDeps['actions'] = {
    async startReconcile(trigger) {
      record('startReconcile', [trigger]);
      if (state.reconcileRunningId !== null) {
        throw new AppError(409, 'reconcile_running', 'A reconcile is already running', { runId: state.reconcileRunningId });
      }
      state.nextRunId += 1;
      return { runId: state.nextRunId };
    },
    async retryDeadLetter(id) {
      record('retryDeadLetter', [id]);
      return state.deadLetterIds.has(id);
    },
    nextReconcileAt: () => state.nextReconcileAt,
    provision: {
      async createUser(input, ctx) {
        record('createUser', [input, ctx]);
        return logtoUser('newuser0001', { ...input, password: undefined });
      },
      async setUserSuspended(userId, isSuspended, ctx) {
        record('setUserSuspended', [userId, isSuspended, ctx]);
        return logtoUser(userId, { isSuspended, username: userId });
      },
      async addMember(organizationId, userId, ctx) {
        record('addMember', [organizationId, userId, ctx]);
        return { created: true, member: { organizationId, userId, organizationRoles: [] } };
      },
      async addMembers(organizationId, userIds, organizationRoleIds, ctx) {
        record('addMembers', [organizationId, userIds, organizationRoleIds, ctx]);
        return { organizationId, userIds, organizationRoleIds };
      },
      async removeMember(organizationId, userId, ctx) {
        record('removeMember', [organizationId, userId, ctx]);
      },
      async grantRoles(organizationId, userId, organizationRoleIds, ctx) {
        record('grantRoles', [organizationId, userId, organizationRoleIds, ctx]);
        return { organizationId, userId, organizationRoles: organizationRoleIds.map((id) => ({ id, name: id })) };
      },
      async grantRole(organizationId, userId, organizationRoleId, options, ctx) {
        record('grantRole', [organizationId, userId, organizationRoleId, options, ctx]);
        return { created: true, member: { organizationId, userId, organizationRoles: [{ id: organizationRoleId, name: organizationRoleId }] } };
      },
      async setRoles(organizationId, userId, organizationRoleIds, options, ctx) {
        record('setRoles', [organizationId, userId, organizationRoleIds, options, ctx]);
        return { organizationId, userId, organizationRoles: organizationRoleIds.map((id) => ({ id, name: id })) };
      },
      async revokeRole(organizationId, userId, organizationRoleId, ctx) {
        record('revokeRole', [organizationId, userId, organizationRoleId, ctx]);
      },
    },
  };
  return { actions, calls, state };
};

/** A pino logger whose lines are kept (parsed) for assertions. */
export const capturingLogger = () => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      callback();
    },
  });
  const logger = pino({ level: 'debug', redact: { paths: ['req.headers.authorization', 'authorization', '*.authorization'], censor: '[redacted]' } }, stream);
  return { logger, lines, entries: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
};

let keyCounter = 0;

export type TestApp = Awaited<ReturnType<typeof createTestApp>>;

/**
 * The app over `db` with stub actions, a capturing logger, response validation on, and one read and
 * one write key created in the database.
 */
export const createTestApp = async (
  db: Database,
  options: {
    app?: AppOptions;
    apiKeys?: string;
    webhookRouter?: express.Router;
    env?: Record<string, string>;
    events?: ApiDeps['events'];
    /** Changes to the configuration (e.g. `events`). */
    config?: (config: Config) => Config;
  } = {},
) => {
  const stub = stubActions();
  const log = capturingLogger();
  const config = (options.config ?? ((value) => value))(testConfig(options.apiKeys, options.env));
  const app = createApp(
    {
      db,
      config,
      logger: log.logger,
      actions: stub.actions,
      ...(options.webhookRouter ? { webhookRouter: options.webhookRouter } : {}),
      ...(options.events ? { events: options.events } : {}),
    },
    { validateResponses: true, ...options.app },
  );
  keyCounter += 1;
  const read = await createApiKey(db, { name: `reader-${process.pid}-${keyCounter}`, scope: 'read' });
  const write = await createApiKey(db, { name: `writer-${process.pid}-${keyCounter}`, scope: 'write' });
  const withKey = (test: request.Test, key: string) => test.set('Authorization', `Bearer ${key}`);
  return {
    app,
    ...stub,
    log,
    keys: { read, write },
    get: (path: string, key: string = read.secret) => withKey(request(app).get(path), key),
    post: (path: string, key: string = write.secret) => withKey(request(app).post(path), key),
    put: (path: string, key: string = write.secret) => withKey(request(app).put(path), key),
    delete: (path: string, key: string = write.secret) => withKey(request(app).delete(path), key),
    patch: (path: string, key: string = write.secret) => withKey(request(app).patch(path), key),
  };
};

/** Follows nextCursor until the end, returning every page's data. `between` runs after each page. */
export const walk = async <T>(
  fetchPage: (cursor: string | null) => Promise<{ data: T[]; nextCursor: string | null }>,
  between: (pageIndex: number, page: T[]) => Promise<void> = async () => {},
): Promise<{ items: T[]; pages: number }> => {
  const items: T[] = [];
  let cursor: string | null = null;
  let pages = 0;
  for (;;) {
    const page = await fetchPage(cursor);
    pages += 1;
    items.push(...page.data);
    if (page.nextCursor === null) return { items, pages };
    if (pages > 1000) throw new Error('pagination does not end');
    await between(pages, page.data);
    cursor = page.nextCursor;
  }
};

/** Expects an RFC 9457 problem with the given status and code, carrying a request id and no stack. */
export const expectProblem = (response: request.Response, status: number, code: string) => {
  const problem = response.body as Record<string, unknown>;
  const summary = `${response.status} ${JSON.stringify(problem)}`;
  if (response.status !== status) throw new Error(`expected status ${status}, got ${summary}`);
  if (!String(response.headers['content-type']).startsWith('application/problem+json')) {
    throw new Error(`expected application/problem+json, got ${String(response.headers['content-type'])}`);
  }
  for (const field of ['type', 'title', 'status', 'detail', 'instance', 'requestId', 'code']) {
    if (!(field in problem)) throw new Error(`problem lacks ${field}: ${summary}`);
  }
  if (problem.code !== code) throw new Error(`expected code ${code}, got ${summary}`);
  if (problem.status !== status) throw new Error(`problem.status differs from the HTTP status: ${summary}`);
  if (problem.requestId !== response.headers['x-request-id']) throw new Error(`requestId differs from X-Request-Id: ${summary}`);
  if (/\bat .+:\d+:\d+\)?/.test(JSON.stringify(problem)) || 'stack' in problem) throw new Error(`problem leaks a stack: ${summary}`);
  return problem;
};

/** The names in a 400's invalid_params. */
export const invalidParamNames = (response: request.Response): string[] =>
  ((response.body as { invalid_params?: { name: string }[] }).invalid_params ?? []).map((param) => param.name);
