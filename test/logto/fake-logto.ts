import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../../src/config.js';

/**
 * A tiny stand-in for a Logto tenant, for behaviours the simulated tenant may not expose: counted
 * token requests, scripted API answers, hangs, received timestamps and in-flight counts.
 * It is a real HTTP server; nothing in the client is mocked.
 */

export type ReceivedRequest = {
  method: string;
  /** Path below `/api` (the server answers 404 to anything outside `/api` and `/oidc/token`). */
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: unknown;
  receivedAt: number;
  /** Bearer token presented. */
  token: string | undefined;
};

export type Reply = {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
  /** Never answer (the client must time out). */
  hang?: boolean;
};

export type ApiHandler = (request: ReceivedRequest) => Reply | Promise<Reply>;

export type FakeLogtoOptions = {
  clientId?: string;
  clientSecret?: string;
  resource?: string;
  /** `scope` echoed in token responses. */
  scope?: string;
  expiresIn?: number;
  /** Scripted answers to token requests before the normal behaviour (e.g. 503 twice). */
  tokenFaults?: Reply[];
  api?: ApiHandler;
};

export type TokenRequest = { authorization: string | undefined; form: URLSearchParams; userAgent: string | undefined };

export type FakeLogto = {
  baseUrl: string;
  tokenUrl: string;
  resource: string;
  clientId: string;
  clientSecret: string;
  requests: ReceivedRequest[];
  tokenRequests: TokenRequest[];
  issuedTokens: string[];
  /** Largest number of API requests being handled at once. */
  maxInFlight(): number;
  /** Server-side expiry: every token issued so far is refused from now on (401). */
  revokeAllTokens(): void;
  setApi(handler: ApiHandler): void;
  config(overrides?: Partial<Config['logto']>): Config['logto'];
  close(): Promise<void>;
};

const readBody = async (request: IncomingMessage): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
};

const formDecode = (value: string): string => decodeURIComponent(value.replace(/\+/g, '%20'));

const respond = (response: ServerResponse, reply: Reply) => {
  if (reply.hang) return;
  const send = () => {
    if (response.destroyed) return;
    const body = reply.body === undefined ? '' : JSON.stringify(reply.body);
    response.writeHead(reply.status, {
      ...(body ? { 'content-type': 'application/json; charset=utf-8' } : {}),
      ...reply.headers,
    });
    response.end(body);
  };
  if (reply.delayMs) setTimeout(send, reply.delayMs);
  else send();
};

export const startFakeLogto = async (options: FakeLogtoOptions = {}): Promise<FakeLogto> => {
  const clientId = options.clientId ?? 'm2m-app';
  const clientSecret = options.clientSecret ?? 'sEcReT-value-0123456789';
  const tokenFaults = [...(options.tokenFaults ?? [])];
  let api: ApiHandler = options.api ?? (() => ({ status: 404, body: { code: 'entity.not_found', message: 'not found' } }));
  const requests: ReceivedRequest[] = [];
  const tokenRequests: TokenRequest[] = [];
  const issuedTokens: string[] = [];
  const validTokens = new Set<string>();
  let inFlight = 0;
  let maxInFlight = 0;
  let resource = options.resource ?? '';

  const server = createServer(async (request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const raw = await readBody(request);

    if (request.method === 'POST' && url.pathname === '/oidc/token') {
      const form = new URLSearchParams(raw);
      tokenRequests.push({ authorization: request.headers.authorization, form, userAgent: request.headers['user-agent'] });
      const fault = tokenFaults.shift();
      if (fault) return respond(response, fault);
      const basic = /^Basic (.+)$/.exec(request.headers.authorization ?? '');
      const decoded = basic ? Buffer.from(basic[1]!, 'base64').toString('utf8') : '';
      const colon = decoded.indexOf(':');
      const id = colon >= 0 ? formDecode(decoded.slice(0, colon)) : '';
      const secret = colon >= 0 ? formDecode(decoded.slice(colon + 1)) : '';
      if (id !== clientId || secret !== clientSecret) {
        return respond(response, { status: 401, body: { error: 'invalid_client', error_description: 'client authentication failed' } });
      }
      if (form.get('grant_type') !== 'client_credentials') {
        return respond(response, { status: 400, body: { error: 'unsupported_grant_type' } });
      }
      if (form.get('resource') !== resource) {
        return respond(response, { status: 400, body: { error: 'invalid_target', error_description: 'resource indicator is missing, or unknown' } });
      }
      const token = `token-${issuedTokens.length + 1}-${Math.random().toString(36).slice(2)}`;
      issuedTokens.push(token);
      validTokens.add(token);
      return respond(response, {
        status: 200,
        body: { access_token: token, expires_in: options.expiresIn ?? 3600, token_type: 'Bearer', scope: options.scope ?? 'all' },
      });
    }

    if (!url.pathname.startsWith('/api/')) {
      return respond(response, { status: 404, body: { code: 'not_mounted', message: 'outside /api' } });
    }
    const bearer = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
    let body: unknown;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      body = raw;
    }
    const received: ReceivedRequest = {
      method: request.method ?? 'GET',
      path: url.pathname.slice('/api'.length),
      query: url.searchParams,
      headers: request.headers,
      body,
      receivedAt: performance.timeOrigin + performance.now(),
      token: bearer,
    };
    requests.push(received);
    if (!bearer || !validTokens.has(bearer)) {
      return respond(response, { status: 401, body: { code: 'auth.unauthorized', message: 'Unauthorized' } });
    }
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        inFlight -= 1;
      }
    };
    response.on('close', release);
    response.on('finish', release);
    try {
      respond(response, await api(received));
    } catch (error) {
      respond(response, { status: 500, body: { code: 'fake.handler_failed', message: String(error) } });
    }
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  resource ||= `${baseUrl}/api`;

  return {
    baseUrl,
    tokenUrl: `${baseUrl}/oidc/token`,
    resource,
    clientId,
    clientSecret,
    requests,
    tokenRequests,
    issuedTokens,
    maxInFlight: () => maxInFlight,
    revokeAllTokens: () => validTokens.clear(),
    setApi(handler) {
      api = handler;
    },
    config: (overrides = {}) => ({
      baseUrl,
      tokenUrl: `${baseUrl}/oidc/token`,
      resource,
      clientId,
      clientSecret,
      rateLimit: { requests: 1000, intervalMs: 1000 },
      concurrency: 8,
      timeoutMs: 2000,
      maxRetries: 3,
      hookId: undefined,
      ...overrides,
    }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
};

/** A user item shaped like the recorded `GET /users` items. */
export const fakeUser = (id: string, overrides: Record<string, unknown> = {}) => ({
  id,
  username: `user-${id}`,
  primaryEmail: `${id}@example.com`,
  primaryPhone: null,
  name: `User ${id}`,
  avatar: null,
  customData: {},
  identities: {},
  lastSignInAt: null,
  createdAt: 1_795_462_887_410,
  updatedAt: 1_795_462_887_410,
  profile: {},
  applicationId: null,
  cimdClientId: null,
  isSuspended: false,
  hasPassword: false,
  ...overrides,
});

/** A port on 127.0.0.1 with nothing listening. */
export const closedPort = async (): Promise<number> => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
};
