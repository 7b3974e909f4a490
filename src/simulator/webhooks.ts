import { createHmac } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { HookLogResponse, HookLogStore } from './hook-logs.js';
import type { HookEvent, HookPayload } from './payloads.js';

/**
 * Sends webhooks the way Logto does (`libraries/hook/utils.ts` `sendWebhookRequest`): one POST per
 * hook and event, `JSON.stringify(payload)` as the body, an HMAC-SHA256 signature of exactly those
 * bytes, a 10 s timeout and no retry (ky does not retry POST). Every attempt writes a log row.
 */

export interface WebhookEndpoint {
  url: string;
  /** The hook's signing key; empty means no signature header, as for a hook without one. */
  signingKey: string;
  /** The hook's id in payloads and logs. Default: the tenant's hook id. */
  hookId?: string;
  /** The events this hook subscribes to. Default: all. */
  events?: readonly HookEvent[];
  /** Logto's `config.headers`: sent with every delivery; they may override user-agent and content-type. */
  headers?: Record<string, string>;
  /** A disabled hook receives nothing. Default true. */
  enabled?: boolean;
}

/** One delivery attempt, recorded when it starts and completed when it ends. */
export interface SentWebhook {
  hookId: string;
  url: string;
  event: HookEvent;
  /** The payload as sent (with `hookId`). */
  payload: Record<string, unknown>;
  /** The exact bytes sent. */
  rawBody: string;
  /** The `logto-signature-sha-256` header, if the hook has a signing key. */
  signature: string | undefined;
  /** Still under way; becomes false when it succeeds, fails or is dropped. */
  pending: boolean;
  /** The receiver's status, when it answered. */
  status?: number;
  /** Why it failed, in Logto's log wording. */
  error?: string;
  /** Not sent at all: swallowed by `dropNext`. */
  dropped: boolean;
}

export interface WebhookSenderOptions {
  hookId: string;
  logs: HookLogStore;
  endpoints?: readonly WebhookEndpoint[];
  /** Logto's ky timeout is 10 s. */
  timeoutMs?: number;
  /** Logto sends a request's payload×hook pairs through p-map with concurrency 10. */
  concurrency?: number;
  /** `sent` keeps this many most recent records, so a long benchmark does not grow without bound. Default 10 000. */
  maxSentRecords?: number;
}

export const webhookUserAgent = 'Logto (https://logto.io/)';
export const signatureHeader = 'logto-signature-sha-256';

/** Lowercase hex HMAC-SHA256 of the raw body, keyed by the signing key as UTF-8. */
export const signWebhook = (signingKey: string, rawBody: string): string =>
  createHmac('sha256', signingKey).update(rawBody).digest('hex');

// Logto logs `String(normalizeError(error))`; these reproduce the first part of what ky's errors
// look like there (the capture's HTTPError also lists ky's options, which we leave out).
const timeoutError = 'TimeoutError: {"message":"Request timed out","request":{},"name":"TimeoutError"}';
const httpError = (status: number, statusText: string) =>
  `HTTPError: ${JSON.stringify({
    message: `Request failed with status code ${status} ${statusText}`.trim(),
    response: {},
    request: {},
    name: 'HTTPError',
  })}`;
const networkError = (error: unknown) =>
  `TypeError: ${JSON.stringify({ message: error instanceof Error ? error.message : String(error), name: 'TypeError' })}`;

const parseBody = (text: string): unknown => {
  if (text === '') return '';
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
};

const runLimited = async (tasks: Array<() => Promise<void>>, concurrency: number): Promise<void> => {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const task = tasks[next] as () => Promise<void>;
      next += 1;
      await task();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tasks.length) }, worker));
};

export class WebhookSender {
  readonly hookId: string;
  readonly logs: HookLogStore;
  /** Every delivery attempt in the order it started (dropped ones included). */
  readonly sent: SentWebhook[] = [];
  timeoutMs: number;

  readonly #concurrency: number;
  readonly #maxSentRecords: number;
  #endpoints: WebhookEndpoint[];
  #dropBudget = 0;
  #paused = false;
  readonly #parked: HookPayload[][] = [];
  /** Batches held until their API response has gone out. */
  #reserved = 0;
  #inFlight = 0;
  readonly #idleWaiters: Array<() => void> = [];
  readonly #shutdown = new AbortController();

  constructor(options: WebhookSenderOptions) {
    this.hookId = options.hookId;
    this.logs = options.logs;
    this.#endpoints = [...(options.endpoints ?? [])];
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.#concurrency = options.concurrency ?? 10;
    this.#maxSentRecords = options.maxSentRecords ?? 10_000;
  }

  /** Replaces the configured hooks. */
  setEndpoints(endpoints: readonly WebhookEndpoint[]): void {
    this.#endpoints = endpoints.map((endpoint) => ({ ...endpoint }));
  }

  get endpoints(): readonly WebhookEndpoint[] {
    return this.#endpoints;
  }

