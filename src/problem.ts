import { STATUS_CODES } from 'node:http';
import type { Request } from 'express';

/**
 * RFC 9457 problem details, the one shape every HTTP error of the service takes: the API's error
 * middleware and the webhook receiver (which answers its refusals itself, so it works mounted anywhere)
 * both send them through here.
 */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
export const problemTypeUri = (code: string) => `urn:logto-access-sync:problem:${code}`;

export type Problem = {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance: string;
  requestId: string;
  code: string;
  [extension: string]: unknown;
};

export const requestIdOf = (req: Request): string => String(req.res?.locals.requestId ?? '');

export const problemBody = (req: Request, status: number, code: string, detail: string, extensions?: Record<string, unknown>): Problem => ({
  ...extensions,
  type: problemTypeUri(code),
  title: STATUS_CODES[status] ?? 'Error',
  status,
  detail,
  instance: req.originalUrl.split('?')[0] ?? req.originalUrl,
  requestId: requestIdOf(req),
  code,
});

export const sendProblem = (
  req: Request,
  status: number,
  code: string,
  detail: string,
  extensions?: Record<string, unknown>,
): void => {
  const res = req.res!;
  res.status(status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problemBody(req, status, code, detail, extensions)));
};

