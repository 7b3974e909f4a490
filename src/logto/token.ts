import { setTimeout as sleep } from 'node:timers/promises';
import type { AxiosInstance } from 'axios';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { parseRetryAfter, retryWindow, tokenRefreshAfterMs, type BackoffOptions } from './backoff.js';
import { isTransient, LogtoError, missingScopeMessage } from './errors.js';
import { classifyFailure, header, parseJson, scrub } from './transport.js';
import { oauthErrorSchema, tokenResponseSchema } from './types.js';

type CachedToken = { value: string; refreshAt: number; expiresAt: number };

export type TokenProviderOptions = {
  config: Config['logto'];
  http: AxiosInstance;
  logger: Logger;
  userAgent: string;
  backoff: BackoffOptions;
  onFetch: () => void;
};

/** RFC 6749 §2.3.1: client id and secret are form-urlencoded before they are joined and base64-encoded. */
const formUrlEncode = (value: string): string => new URLSearchParams({ v: value }).toString().slice(2);

export const basicAuthorization = (clientId: string, clientSecret: string): string =>
  `Basic ${Buffer.from(`${formUrlEncode(clientId)}:${formUrlEncode(clientSecret)}`).toString('base64')}`;

/**
 * Management API access tokens by client credentials. The token is cached and refreshed before it
 * expires (see `tokenRefreshAfterMs`); concurrent callers share one in-flight request. Token requests
 * do not go through the rate budget. Network errors, 429 and 5xx are retried with backoff; an
 * OAuth error (bad credentials, bad resource) fails at once.
 */
export class TokenProvider {
  readonly #options: TokenProviderOptions;
  #cached: CachedToken | undefined;
  #inFlight: Promise<CachedToken> | undefined;

  constructor(options: TokenProviderOptions) {
    this.#options = options;
  }