  /** The next `count` deliveries are not sent; each is logged as a failed (timed-out) delivery. */
  dropNext(count: number): void {
    this.#dropBudget += Math.max(0, Math.floor(count));
  }

  /** Holds deliveries (in order) until `resume()`. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    for (const batch of this.#parked.splice(0)) this.#deliver(batch);
    this.#checkIdle();
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** Payload batches waiting for `resume()`. */
  get parkedCount(): number {
    return this.#parked.length;
  }

  /**
   * Resolves once no delivery is reserved or under way. Deliveries parked by `pause()` do not
   * count: they are not under way until `resume()`.
   */
  idle(): Promise<void> {
    if (this.#reserved === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Reserves delivery of `payloads` and returns the function that releases them. The API calls it
   * before answering and releases once the response is out, so `idle()` never misses a delivery
   * whose response a test has already read, while the send itself still happens after the
   * response, as in Logto.
   */
  schedule(payloads: readonly HookPayload[]): () => void {
    if (payloads.length === 0) return () => {};
    this.#reserved += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#reserved -= 1;
      if (this.#paused) this.#parked.push([...payloads]);
      else this.#deliver([...payloads]);
      this.#checkIdle();
    };
  }

  /** Sends `payloads` now (concurrently), e.g. for events that do not come from an API response. */
  send(payloads: readonly HookPayload[]): void {
    this.schedule(payloads)();
  }

  /** Forgets the recorded deliveries (not the log rows). */
  clearSent(): void {
    this.sent.length = 0;
  }

  /** Aborts deliveries under way; used when the simulated tenant shuts down. */
  close(): void {
    this.#shutdown.abort();
    this.#parked.length = 0;
  }

  #deliver(batch: HookPayload[]): void {
    const createdAt = new Date().toISOString();
    const tasks: Array<() => Promise<void>> = [];
    for (const payload of batch) {
      // Assigning keeps the key in its place (second), as Logto sets it when building the payload.
      payload.createdAt = createdAt;
      for (const endpoint of this.#endpoints) {
        if (endpoint.enabled === false) continue;
        if (endpoint.events && !endpoint.events.includes(payload.event)) continue;
        tasks.push(() => this.#sendOne(endpoint, payload));
      }
    }
    if (tasks.length === 0) return;
    this.#inFlight += tasks.length;
    void runLimited(tasks, this.#concurrency);
  }

  async #sendOne(endpoint: WebhookEndpoint, payload: HookPayload): Promise<void> {
    const hookId = endpoint.hookId ?? this.hookId;
    const body = { ...payload, hookId };
    const rawBody = JSON.stringify(body);
    const signature = endpoint.signingKey ? signWebhook(endpoint.signingKey, rawBody) : undefined;
    const record: SentWebhook = {
      hookId,
      url: endpoint.url,
      event: payload.event,
      payload: JSON.parse(rawBody) as Record<string, unknown>,
      rawBody,
      signature,
      pending: true,
      dropped: false,
    };
    this.sent.push(record);
    if (this.sent.length > this.#maxSentRecords) this.sent.splice(0, this.sent.length - this.#maxSentRecords);
    let response: HookLogResponse | undefined;
    try {
      if (this.#dropBudget > 0) {
        this.#dropBudget -= 1;
        record.dropped = true;
        record.error = timeoutError;
        return;
      }
      const result = await this.#post(endpoint, rawBody, signature);
      response = result.response;
      record.status = result.response.statusCode;
      if (result.error) record.error = result.error;
    } catch (error) {
      record.error = (error as { name?: string }).name === 'TimeoutError' ? timeoutError : networkError(error);
    } finally {
      record.pending = false;
      this.logs.add({
        hookId,
        event: payload.event,
        result: record.error === undefined ? 'Success' : 'Error',
        ...(record.error === undefined ? {} : { error: record.error }),
        ...(response === undefined ? {} : { response }),
        requestBody: body,
      });
      this.#inFlight -= 1;
      this.#checkIdle();
    }
  }

  async #post(
    endpoint: WebhookEndpoint,
    rawBody: string,
    signature: string | undefined,
  ): Promise<{ response: HookLogResponse; error?: string }> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.#shutdown.signal]);
    // fetch (undici) is what ky uses in Logto, so the receiver also sees the same accept,
    // accept-language, sec-fetch-mode and accept-encoding headers as in the captures.
    const response = await fetch(endpoint.url, {
      method: 'POST',
      headers: {
        'user-agent': webhookUserAgent,
        'content-type': 'application/json',
        ...endpoint.headers,
        ...(signature === undefined ? {} : { [signatureHeader]: signature }),
      },
      body: rawBody,
      signal,
    });
    const text = await response.text();
    const logged: HookLogResponse = { statusCode: response.status, body: parseBody(text) };
    if (response.ok) return { response: logged };
    return { response: logged, error: httpError(response.status, response.statusText || STATUS_CODES[response.status] || '') };
  }

  #checkIdle(): void {
    if (this.#reserved !== 0 || this.#inFlight !== 0) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }
}
