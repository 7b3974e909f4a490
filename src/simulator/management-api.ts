import express, { type ErrorRequestHandler, type RequestHandler, type Router } from 'express';
import type { Logger } from 'pino';
import { LogtoApiError } from './errors.js';
import type { ApiDependencies } from './http.js';
import { createHookRoutes } from './routes/hooks.js';
import { createOrganizationRoleRoutes } from './routes/organization-roles.js';
import { createOrganizationRoutes } from './routes/organizations.js';
import { createUserRoutes } from './routes/users.js';
import type { TokenIssuer } from './token.js';

export interface ManagementApiOptions extends ApiDependencies {
  tokens: TokenIssuer;
  logger?: Logger;
}

/** Logto's `koaAuth`: a bearer token for the Management API resource that carries scope `all`. */
const createAuthMiddleware = (tokens: TokenIssuer): RequestHandler => (request, _response, next) => {
  const authorization = request.get('authorization');
  if (!authorization) throw new LogtoApiError(401, 'auth.authorization_header_missing');
  if (!authorization.startsWith('Bearer')) {
    throw new LogtoApiError(401, 'auth.authorization_token_type_not_supported', { data: { supportedTypes: ['Bearer'] } });
  }
  const check = tokens.check(authorization.slice('Bearer '.length));
  // An unknown, malformed or expired token is a failed JWT verification in Logto.
  if (!check.ok) throw new LogtoApiError(401, 'auth.unauthorized');
  if (!check.token.scopes.includes('all')) throw new LogtoApiError(403, 'auth.forbidden');
  next();
};

const organizationPaths = /^\/(organizations|organization-roles)(\/|$)|^\/users\/[^/]+\/organizations\/?$/;

/**
 * Our model of a tenant whose plan lacks Organizations (`faults.organizationsEnabled = false`):
 * every organization and organization-role route answers 403 `auth.forbidden`. Logto's own answer
 * for that case is not recorded anywhere we could read.
 */
const createOrganizationsGate = (dependencies: ApiDependencies): RequestHandler => (request, _response, next) => {
  if (!dependencies.faults.organizationsEnabled && organizationPaths.test(request.path)) {
    throw new LogtoApiError(403, 'auth.forbidden');
  }
  next();
};

const createErrorHandler = (logger: Logger | undefined): ErrorRequestHandler => (error: unknown, _request, response, next) => {
  if (response.headersSent) {
    next(error);
    return;
  }
  if (error instanceof LogtoApiError) {
    response.status(error.status).json(error.toBody());
    return;
  }
  const bodyError = error as { type?: string; status?: number; message?: string };
  if (bodyError.type === 'entity.parse.failed' || bodyError.type === 'entity.verify.failed') {
    const invalid = new LogtoApiError(400, 'guard.invalid_input', {
      interpolation: { type: 'body' },
      ...(bodyError.message ? { details: bodyError.message } : {}),
    });
    response.status(400).json(invalid.toBody());
    return;
  }
  if (typeof bodyError.status === 'number' && bodyError.status >= 400 && bodyError.status < 500) {
    response.status(bodyError.status).json({ message: bodyError.message ?? 'Bad request.' });
    return;
  }
  logger?.error({ err: error }, 'simulated Management API failed');
  // Logto's koaErrorHandler answer for anything unexpected.
  response.status(500).json({ message: 'Internal server error.' });
};

/** The router mounted at `/api`. */
export const createManagementApi = (options: ManagementApiOptions): Router => {
  const router = express.Router();
  router.use(createAuthMiddleware(options.tokens));
  router.use(express.json({ limit: '5mb' }));
  router.use(createOrganizationsGate(options));
  router.use(createUserRoutes(options));
  router.use(createOrganizationRoutes(options));
  router.use(createOrganizationRoleRoutes(options));
  router.use(createHookRoutes(options));
  // Koa's default for an unmatched route: 404 with the text "Not Found".
  router.use((_request, response) => {
    response.sendStatus(404);
  });
  router.use(createErrorHandler(options.logger));
  return router;
};
