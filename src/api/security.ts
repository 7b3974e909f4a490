import { createHash } from 'node:crypto';
import type { Express, Request, RequestHandler, Response } from 'express';
import { ipKeyGenerator, MemoryStore, type Options as RateLimitOptions } from 'express-rate-limit';
import helmet from 'helmet';
import type { Config } from '../config.js';
import { sendProblem } from '../problem.js';
import { docsInlineScript } from './system.js';

/**
 * Everything the API serves is JSON, so outside /docs the policy allows nothing at all: a response
 * that a browser is somehow made to render as a page can run no script, load nothing and be framed by nobody.
 */
const apiHeaders = helmet({
  contentSecurityPolicy: {
    useDefaults: false,
    directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"], baseUri: ["'none'"], formAction: ["'none'"] },
  },
  referrerPolicy: { policy: 'no-referrer' },
});

/**
 * The Swagger UI page loads its bundle, preset and stylesheet from this process, runs one inline
 * script (allowed by its hash, nothing else inline) and fetches /openapi.json. Its React components
 * set inline styles and its stylesheet embeds data: images.
 */
const docsHeaders = helmet({
  contentSecurityPolicy: {
    useDefaults: false,
    directives: {
      defaultSrc: ["'none'"],
      scriptSrc: ["'self'", `'sha256-${createHash('sha256').update(docsInlineScript).digest('base64')}'`],
      styleSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:'],
      fontSrc: ["'self'", 'data:'],
      connectSrc: ["'self'"],
      frameAncestors: ["'none'"],
      baseUri: ["'none'"],
      formAction: ["'none'"],
    },
  },
  referrerPolicy: { policy: 'no-referrer' },
});

type HeaderEdit = [name: string, value: string | null];

/**
 * What a helmet middleware does to a response, recorded once: with the static options above it always
 * sets (or removes) the same headers, and running its dozen middlewares on every request cost about 5 %
 * of a webhook delivery's CPU, several times what setting the headers costs.
 */
const recordHeaders = (middleware: RequestHandler): HeaderEdit[] => {
  const edits: HeaderEdit[] = [];
  const res = {
    setHeader: (name: string, value: unknown) => edits.push([name, String(value)]),
    removeHeader: (name: string) => edits.push([name, null]),
  };
  let finished = false;
  middleware({} as Request, res as unknown as Response, () => (finished = true));
  if (!finished) throw new Error('the security header middleware did not finish synchronously');
  return edits;
};

const applyHeaders = (res: Response, edits: HeaderEdit[]) => {
  for (const [name, value] of edits) {
    if (value === null) res.removeHeader(name);
    else res.setHeader(name, value);
  }
};

const apiHeaderEdits = recordHeaders(apiHeaders);
const docsHeaderEdits = recordHeaders(docsHeaders);

/** Security headers on every response: helmet's defaults, with the policies above. */
export const securityHeaders: RequestHandler = (req, res, next) => {
  const path = req.path;
  applyHeaders(res, path === '/docs' || path.startsWith('/docs/') ? docsHeaderEdits : apiHeaderEdits);
  next();
};

export type KeyFailureLimiter = {
  /** Answers 429 while the caller's address is over its budget of failed key lookups, even for a right key. */
  guard: RequestHandler;
  /** Counts one failed key lookup against the caller's address. */
  recordFailure(req: Request): void;
};

/**
 * Limits how fast one client address can guess API keys. Only failed lookups count, and they are
 * counted after the outcome is known: express-rate-limit's middleware counts every request up front
 * (and takes successful ones back when they finish), so a burst of concurrent good requests from one
 * address would be refused. Its store does the counting here; a successful request costs one map lookup.
 * IPv6 addresses are grouped by /56, so rotating through one's own prefix does not buy more guesses.
 */
export const createKeyFailureLimiter = (limit: Config['http']['apiKeyFailureLimit']): KeyFailureLimiter => {
  const store = new MemoryStore();
  store.init({ windowMs: limit.intervalMs } as RateLimitOptions);
  const keyOf = (req: Request) => ipKeyGenerator(req.ip ?? req.socket.remoteAddress ?? 'unknown');
  return {
    guard: (req, res, next) => {
      store.get(keyOf(req)).then((client) => {
        if (!client || client.totalHits < limit.requests) {
          next();
          return;
        }
        const resetAt = client.resetTime?.getTime() ?? Date.now() + limit.intervalMs;
        const seconds = Math.max(1, Math.ceil((resetAt - Date.now()) / 1000));
        res.setHeader('Retry-After', String(seconds));
        sendProblem(req, 429, 'too_many_failed_keys', `Too many requests with an unknown API key from this address; retry in ${seconds} s`);
      }, next);
    },
    recordFailure: (req) => {
      void store.increment(keyOf(req));
    },
  };
};

/**
 * Applies the HTTP hardening to an app: security headers on every response (mounted first), the
 * proxy trust that decides the client address, and a limiter of failed key lookups for the keyed routes.
 */
export const applySecurity = (app: Express, http: Pick<Config['http'], 'apiKeyFailureLimit' | 'trustProxy'>): KeyFailureLimiter => {
  app.disable('x-powered-by');
  app.set('trust proxy', http.trustProxy);
  app.use(securityHeaders);
  return createKeyFailureLimiter(http.apiKeyFailureLimit);
};
