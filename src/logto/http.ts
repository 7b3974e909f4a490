import { setTimeout as sleep } from 'node:timers/promises';
import type { AxiosInstance } from 'axios';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { metrics } from '../metrics.js';
import { parseRetryAfter, retryWindow, type BackoffOptions } from './backoff.js';
import { LogtoError, missingScopeMessage } from './errors.js';
import type { RateBudget } from './rate-budget.js';
import type { TokenProvider } from './token.js';
import { classifyFailure, header, parseJson, type Failure } from './transport.js';
import { logtoErrorBodySchema, type LogtoClientStats } from './types.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export type ApiRequest = {
  method: HttpMethod;
  /** Path below `/api`, starting with `/`, query string included (build it with `apiPath`). */
  path: string;
  body?: unknown;
  /**
   * Whether sending the request twice has the same effect as once. Defaults to true for every method
   * but POST. See `shouldRetry` for what that changes.
   */
  idempotent?: boolean;
  /**
   * What a 404 means: `error` (default) throws; `null` returns null (a lookup of something missing);
   * `done-after-retry` treats a 404 that follows an attempt with no clear answer as success (a retried
   * DELETE whose first attempt did run) and throws otherwise.
   */
  notFound?: 'error' | 'null' | 'done-after-retry';
};

export type ApiResponse = { status: number; data: unknown; headers: Record<string, unknown> };

export type HttpContext = {
  config: Config['logto'];
  transport: AxiosInstance;
  tokens: TokenProvider;
  budget: RateBudget;
  logger: Logger;
  userAgent: string;
  backoff: BackoffOptions;
  stats: LogtoClientStats;
};

/** `/organizations/a b/users` → `/organizations/a%20b/users`, with the query appended (repeated keys allowed). */
export const apiPath = (
  segments: readonly string[],
  query: ReadonlyArray<readonly [string, string | number | boolean]> = [],
): string => {
  const path = segments.map((segment) => `/${encodeURIComponent(segment)}`).join('');
  if (query.length === 0) return path;
  const search = new URLSearchParams();
  for (const [key, value] of query) search.append(key, String(value));
  return `${path}?${search.toString()}`;
};

type Attempt =
  | { type: 'response'; status: number; data: unknown; headers: Record<string, unknown> }
  | { type: 'failure'; failure: Failure };

/** Why a retry happens: the `reason` label of `logto_retries_total`. */
type RetryReason = 'rate_limited' | 'server_error' | 'timeout' | 'network' | 'token_rejected';

/**
 * Retry policy. Reads, PUT, PATCH and DELETE (and POSTs flagged idempotent) are retried on network
 * errors, timeouts, 429 and 5xx. A plain POST (creating a user) is retried only where the request
 * certainly did not run: 429 (throttled before it reached Logto), 503 (not accepted) and a refused
 * connection. After a timeout, a reset connection or a 500/502/504 it may well have run; sending it
 * again could create a second user, so the error goes to the caller, who can look before retrying.
 */
export const shouldRetry = (idempotent: boolean, outcome: { status: number } | Failure): boolean => {
  if ('status' in outcome) {
    if (outcome.status === 429 || outcome.status === 503) return true;
    return idempotent && outcome.status >= 500;
  }
  return outcome.reason === 'refused' || idempotent;
};

const retryReason = (outcome: { status: number } | Failure): RetryReason => {
  if ('status' in outcome) return outcome.status === 429 ? 'rate_limited' : 'server_error';
  return outcome.reason === 'timeout' ? 'timeout' : 'network';
};

const pathOnly = (path: string): string => path.split('?')[0] ?? path;

/**
 * Sends one Management API request through the budget, with the token, retries and error mapping.
 * Returns the response for 2xx, or null for a 404 the caller accepts. Every failure is a LogtoError.
 */
