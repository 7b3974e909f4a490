import { timingSafeEqual } from 'node:crypto';
import express, { type Request, type Response, type Router } from 'express';
import { generateSecret } from './ids.js';

/**
 * `POST /oidc/token` for the client-credentials grant, answering like Logto's patched
 * node-oidc-provider, and the token store the Management API checks bearer tokens against.
 * Tokens are opaque random strings (Logto's are JWTs, which a client never needs to look into).
 */

export interface TokenIssuerOptions {
  clientId: string;
  clientSecret: string;
  /** The Management API resource indicator tokens are issued for. */
  resource: string;
  /** Lifetime of a token; Logto's Management API resource uses 3600 s. */
  tokenTtlSeconds?: number;
  /** Whether the M2M app holds a role granting the `all` scope. */
  grantAllScope?: boolean;
  now?: () => number;
}

export interface IssuedToken {
  clientId: string;
  scopes: string[];
  expiresAt: number;
}

export type TokenCheck = { ok: true; token: IssuedToken } | { ok: false };

interface OidcError {
  status: number;
  error: string;
  description: string;
}

const oidcError = (status: number, error: string, description: string): OidcError => ({ status, error, description });

const constantTimeEquals = (a: string, b: string): boolean => {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
};

export class TokenIssuer {
  readonly clientId: string;
  readonly #clientSecret: string;
  resource: string;
  tokenTtlSeconds: number;
  grantAllScope: boolean;
  /** How many tokens were issued: lets a test see that a client caches its token. */
  issuedCount = 0;
  readonly #now: () => number;
  readonly #tokens = new Map<string, IssuedToken>();

  constructor(options: TokenIssuerOptions) {
    this.clientId = options.clientId;
    this.#clientSecret = options.clientSecret;
    this.resource = options.resource;
    this.tokenTtlSeconds = options.tokenTtlSeconds ?? 3600;
    this.grantAllScope = options.grantAllScope ?? true;
    this.#now = options.now ?? Date.now;
  }

  /** Issues a token directly, bypassing HTTP (for the simulator's own admin client). */
  issue(scopes: string[]): { accessToken: string; token: IssuedToken } {
    const accessToken = generateSecret(32);
    const token: IssuedToken = {
      clientId: this.clientId,
      scopes,
      expiresAt: this.#now() + this.tokenTtlSeconds * 1000,
    };
    this.#tokens.set(accessToken, token);
    this.issuedCount += 1;
    this.#sweep();
    return { accessToken, token };
  }

  check(accessToken: string): TokenCheck {
    const token = this.#tokens.get(accessToken);
    if (!token) return { ok: false };
    if (token.expiresAt <= this.#now()) {
      this.#tokens.delete(accessToken);
      return { ok: false };
    }
    return { ok: true, token };
  }

  /** Makes every issued token invalid at once, as if they had all reached their expiry. */
  expireAllTokens(): void {
    this.#tokens.clear();
  }

  /** Drops expired tokens so a long run does not accumulate them. */
  #sweep(): void {
    if (this.#tokens.size < 1000) return;
    const now = this.#now();
    for (const [key, token] of this.#tokens) if (token.expiresAt <= now) this.#tokens.delete(key);
  }

  #authenticateClient(request: Request, body: Record<string, unknown>): OidcError | undefined {
    const header = request.get('authorization');
    const basic = header?.startsWith('Basic ') ? header.slice('Basic '.length) : undefined;
    const hasPostCredentials = body.client_secret !== undefined;
    if (basic !== undefined && hasPostCredentials) {
      return oidcError(400, 'invalid_request', 'client authentication must only be provided using one mechanism');
    }
    let clientId: unknown;
    let clientSecret: unknown;
    if (basic !== undefined) {
      const decoded = Buffer.from(basic, 'base64').toString('utf8');
      const separator = decoded.indexOf(':');
      if (separator === -1) return oidcError(400, 'invalid_request', 'invalid authorization header value format');
      try {
        // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
        clientId = decodeURIComponent(decoded.slice(0, separator).replace(/\+/g, ' '));
        clientSecret = decodeURIComponent(decoded.slice(separator + 1).replace(/\+/g, ' '));
      } catch {
        return oidcError(400, 'invalid_request', 'invalid authorization header value format');
      }
    } else {
      clientId = body.client_id;
      clientSecret = body.client_secret;
    }
    if (typeof clientId !== 'string' || clientId === '') {
      return oidcError(400, 'invalid_request', 'no client authentication mechanism provided');
    }
    if (clientId !== this.clientId || typeof clientSecret !== 'string' || !constantTimeEquals(clientSecret, this.#clientSecret)) {
      return oidcError(401, 'invalid_client', 'client authentication failed');
    }
    return undefined;
  }

  /** Handles one token request; exported for the router and for tests that want no HTTP. */
  handle(request: Request, response: Response): void {
    const body: Record<string, unknown> =
      request.body !== null && typeof request.body === 'object' ? (request.body as Record<string, unknown>) : {};
    const sendError = ({ status, error, description }: OidcError) => {
      response.set('Cache-Control', 'no-store');
      response.status(status).json({ error, error_description: description });
    };

    if (!request.is('application/x-www-form-urlencoded')) {
      sendError(oidcError(400, 'invalid_request', 'only application/x-www-form-urlencoded content-type bodies are supported on POST /token'));
      return;
    }
    const authError = this.#authenticateClient(request, body);
    if (authError) {
      sendError(authError);
      return;
    }
    const grantType = body.grant_type;
    if (typeof grantType !== 'string' || grantType === '') {
      sendError(oidcError(400, 'invalid_request', "missing required parameter 'grant_type'"));
      return;
    }
    if (grantType !== 'client_credentials') {
      sendError(oidcError(400, 'unsupported_grant_type', 'unsupported grant_type requested'));
      return;
    }
    const resource = body.resource;
    if (resource === undefined || resource === '') {
      sendError(oidcError(400, 'invalid_target', 'both `resource` and `organization_id` are not provided'));
      return;
    }
    if (Array.isArray(resource)) {
      sendError(oidcError(400, 'invalid_target', 'only a single resource indicator value is supported'));
      return;
    }
    if (resource !== this.resource) {
      sendError(oidcError(400, 'invalid_target', 'resource indicator is missing, or unknown'));
      return;
    }
    // Logto keeps the requested scopes the app may have on the resource and drops the rest.
    const requested = typeof body.scope === 'string' ? body.scope.split(' ').filter(Boolean) : [];
    const granted = requested.filter((scope) => scope === 'all' && this.grantAllScope);
    const { accessToken } = this.issue(granted);
    response.set('Cache-Control', 'no-store');
    response.set('Pragma', 'no-cache');
    response.json({
      access_token: accessToken,
      expires_in: this.tokenTtlSeconds,
      token_type: 'Bearer',
      scope: granted.join(' '),
    });
  }
}

/** The router mounted at `/oidc`. */
export const createTokenRouter = (issuer: TokenIssuer): Router => {
  const router = express.Router();
  router.post('/token', express.urlencoded({ extended: false, limit: '64kb' }), (request, response) => {
    issuer.handle(request, response);
  });
  return router;
};