  async get(): Promise<string> {
    const cached = this.#cached;
    if (cached && Date.now() < cached.refreshAt) return cached.value;
    this.#inFlight ??= this.#fetchWithRetry().finally(() => {
      this.#inFlight = undefined;
    });
    try {
      return (await this.#inFlight).value;
    } catch (error) {
      // A refresh ahead of expiry that fails for a passing reason (token endpoint down) falls back to
      // the still-valid token; bad credentials or a missing scope do not.
      if (cached && this.#cached === cached && Date.now() < cached.expiresAt - 5_000 && isTransient(error)) {
        this.#options.logger.warn({ reason: (error as LogtoError).message }, 'Logto token refresh failed; using the current token until it expires');
        return cached.value;
      }
      throw error;
    }
  }

  /** Drops `token` after the API refused it (401); a newer token fetched meanwhile is kept. */
  invalidate(token: string): void {
    if (this.#cached?.value === token) this.#cached = undefined;
  }

  async #fetchWithRetry(): Promise<CachedToken> {
    const { config, logger, backoff } = this.#options;
    const wait = retryWindow(config, backoff);
    for (let retry = 0; ; retry += 1) {
      const outcome = await this.#fetchOnce();
      if ('token' in outcome) {
        this.#cached = outcome.token;
        return outcome.token;
      }
      const { error, retryAfterMs } = outcome;
      if (retryAfterMs !== null && retryAfterMs > backoff.maxRetryAfterMs) throw error;
      const delay = wait(retry, retryAfterMs);
      if (delay === null) throw error;
      logger.warn(
        { tokenUrl: config.tokenUrl, reason: error.message, retry: retry + 1, delayMs: delay },
        'Logto token request failed; retrying',
      );
      await sleep(delay);
    }
  }

  /** One token request. Returns a token, or a retryable error; throws errors not worth retrying. */
  async #fetchOnce(): Promise<{ token: CachedToken } | { error: LogtoError; retryAfterMs: number | null }> {
    const { config, http, userAgent, onFetch } = this.#options;
    const body = new URLSearchParams({ grant_type: 'client_credentials', resource: config.resource, scope: 'all' });
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), config.timeoutMs);
    onFetch();
    const issuedAt = Date.now();
    let response;
    try {
      response = await http.request<string>({
        method: 'POST',
        url: config.tokenUrl,
        data: body.toString(),
        headers: {
          authorization: basicAuthorization(config.clientId, config.clientSecret),
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          'user-agent': userAgent,
        },
        signal: controller.signal,
      });
    } catch (error) {
      const failure = classifyFailure(error, controller.signal.aborted);
      const what =
        failure.reason === 'timeout' ? `did not answer within ${config.timeoutMs} ms` : `could not be reached (${failure.code})`;
      return {
        error: new LogtoError('unreachable', `Logto token endpoint ${config.tokenUrl} ${what}; check LOGTO_BASE_URL / LOGTO_TOKEN_URL`, {
          code: failure.code,
        }),
        retryAfterMs: null,
      };
    } finally {
      clearTimeout(timer);
    }

    const { status } = response;
    const parsed = parseJson(response.data);
    if (status >= 200 && status < 300) {
      const token = tokenResponseSchema.safeParse(parsed);
      if (!token.success) {
        throw new LogtoError('invalid_response', `Logto token endpoint ${config.tokenUrl} answered ${status} without a usable access token`, {
          status,
        });
      }
      const { access_token: value, expires_in: expiresIn, scope } = token.data;
      // Logto always echoes `scope`; a token without `all` is issued when the app lacks the role, and
      // every API call would then fail with 403. When `scope` is absent we cannot tell and let the API decide.
      if (scope !== undefined && !scope.split(/\s+/).includes('all')) {
        throw new LogtoError('scope', `${missingScopeMessage} (the token Logto issued has scope "${scope}")`, {
          status,
          code: 'scope_missing',
        });
      }
      return {
        token: { value, refreshAt: issuedAt + tokenRefreshAfterMs(expiresIn), expiresAt: issuedAt + expiresIn * 1000 },
      };
    }

    const oauth = oauthErrorSchema.safeParse(parsed);
    const code = oauth.success ? oauth.data.error : undefined;
    const description = oauth.success && oauth.data.error_description ? `: ${scrub(oauth.data.error_description, config)}` : '';
    const retryable = status === 429 || status >= 500;
    if (retryable) {
      const kind = status === 429 ? 'rate_limited' : 'unreachable';
      return {
        error: new LogtoError(kind, `Logto token endpoint ${config.tokenUrl} answered ${status}${code ? ` (${code})` : ''}`, {
          status,
          ...(code ? { code } : {}),
        }),
        retryAfterMs: parseRetryAfter(header(response.headers, 'retry-after')),
      };
    }
    throw tokenError(status, code, description, config.tokenUrl);
  }
}

const tokenError = (status: number, code: string | undefined, description: string, tokenUrl: string): LogtoError => {
  const details = { status, ...(code ? { code } : {}) };
  switch (code) {
    case 'invalid_client':
      return new LogtoError(
        'credentials',
        'Logto rejected the client id or secret (invalid_client): check LOGTO_CLIENT_ID and LOGTO_CLIENT_SECRET ' +
          'against the machine-to-machine application in the Logto Console',
        details,
      );
    case 'invalid_target':
      return new LogtoError(
        'credentials',
        `Logto does not know the requested API resource (invalid_target${description}): set LOGTO_MANAGEMENT_API_RESOURCE ` +
          'to the Management API identifier, https://<tenant-id>.logto.app/api on Logto Cloud or https://default.logto.app/api self-hosted',
        details,
      );
    case 'invalid_scope':
      return new LogtoError('scope', `${missingScopeMessage} (invalid_scope${description})`, details);
    case 'unauthorized_client':
    case 'unsupported_grant_type':
      return new LogtoError(
        'credentials',
        `Logto refused the client_credentials grant (${code}${description}): LOGTO_CLIENT_ID must belong to a machine-to-machine application`,
        details,
      );
    default:
      if (status === 401) {
        return new LogtoError('credentials', 'Logto rejected the client id or secret (invalid_client): check LOGTO_CLIENT_ID and LOGTO_CLIENT_SECRET', details);
      }
      return new LogtoError(
        'credentials',
        `Logto token endpoint ${tokenUrl} refused the request with ${status}${code ? ` (${code}${description})` : ''}`,
        details,
      );
  }
};
