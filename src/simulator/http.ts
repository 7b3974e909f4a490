import type { Request, Response } from 'express';
import { z } from 'zod';
import { invalidInput } from './errors.js';
import type { Faults } from './faults.js';
import type { HookLogStore } from './hook-logs.js';
import { apiPathOf } from './pagination.js';
import type { HookPayload, ManagementApiContext } from './payloads.js';
import type { TenantState } from './state.js';
import type { WebhookSender } from './webhooks.js';

/** What every Management API route works with. */
export interface ApiDependencies {
  state: TenantState;
  webhooks: WebhookSender;
  faults: Faults;
  logs: HookLogStore;
}

export const jsonObject = z.record(z.string(), z.unknown());

const formatIssues = (error: z.ZodError): string =>
  error.issues
    .map((issue) => `Error in key path "${issue.path.map(String).join('.')}": (${issue.code}) ${issue.message}`)
    .join('\n');

/** Parses the JSON body; a missing body counts as `{}`, as with koa-body. */
export const parseBody = <T>(request: Request, schema: z.ZodType<T>): T => {
  const result = schema.safeParse(request.body ?? {});
  if (!result.success) throw invalidInput('body', formatIssues(result.error));
  return result.data;
};

export const parseQuery = <T>(query: URLSearchParams, schema: z.ZodType<T>): T => {
  const result = schema.safeParse(Object.fromEntries(query.entries()));
  if (!result.success) throw invalidInput('query', formatIssues(result.error));
  return result.data;
};

/** A route parameter; express always provides the ones in the route's pattern. */
export const param = (request: Request, name: string): string => {
  const value = (request.params as Record<string, string | undefined>)[name];
  if (value === undefined || value === '') throw invalidInput('params');
  return value;
};

/**
 * The caller's IP as Logto records it. Logto listens on `::`, so IPv4 callers appear as
 * IPv4-mapped IPv6 (`::ffff:127.0.0.1` in the captures); the simulator listens on IPv4 only and
 * maps the address the same way.
 */
export const callerIp = (request: Request): string => {
  const address = request.socket.remoteAddress ?? '';
  return /^\d+\.\d+\.\d+\.\d+$/.test(address) ? `::ffff:${address}` : address;
};

/** The route context of a webhook payload for this request. */
export const hookContext = (
  request: Request,
  status: number,
  matchedRoute: string,
  params: Record<string, string>,
): ManagementApiContext => ({
  userAgent: request.get('user-agent'),
  ip: callerIp(request),
  path: apiPathOf(request),
  method: request.method,
  status,
  params,
  matchedRoute,
});

/**
 * Answers and, once the answer is out, sends the webhooks (Logto triggers data hooks after the
 * response is produced, fire-and-forget). `body === undefined` answers without a body (204).
 */
export const respond = (
  dependencies: ApiDependencies,
  response: Response,
  status: number,
  body: unknown,
  payloads: readonly HookPayload[] = [],
): void => {
  const release = dependencies.webhooks.schedule(payloads);
  response.once('finish', release);
  response.once('close', release);
  response.status(status);
  if (body === undefined) response.end();
  else response.json(body);
};