export const apiRequest = async (context: HttpContext, request: ApiRequest): Promise<ApiResponse | null> => {
  const { config, tokens, budget, logger, backoff, stats } = context;
  const idempotent = request.idempotent ?? request.method !== 'POST';
  const notFound = request.notFound ?? 'error';
  let retries = 0;
  let tokenRefreshed = false;
  let ambiguousEarlier = false;
  const wait = retryWindow(config, backoff);
  const waitFor = (retryAfterMs: number | null) => wait(retries, retryAfterMs);

  for (;;) {
    const token = await tokens.get();
    const attempt = await budget.run(() => send(context, request, token));

    if (attempt.type === 'response') {
      const { status } = attempt;
      if (status >= 200 && status < 300) return attempt;
      if (status === 404 && notFound === 'null') return null;
      if (status === 404 && notFound === 'done-after-retry' && ambiguousEarlier) {
        logger.debug({ method: request.method, path: pathOnly(request.path) }, 'Logto 404 after a retried attempt: already applied');
        return attempt;
      }
      if (status === 401 && !tokenRefreshed) {
        // The token expired or was revoked early: fetch a new one and try once more. Counted in
        // stats and metrics, but not against maxRetries.
        tokens.invalidate(token);
        tokenRefreshed = true;
        stats.retries += 1;
        metrics.logtoRetries.inc({ reason: 'token_rejected' });
        logger.debug({ method: request.method, path: pathOnly(request.path) }, 'Logto rejected the access token; fetching a new one');
        continue;
      }
      const retryAfterMs = parseRetryAfter(header(attempt.headers, 'retry-after'));
      const delay = shouldRetry(idempotent, attempt) ? waitFor(retryAfterMs) : null;
      if (delay !== null) {
        if (retryAfterMs !== null && retryAfterMs > backoff.maxRetryAfterMs) {
          throw statusError(request, attempt, retryAfterMs, backoff.maxRetryAfterMs);
        }
        // Throttling is per tenant: hold every caller back, not just this one.
        if (status === 429 || retryAfterMs !== null) budget.pauseFor(delay);
        if (status >= 500) ambiguousEarlier = true;
        await waitBeforeRetry(context, request, retryReason(attempt), `status ${status}`, retries, delay);
        retries += 1;
        continue;
      }
      throw statusError(request, attempt, retryAfterMs);
    }

    const { failure } = attempt;
    const delay = shouldRetry(idempotent, failure) ? waitFor(null) : null;
    if (delay !== null) {
      if (failure.reason !== 'refused') ambiguousEarlier = true;
      await waitBeforeRetry(context, request, retryReason(failure), failure.code, retries, delay);
      retries += 1;
      continue;
    }
    throw failureError(config, request, failure, idempotent, retries);
  }
};

const waitBeforeRetry = async (
  context: HttpContext,
  request: ApiRequest,
  reason: RetryReason,
  cause: string,
  retries: number,
  delay: number,
): Promise<void> => {
  context.stats.retries += 1;
  metrics.logtoRetries.inc({ reason });
  const fields = { method: request.method, path: pathOnly(request.path), cause, retry: retries + 1, delayMs: delay };
  // The first retry is routine (a blip); from the second on an operator may want to know.
  if (retries === 0 && reason !== 'rate_limited') context.logger.debug(fields, 'Logto request failed; retrying');
  else context.logger.warn(fields, 'Logto request failed; retrying');
  await sleep(delay);
};

