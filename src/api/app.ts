import { randomUUID } from 'node:crypto';
import express, { type Request, type RequestHandler, type Response } from 'express';
import type { z } from 'zod';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { cachedAccessStateAsOf } from '../db/freshness.js';
import { cachedFirstFullSyncSucceeded } from '../db/service-state.js';
import type { UserDto } from '../db/queries/users.js';
import type { Logger } from '../logger.js';
import type { LogtoUser } from '../logto/index.js';
import type { BulkMembersOutcome, MemberOutcome, ProvisionedMember } from '../sync/provisioning.js';
import { metrics } from '../metrics.js';
import { accessRoutes } from './access.js';
import { createKeyAuthenticator, requireApiKey, requireScope, type Principal } from './auth.js';
import type { ChangeFeed } from '../db/change-feed.js';
import { changeStreamRoutes } from './change-stream.js';
import { changeRoutes } from './changes.js';
import { idempotency, isIdempotentWrite, type IdempotencyOptions } from './idempotency.js';
import { needsFirstSync, sendNotSynced } from './not-synced.js';
import { eventSubscriptionRoutes } from './event-subscriptions.js';
import { buildOpenApiDocument } from './openapi.js';
import { organizationRoleRoutes } from './organization-roles.js';
import { organizationRoutes } from './organizations.js';
import { errorHandler, invalidParams, issuesToParams, notFoundHandler, sendProblem, type InvalidParam, type ParamLocation } from './problem.js';
import { provisioningRoutes, type CreateUserInput } from './provisioning.js';
import { JsonText, type Route } from './route.js';
import { applySecurity } from './security.js';
import { syncRoutes } from './sync.js';
import { swaggerUiDirectory, systemRoutes } from './system.js';
import { userRoutes } from './users.js';
import { webhookAdminRoutes, webhookReceiverOperation } from './webhooks-admin.js';

export type ProvisionContext = { actor: string };

/** What provisioning returns for a user: the stored copy, or Logto's answer (epoch-millisecond timestamps). */
export type ProvisionedUser = UserDto | LogtoUser;

export type ApiDeps = {
  db: Database;
  config: Config;
  logger: Logger;
  /** Mounted at /webhooks (provides POST /webhooks/logto). It receives the raw body: no JSON parser runs in front of it. */
  webhookRouter?: express.Router;
  /** A time X-Access-State-As-Of may not go past (a restart still catching up), or null. */
  freshnessCap?: () => Date | null;
  /** Access events out: wakes the event sender (after a retry or replay); the feed that wakes live streams. */
  events?: { wake(): void; feed?: ChangeFeed };
  actions: {
    /** Starts a reconcile; throws AppError(409, 'reconcile_running', …, { runId }) while one runs. */
    startReconcile(trigger: 'api'): Promise<{ runId: number }>;
    /** Puts a dead delivery back in the inbox; false when there is no such dead delivery. */
    retryDeadLetter(id: number): Promise<boolean>;
    nextReconcileAt(): Date | null;
    provision: {
      createUser(input: CreateUserInput, ctx: ProvisionContext): Promise<ProvisionedUser>;
      setUserSuspended(userId: string, isSuspended: boolean, ctx: ProvisionContext): Promise<ProvisionedUser>;
      addMember(organizationId: string, userId: string, ctx: ProvisionContext): Promise<MemberOutcome>;
      addMembers(organizationId: string, userIds: string[], organizationRoleIds: string[], ctx: ProvisionContext): Promise<BulkMembersOutcome>;
      removeMember(organizationId: string, userId: string, ctx: ProvisionContext): Promise<void>;
      grantRoles(organizationId: string, userId: string, organizationRoleIds: string[], ctx: ProvisionContext): Promise<ProvisionedMember>;
      grantRole(
        organizationId: string,
        userId: string,
        organizationRoleId: string,
        options: { addMember: boolean },
        ctx: ProvisionContext,
      ): Promise<MemberOutcome>;
      setRoles(
        organizationId: string,
        userId: string,
        organizationRoleIds: string[],
        options: { addMember: boolean },
        ctx: ProvisionContext,
      ): Promise<ProvisionedMember>;
      revokeRole(organizationId: string, userId: string, organizationRoleId: string, ctx: ProvisionContext): Promise<void>;
    };
  };
};

