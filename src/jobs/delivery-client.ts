import { isIP } from 'node:net';
import { Agent, errors, type Dispatcher } from 'undici';
import { BlockedAddressError, isPrivateAddress, publicOnlyLookup } from '../sync/public-address.js';

export type DeliveryClientOptions = {
  /** For connecting, and for the answer's headers once the request is written. */
  timeoutMs: number;
  /** Connections kept alive per subscriber origin at the most; further requests queue for one. */
  connectionsPerOrigin: number;
  /** Connect to private, loopback and link-local addresses (internal deployments, tests). */
  allowPrivateUrls: boolean;
};

export type DeliveryClient = {
  /** POSTs `body`; resolves with the answer's status (its body is read and dropped), rejects when none came. */
  post(url: string, body: string, headers: Record<string, string>): Promise<number>;
  close(): Promise<void>;
};

/**
 * The event sender's HTTP client: undici, with a keep-alive pool per subscriber origin. At thousands of
 * deliveries a second the client is a large share of the sender's CPU, and undici spends far less per
 * request than axios over node:http. Redirects are not followed; every new connection resolves its host
 * through the public-only lookup unless private addresses are allowed.
 */
export const createDeliveryClient = (options: DeliveryClientOptions): DeliveryClient => {
  const dispatcher = new Agent({
    connections: options.connectionsPerOrigin,
    keepAliveTimeout: 30_000,
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    maxResponseSize: 64 * 1024,
    connect: { timeout: options.timeoutMs, ...(options.allowPrivateUrls ? {} : { lookup: publicOnlyLookup }) },
  });
  // Origin and path per subscriber URL, parsed once: the same few URLs are posted to thousands of times.
  // A host written as a private address literal is refused here: no lookup runs for it, so the guarded
  // lookup never sees it.
  const targets = new Map<string, { origin: string; path: string; blockedHost: string | null }>();
  const targetOf = (url: string) => {
    let target = targets.get(url);
    if (!target) {
      const parsed = new URL(url);
      const host = parsed.hostname.replace(/^\[|\]$/g, '');
      const blocked = !options.allowPrivateUrls && isIP(host) !== 0 && isPrivateAddress(host);
      target = { origin: parsed.origin, path: `${parsed.pathname}${parsed.search}`, blockedHost: blocked ? host : null };
      if (targets.size >= 1000) targets.clear();
      targets.set(url, target);
    }
    return target;
  };
  return {
    post(url, body, headers) {
      const { origin, path, blockedHost } = targetOf(url);
      if (blockedHost !== null) return Promise.reject(new BlockedAddressError(blockedHost, true));
      // A bare handler instead of undici's `request`: only the status counts, so no response object and
      // no body stream are built for each delivery (at thousands a second, `request`'s stream, its
      // handler and the body's dump were most of the client's CPU). The body is read and dropped as it
      // comes, so the connection carries the next request; the agent's timeouts and size limit still apply.
      return new Promise<number>((resolve, reject) => {
        let status = 0;
        const handler: Dispatcher.DispatchHandler = {
          onConnect: () => {},
          onHeaders: (statusCode) => {
            if (statusCode >= 200) status = statusCode;
            return true;
          },
          onData: () => true,
          onComplete: () => resolve(status),
          onError: reject,
        };
        dispatcher.dispatch({ origin, path, method: 'POST', headers, body }, handler);
      });
    },
    close: () => dispatcher.close(),
  };
};

/** A short description of why no answer came (no secrets: the URL is the subscriber's own). */
export const describeDeliveryError = (error: unknown): string => {
  if (error instanceof errors.HeadersTimeoutError || error instanceof errors.ConnectTimeoutError || error instanceof errors.BodyTimeoutError) {
    return 'timed out';
  }
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === 'EBLOCKEDADDRESS') return message;
  return typeof code === 'string' ? `${code}: ${message}` : message;
};