/** One HTTP attempt. Never throws: a transport error becomes a classified failure. */
const send = async (context: HttpContext, request: ApiRequest, token: string): Promise<Attempt> => {
  const { config, transport, userAgent, stats } = context;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), config.timeoutMs);
  const stopTimer = metrics.logtoRequestDuration.startTimer({ method: request.method });
  stats.requests += 1;
  let label = 'network';
  try {
    const response = await transport.request<string>({
      method: request.method,
      url: `${config.baseUrl}/api${request.path}`,
      headers: {
        authorization: `Bearer ${token}`,
        accept: 'application/json',
        'user-agent': userAgent,
        ...(request.body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(request.body === undefined ? {} : { data: JSON.stringify(request.body) }),
      signal: controller.signal,
    });
    label = String(response.status);
    return { type: 'response', status: response.status, data: parseJson(response.data), headers: { ...response.headers } };
  } catch (error) {
    const failure = classifyFailure(error, controller.signal.aborted);
    label = failure.reason === 'timeout' ? 'timeout' : 'network';
    return { type: 'failure', failure };
  } finally {
    clearTimeout(timer);
    stopTimer();
    stats.byStatus[label] = (stats.byStatus[label] ?? 0) + 1;
    metrics.logtoRequests.inc({ method: request.method, status: label });
  }
};

const statusError = (
  request: ApiRequest,
  attempt: { status: number; data: unknown },
  retryAfterMs: number | null,
  /** Set when we gave up because `Retry-After` asked for a longer wait than this. */
  maxRetryAfterMs?: number,
): LogtoError => {
  const { status } = attempt;
  const body = logtoErrorBodySchema.safeParse(attempt.data);
  const code = body.success ? body.data.code : undefined;
  const logtoMessage = body.success && body.data.message ? `: ${body.data.message}` : '';
  const details = { status, path: request.path, ...(code ? { code } : {}) };
  const where = `${request.method} /api${pathOnly(request.path)}`;

  if (status === 401) {
    return new LogtoError(
      'credentials',
      `Logto rejected a freshly issued access token on ${where} (401${code ? ` ${code}` : ''}): the token's audience must be ` +
        'the Management API; check LOGTO_MANAGEMENT_API_RESOURCE and LOGTO_TOKEN_URL belong to the same tenant as LOGTO_BASE_URL',
      details,
    );
  }
  if (status === 403 && code === 'auth.forbidden') {
    return new LogtoError('scope', `${missingScopeMessage} (403 auth.forbidden on ${where})`, details);
  }
  if (maxRetryAfterMs !== undefined && retryAfterMs !== null) {
    return new LogtoError(
      status === 429 ? 'rate_limited' : 'api',
      `Logto answered ${status} to ${where} and asked to wait ${Math.ceil(retryAfterMs / 1000)} s (Retry-After), ` +
        `longer than the ${Math.ceil(maxRetryAfterMs / 1000)} s this client waits; try again later`,
      details,
    );
  }
  if (status === 429) {
    const wait = retryAfterMs === null ? '' : ` (it asked to wait ${Math.ceil(retryAfterMs / 1000)} s)`;
    return new LogtoError('rate_limited', `Logto kept throttling ${where} with 429 after every retry${wait}`, details);
  }
  const after = status === 503 && retryAfterMs !== null ? ` and asked to wait ${Math.ceil(retryAfterMs / 1000)} s` : '';
  return new LogtoError('api', `Logto answered ${status}${code ? ` ${code}` : ''} to ${where}${logtoMessage}${after}`, details);
};

const failureError = (
  config: Config['logto'],
  request: ApiRequest,
  failure: Failure,
  idempotent: boolean,
  retries: number,
): LogtoError => {
  const where = `${request.method} /api${pathOnly(request.path)}`;
  const tries = retries > 0 ? ` after ${retries + 1} attempts` : '';
  const details = { path: request.path, code: failure.code };
  if (!idempotent && failure.reason !== 'refused') {
    // Not retried on purpose (see shouldRetry): the write may have been applied.
    const what = failure.reason === 'timeout' ? `got no answer within ${config.timeoutMs} ms` : `lost the connection (${failure.code})`;
    return new LogtoError(
      failure.reason === 'timeout' ? 'timeout' : 'unreachable',
      `${where} ${what} at ${config.baseUrl}; it was not retried because it may have been applied: check before sending it again`,
      details,
    );
  }
  const what =
    failure.reason === 'timeout'
      ? `did not answer within ${config.timeoutMs} ms`
      : `could not be reached (${failure.code})`;
  return new LogtoError('unreachable', `Logto at ${config.baseUrl} ${what}${tries} (${where}); check LOGTO_BASE_URL and the network`, details);
};
