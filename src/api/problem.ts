import { STATUS_CODES } from 'node:http';
import type { ErrorRequestHandler, Request, RequestHandler } from 'express';
import type { z } from 'zod';
import { isDatabaseUnavailable } from '../db/client.js';
import { AppError } from '../errors.js';
import { requestIdOf, sendProblem } from '../problem.js';
import type { Logger } from '../logger.js';

export { PROBLEM_CONTENT_TYPE, problemBody, problemTypeUri, requestIdOf, sendProblem } from '../problem.js';

/** Seconds a client is asked to wait when the database is away. */
export const databaseRetryAfterSeconds = 5;

export type InvalidParam = { name: string; reason: string };

/** Where a validation issue came from, for naming the parameter. */
export type ParamLocation = 'path' | 'query' | 'body';

/** A 400 naming every rejected parameter. */
export const invalidParams = (invalid: InvalidParam[]): AppError =>
  new AppError(
    400,
    'invalid_params',
    `Invalid ${invalid.length === 1 ? 'parameter' : 'parameters'}: ${invalid.map((param) => `${param.name} ${param.reason}`).join('; ')}`,
    { invalid_params: invalid },
  );

const pathName = (path: readonly PropertyKey[]): string =>
  path.reduce<string>((name, segment) => {
    if (typeof segment === 'number') return `${name}[${segment}]`;
    return name === '' ? String(segment) : `${name}.${String(segment)}`;
  }, '');

/** Zod issues as `invalid_params` entries: unknown keys are named one by one. */
export const issuesToParams = (issues: readonly z.core.$ZodIssue[], location: ParamLocation): InvalidParam[] => {
  const result: InvalidParam[] = [];
  for (const issue of issues) {
    const base = pathName(issue.path);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        result.push({ name: base ? `${base}.${key}` : key, reason: 'is not a known parameter' });
      }
      continue;
    }
    result.push({ name: base || (location === 'body' ? 'body' : location), reason: issue.message });
  }
  return result;
};

/** Errors from body-parser and friends carry a status and say whether their message may be shown. */
type HttpLikeError = Error & { status?: number; statusCode?: number; expose?: boolean; type?: string };

export const notFoundHandler: RequestHandler = (req) => {
  sendProblem(req, 404, 'route_not_found', `No route ${req.method} ${req.path}`);
};

/**
 * The one place errors become responses: an AppError shows its own message (and details as
 * extension members); a client error from the HTTP layer (bad JSON, body too large) shows a safe
 * message; anything else is logged in full with the request id and answered with a generic 500.
 */
export const errorHandler =
  (logger: Logger): ErrorRequestHandler =>
  (error: unknown, req, res, next) => {
    const requestId = requestIdOf(req);
    if (res.headersSent) {
      logger.error({ err: error, requestId }, 'error after the response started');
      next(error);
      return;
    }
    if (error instanceof AppError) {
      if (error.status >= 500) logger.error({ err: error, requestId }, error.message);
      for (const [name, value] of Object.entries(error.headers ?? {})) res.setHeader(name, value);
      sendProblem(req, error.status, error.code, error.message, error.details);
      return;
    }
    const httpError = error as HttpLikeError;
    const status = httpError?.status ?? httpError?.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      const code =
        httpError.type === 'entity.parse.failed'
          ? 'invalid_json'
          : httpError.type === 'entity.too.large'
            ? 'body_too_large'
            : status === 415 || httpError.type === 'encoding.unsupported'
              ? 'unsupported_media_type'
              : 'bad_request';
      const detail =
        code === 'invalid_json' ? 'The request body is not valid JSON' : httpError.expose ? httpError.message : (STATUS_CODES[status] ?? 'Bad request');
      sendProblem(req, status, code, detail);
      return;
    }
    if (isDatabaseUnavailable(error)) {
      logger.error({ err: error, requestId }, 'the database is unavailable');
      res.set('Retry-After', String(databaseRetryAfterSeconds));
      sendProblem(req, 503, 'database_unavailable', 'The database is unavailable; try again shortly');
      return;
    }
    logger.error({ err: error, requestId }, 'unhandled error');
    sendProblem(req, 500, 'internal_error', 'An unexpected error occurred; quote the request id when reporting it');
  };