export type AppOptions = {
  /** Check every JSON response against its declared schema and answer 500 when it does not match (tests). */
  validateResponses?: boolean;
  /** How long an API key lookup is reused (default 5000 ms): a revoked key stops working within it. */
  keyCacheTtlMs?: number;
  /** How long `X-Access-State-As-Of` is reused (default 250 ms). */
  freshnessTtlMs?: number;
  /** Milliseconds since the epoch, for the caches (tests move it). */
  clock?: () => number;
  /** Largest accepted JSON body (default 64 kB). */
  bodyLimit?: string;
  /** Idempotency-Key timings (tests shorten the lease). */
  idempotency?: Pick<IdempotencyOptions, 'ttlMs' | 'leaseMs' | 'purgeIntervalMs'>;
};

/** Every route this app serves itself, in mount order. */
export const apiRoutes = (): Route[] => [
  ...accessRoutes,
  ...userRoutes,
  ...organizationRoutes,
  ...organizationRoleRoutes,
  ...changeRoutes,
  ...changeStreamRoutes(),
  ...eventSubscriptionRoutes,
  ...syncRoutes,
  ...webhookAdminRoutes,
  ...provisioningRoutes,
];

const draining = new WeakMap<express.Express, boolean>();

/**
 * For graceful shutdown (server.ts): from now on /readyz answers 503 (so load balancers stop sending
 * traffic) and responses ask clients to close their connections; requests in flight still complete.
 */
export const beginDraining = (app: express.Express): void => {
  draining.set(app, true);
};

const requestIdPattern = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** Request id (taken from X-Request-Id when sane, else generated), one log line and one latency sample per request. */
const observe =
  (logger: Logger, isDraining: () => boolean): RequestHandler =>
  (req, res, next) => {
    const incoming = req.get('x-request-id');
    const requestId = incoming && requestIdPattern.test(incoming) ? incoming : randomUUID();
    res.locals.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);
    if (isDraining()) res.setHeader('Connection', 'close');
    const started = process.hrtime.bigint();
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = routeTemplate(req, res);
      metrics.httpRequestDuration.observe({ method: req.method, route, status: String(res.statusCode) }, seconds);
      const level = res.statusCode >= 500 ? 'error' : 'info';
      // Built only when it is written: at LOG_LEVEL=warn a request costs no log line at all.
      if (!logger.isLevelEnabled(level)) return;
      const principal = res.locals.principal as Principal | undefined;
      const line = {
        requestId,
        method: req.method,
        route,
        path: req.path,
        status: res.statusCode,
        durationMs: Math.round(seconds * 1e6) / 1e3,
        ...(principal ? { apiKey: principal.name } : {}),
        ...(res.writableFinished ? {} : { aborted: true }),
      };
      logger[level](line, 'request');
    };
    res.once('finish', finish);
    res.once('close', finish);
    next();
  };

/** The route template (bounded label set for metrics): declared routes, mounted routers, or "unmatched". */
const routeTemplate = (req: Request, res: Response): string => {
  if (typeof res.locals.route === 'string') return res.locals.route;
  const routePath = (req.route as { path?: unknown } | undefined)?.path;
  if (typeof routePath === 'string') return `${req.baseUrl}${routePath}`;
  return 'unmatched';
};

/** What `res.json` sends, without its per-response content-type parsing (this is every read's last step). */
const sendJsonText = (res: Response, status: number, text: string) => {
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
};

/** Parses one part of the request; issues are collected so that one 400 names every bad parameter. */
const parsePart = <S extends z.ZodType>(schema: S, value: unknown, location: ParamLocation, invalid: InvalidParam[]): z.output<S> | undefined => {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  invalid.push(...issuesToParams(result.error.issues, location));
  return undefined;
};

/**
 * The HTTP API: `/v1` (keyed), `/webhooks` (the receiver, when given), and the unkeyed operational
 * routes (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`).
 */
