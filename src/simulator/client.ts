import { bypassHeader } from './faults.js';
import type { TokenIssuer } from './token.js';

/**
 * A tiny authenticated caller for the simulated Management API, so tests can make the writes an
 * administrator would make and get exactly the webhooks Logto sends for them. It goes over HTTP
 * like any client, but skips injected faults and is not counted in `stats()`: it stands for
 * another actor than the code under test.
 */

export interface SimulatedApiResponse<T> {
  status: number;
  headers: Headers;
  /** Parsed JSON, text for other content types, `undefined` for an empty body. */
  body: T;
}

export type QueryValue = string | number | boolean | ReadonlyArray<string | number>;

export interface SimulatedApiRequestOptions {
  body?: unknown;
  query?: Record<string, QueryValue | undefined>;
  headers?: Record<string, string>;
}

// Bodies default to `any` so tests can read fields without a cast per call.
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface SimulatedApiClient {
  request<T = any>(method: string, path: string, options?: SimulatedApiRequestOptions): Promise<SimulatedApiResponse<T>>;
  get<T = any>(path: string, query?: SimulatedApiRequestOptions['query']): Promise<SimulatedApiResponse<T>>;
  post<T = any>(path: string, body?: unknown): Promise<SimulatedApiResponse<T>>;
  put<T = any>(path: string, body?: unknown): Promise<SimulatedApiResponse<T>>;
  patch<T = any>(path: string, body?: unknown): Promise<SimulatedApiResponse<T>>;
  delete<T = any>(path: string): Promise<SimulatedApiResponse<T>>;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/** The User-Agent of the admin client: it shows up as `userAgent` in the webhooks it causes. */
export const adminUserAgent = 'logto-simulator-admin/1.0';

export const createSimulatedApiClient = (baseUrl: () => string, tokens: TokenIssuer): SimulatedApiClient => {
  let accessToken: string | undefined;
  let expiresAt = 0;

  const token = (): string => {
    const check = accessToken === undefined ? undefined : tokens.check(accessToken);
    if (accessToken === undefined || !check?.ok || expiresAt - Date.now() < 5000) {
      const issued = tokens.issue(['all']);
      accessToken = issued.accessToken;
      expiresAt = issued.token.expiresAt;
    }
    return accessToken;
  };

  const request = async <T>(method: string, path: string, options: SimulatedApiRequestOptions = {}) => {
    const url = new URL(`${baseUrl()}/api${path.startsWith('/') ? path : `/${path}`}`);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value === undefined) continue;
      if (Array.isArray(value)) for (const item of value) url.searchParams.append(key, String(item));
      else url.searchParams.append(key, String(value));
    }
    const response = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${token()}`,
        'user-agent': adminUserAgent,
        [bypassHeader]: '1',
        ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...options.headers,
      },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    });
    const text = await response.text();
    let body: unknown;
    if (text === '') body = undefined;
    else if ((response.headers.get('content-type') ?? '').includes('application/json')) body = JSON.parse(text);
    else body = text;
    return { status: response.status, headers: response.headers, body: body as T };
  };

  return {
    request,
    get: (path, query) => request('GET', path, query === undefined ? {} : { query }),
    post: (path, body) => request('POST', path, { body }),
    put: (path, body) => request('PUT', path, { body }),
    patch: (path, body) => request('PATCH', path, { body }),
    delete: (path) => request('DELETE', path),
  };
};
