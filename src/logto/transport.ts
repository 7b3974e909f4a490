import http from 'node:http';
import https from 'node:https';
import axios, { type AxiosInstance } from 'axios';

/**
 * The axios instance both the token provider and the API requests use. Every status comes back as a
 * response (we decide what is an error), bodies stay text (we parse and validate them), redirects are
 * not followed (nothing in the Management API redirects, and a redirect must not carry the bearer
 * token elsewhere). HTTP(S)_PROXY / NO_PROXY from the environment are honoured, as axios does.
 */
export const createTransport = (): AxiosInstance =>
  axios.create({
    validateStatus: () => true,
    responseType: 'text',
    transformResponse: [(data: unknown) => data],
    maxRedirects: 0,
    httpAgent: new http.Agent({ keepAlive: true }),
    httpsAgent: new https.Agent({ keepAlive: true }),
  });

export type Failure = {
  /** `timeout`: no answer in time; `refused`: the connection was refused, so the request never ran; `network`: anything else. */
  reason: 'timeout' | 'refused' | 'network';
  /** A system error code such as ECONNREFUSED or ENOTFOUND, or `timeout`. Never a message or a config. */
  code: string;
};

const errorCode = (error: unknown): string | undefined => {
  if (typeof error !== 'object' || error === null) return undefined;
  const candidate = error as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof candidate.code === 'string' && candidate.code !== 'ERR_CANCELED') return candidate.code;
  // Node's happy-eyeballs connect reports an AggregateError of per-address failures.
  if (Array.isArray(candidate.errors)) {
    for (const inner of candidate.errors) {
      const code = errorCode(inner);
      if (code) return code;
    }
  }
  if (candidate.cause !== undefined && candidate.cause !== error) return errorCode(candidate.cause);
  return undefined;
};

/** Reduces a thrown transport error to a reason and a code; the error object itself is dropped. */
export const classifyFailure = (error: unknown, aborted: boolean): Failure => {
  const code = errorCode(error);
  if (aborted || code === 'ECONNABORTED' || code === 'ETIMEDOUT') return { reason: 'timeout', code: 'timeout' };
  if (code === 'ECONNREFUSED') return { reason: 'refused', code };
  return { reason: 'network', code: code ?? 'network_error' };
};

/** JSON body or undefined (empty or not JSON). */
export const parseJson = (data: unknown): unknown => {
  if (typeof data !== 'string') return data ?? undefined;
  if (data.trim() === '') return undefined;
  try {
    return JSON.parse(data) as unknown;
  } catch {
    return undefined;
  }
};

/** Removes the client secret from text that came back from Logto, should it ever echo it. */
export const scrub = (text: string, secrets: { clientSecret: string }): string =>
  secrets.clientSecret.length > 0 ? text.split(secrets.clientSecret).join('[redacted]') : text;

/** One header value from axios' header bag, lower-cased name. */
export const header = (headers: unknown, name: string): string | undefined => {
  if (typeof headers !== 'object' || headers === null) return undefined;
  const value = (headers as Record<string, unknown>)[name.toLowerCase()];
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && typeof value[0] === 'string') return value[0];
  if (typeof value === 'number') return String(value);
  return undefined;
};