export const createApp = (deps: ApiDeps, options: AppOptions = {}): express.Express => {
  const app = express();
  const keyFailures = applySecurity(app, deps.config.http);
  app.set('etag', false);
  app.set('query parser', 'simple');
  const isDraining = () => draining.get(app) === true;

  const freshness = cachedAccessStateAsOf(deps.db, {
    ...(options.freshnessTtlMs !== undefined ? { ttlMs: options.freshnessTtlMs } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const authenticator = createKeyAuthenticator({
    db: deps.db,
    environmentKeys: deps.config.http.apiKeys,
    logger: deps.logger,
    ...(options.keyCacheTtlMs !== undefined ? { cacheTtlMs: options.keyCacheTtlMs } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });

  const synced = cachedFirstFullSyncSucceeded(deps.db);
  const serveBeforeFirstSync = deps.config.http.serveBeforeFirstSync;

  let document: Record<string, unknown> | undefined;
  const routes = [...systemRoutes({ document: () => document ?? {}, draining: isDraining, synced }), ...apiRoutes()];
  document = buildOpenApiDocument(routes, {
    external: deps.webhookRouter ? [{ path: '/webhooks/logto', method: 'post', operation: webhookReceiverOperation }] : [],
  });

  app.use(observe(deps.logger, isDraining));
  // Before any body parser: the receiver verifies signatures over the raw bytes.
  if (deps.webhookRouter) app.use('/webhooks', deps.webhookRouter);
  app.use('/v1', keyFailures.guard, requireApiKey(authenticator, keyFailures.recordFailure));

  const idempotentWrites = idempotency({ db: deps.db, logger: deps.logger, ...options.idempotency });
  const jsonBody = express.json({ limit: options.bodyLimit ?? '64kb', strict: true, type: () => true });
  for (const route of routes) {
    const handlers: RequestHandler[] = [];
    if (route.auth === 'write') handlers.push(requireScope('write'));
    if (route.body) {
      handlers.push((req, _res, next) => {
        const length = Number(req.get('content-length') ?? 0);
        if ((length > 0 || req.get('transfer-encoding')) && !req.is('application/json') && !req.is('application/*+json')) {
          sendProblem(req, 415, 'unsupported_media_type', 'Send the request body as application/json');
          return;
        }
        next();
      }, jsonBody);
    }
    // After the body is parsed (it is part of what a key stands for), before anything runs.
    if (isIdempotentWrite(route)) handlers.push(idempotentWrites);
    const strictQuery = route.path.startsWith('/v1/');
    handlers.push(async (req, res) => {
      res.locals.route = route.path;
      const invalid: InvalidParam[] = [];
      const params = route.params ? parsePart(route.params, req.params, 'path', invalid) : undefined;
      let query: unknown;
      if (route.query) query = parsePart(route.query, req.query, 'query', invalid);
      else if (strictQuery) {
        invalid.push(...Object.keys(req.query as object).map((name) => ({ name, reason: 'is not a known parameter' })));
      }
      const body = route.body ? parsePart(route.body, req.body ?? undefined, 'body', invalid) : undefined;
      if (invalid.length > 0) throw invalidParams(invalid);
      if (!serveBeforeFirstSync && needsFirstSync(route) && !(await synced())) {
        sendNotSynced(req);
        return;
      }
      let asOf: Date | null = null;
      if (route.method === 'get' && route.auth !== 'none') {
        asOf = await freshness();
        const cap = deps.freshnessCap?.();
        if (asOf && cap && cap < asOf) asOf = cap;
        res.setHeader('X-Access-State-As-Of', asOf ? asOf.toISOString() : 'never');
      }
      const result = await route.handler({
        params,
        query,
        body,
        deps,
        principal: (res.locals.principal as Principal | undefined) ?? null,
        asOf,
        req,
        res,
      });
      if (res.headersSent) return;
      const schema = route.success.schema;
      const status = typeof res.locals.successStatus === 'number' ? res.locals.successStatus : route.success.status;
      if (!schema) {
        res.status(status).end();
        return;
      }
      const text = result instanceof JsonText ? result.text : JSON.stringify(result);
      if (options.validateResponses) {
        const checked = schema.safeParse(result instanceof JsonText ? JSON.parse(text) : result);
        if (!checked.success) {
          throw new Error(`response of ${route.method.toUpperCase()} ${route.path} does not match its schema: ${checked.error.message}`);
        }
      }
      sendJsonText(res, status, text);
    });
    app[route.method](route.path, ...handlers);
  }

  app.use('/docs', (_req, res, next) => {
    res.locals.route = '/docs/*';
    next();
  });
  app.use('/docs', express.static(swaggerUiDirectory(), { index: false, redirect: false, maxAge: '1d' }));
  app.use(notFoundHandler);
  app.use(errorHandler(deps.logger));
  return app;
};
