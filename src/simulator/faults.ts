import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { mulberry32, type Random } from './ids.js';

/**
 * Misbehaviour on demand for the Management API and the token endpoint, and a request counter.
 * Faults apply to `/api/*` and `/oidc/*` requests, except those of the simulator's own admin
 * client (`sim.api`), which stands for another actor and must not eat a fault meant for the code
 * under test.
 */

export type FaultStatus = 500 | 502 | 503 | 429;

export interface FailOptions {
  status?: FaultStatus;
  /** Sends `Retry-After: <seconds>` (always sent for 429; default 1). */
  retryAfterSeconds?: number;
  /** Only requests whose path (with `/api` or `/oidc`) matches; others pass and do not use up the fault. */
  paths?: RegExp;
}

export interface OutageOptions {
  /** Answer with this status; default: the connection is dropped without an answer (like a restart). */
  status?: FaultStatus;
  paths?: RegExp;
}

export interface HangOptions {
  paths?: RegExp;
}

export interface RateLimitOptions {
  requests: number;
  perMs: number;
}

export type LatencyOption = number | { minMs: number; maxMs: number };

export interface RouteStats {
  total: number;
  byStatus: Record<string, number>;
}

export interface RequestStats {
  total: number;
  byStatus: Record<string, number>;
  /** Keyed by `METHOD /path/:template`, e.g. `GET /api/organizations/:id/users`. */
  byRoute: Record<string, RouteStats>;
}

/** The header by which the simulator's admin client skips faults and statistics. */
export const bypassHeader = 'x-simulator-admin';

interface FailRule {
  remaining: number;
  status: FaultStatus;
  retryAfterSeconds: number | undefined;
  paths: RegExp | undefined;
}

interface HoldRule {
  remaining: number;
  paths: RegExp | undefined;
  markHeld: () => void;
  gate: Promise<void>;
}

interface HangRule {
  remaining: number;
  paths: RegExp | undefined;
}

/** Collections whose next path segment is an id, and the parameter name Logto's route gives it. */
const parameterAfter: Record<string, string> = {
  users: ':userId',
  organizations: ':id',
  'organization-roles': ':id',
  hooks: ':id',
  roles: ':organizationRoleId',
};

/** `/api/organizations/abc/users/def` → `/api/organizations/:id/users/:userId`. */
export const routeTemplate = (path: string): string => {
  const segments = path.split('/').filter(Boolean);
  const template: string[] = [];
  segments.forEach((segment, index) => {
    const previous = index > 0 ? template[index - 1] : undefined;
    const parameter = previous === undefined ? undefined : parameterAfter[previous];
    // `/organizations/:id/users/roles` is a route of its own, not a user called "roles".
    const isBatchRoles = previous === 'users' && segment === 'roles';
    template.push(parameter !== undefined && !isBatchRoles ? parameter : segment);
  });
  return `/${template.join('/')}`;
};

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const statusBodies: Record<FaultStatus, { json?: unknown; text?: string }> = {
  // What Logto's error handler answers for an unexpected exception.
  500: { json: { message: 'Internal server error.' } },
  // Gateways in front of Logto answer these, not Logto; plain text like most proxies.
  502: { text: 'Bad Gateway' },
  503: { text: 'Service Unavailable' },
  // Logto Cloud's throttling response is not documented (logto-api.md §10); this is our model.
  429: { json: { code: 'too_many_requests', message: 'Too many requests.' } },
};

export class Faults {
  /**
   * `false` models a tenant whose plan lacks Organizations: every organization and
   * organization-role route (and `GET /users/:id/organizations`) answers 403 `auth.forbidden`.
   * Logto Cloud's real answer for plan limits is `subscription.limit_exceeded` on writes; a plan
   * without the feature at all is not documented, so this is a model, not a recording.
   */
  organizationsEnabled: boolean;
  /**
   * `true` shuffles `GET /organizations` on every request, modelling Logto's missing ORDER BY: pages
   * of one crawl may overlap and miss organizations.
   */
  unstableOrganizationOrder: boolean;
  /**
   * Logto Cloud's `usersPerOrganizationLimit`: adding members beyond it answers 403
   * `subscription.limit_exceeded` and changes nothing. `undefined` (self-hosted): no quota.
   */
  usersPerOrganizationLimit: number | undefined;

  #latency: LatencyOption = 0;
  readonly #failRules: FailRule[] = [];
  readonly #hangRules: HangRule[] = [];
  readonly #holdRules: HoldRule[] = [];
  #rateLimit: RateLimitOptions | undefined;
  #outage: { until: number; status: FaultStatus | undefined; paths: RegExp | undefined } | undefined;
  readonly #windowStarts: number[] = [];
  readonly #hung = new Set<Response>();
  readonly #random: Random;
  readonly #now: () => number;
  #stats: RequestStats = { total: 0, byStatus: {}, byRoute: {} };

  constructor(options: {
    latencyMs?: LatencyOption;
    organizationsEnabled?: boolean;
    unstableOrganizationOrder?: boolean;
    seed?: number;
    now?: () => number;
  } = {}) {
    this.#latency = options.latencyMs ?? 0;
    this.organizationsEnabled = options.organizationsEnabled ?? true;
    this.unstableOrganizationOrder = options.unstableOrganizationOrder ?? false;
    this.usersPerOrganizationLimit = undefined;
    this.#random = mulberry32(options.seed ?? 1);
    this.#now = options.now ?? Date.now;
  }

  /** A number in [0, 1) from the faults' seeded generator (used for shuffles and latency jitter). */
  random(): number {
    return this.#random();
  }

  /** Fixed latency (ms) or a uniformly random one in [minMs, maxMs] before each request is handled. */
  setLatency(latency: LatencyOption): void {
    this.#latency = latency;
  }

  /** The next `count` matching requests fail with `status` (default 503). */
  failNext(count: number, options: FailOptions = {}): void {
    this.#failRules.push({
      remaining: count,
      status: options.status ?? 503,
      retryAfterSeconds: options.retryAfterSeconds ?? (options.status === 429 ? 1 : undefined),
      paths: options.paths,
    });
  }

  /**
   * For the next `ms`, every matching request fails: its connection is dropped (Logto down or
   * restarting) or, with `status`, it is answered with that status. Time-based, unlike `failNext`.
   */
  failFor(ms: number, options: OutageOptions = {}): void {
    this.#outage = { until: this.#now() + ms, status: options.status, paths: options.paths };
  }

  /** The next `count` matching requests are never answered (for client timeouts). */
  hangNext(count: number, options: HangOptions = {}): void {
    this.#hangRules.push({ remaining: count, paths: options.paths });
  }

  /**
   * Holds the next matching request until `release()` is called, then lets it through unchanged: a slow
   * Logto under the test's control. `held` resolves once a request is being held.
   */
  holdNext(options: HangOptions = {}): { held: Promise<void>; release(): void } {
    let markHeld: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      markHeld = resolve;
    });
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    this.#holdRules.push({ remaining: 1, paths: options.paths, markHeld, gate });
    return { held, release: () => open() };
  }

  /** Answers 429 with `Retry-After` once more than `requests` arrive within `perMs`; `null` lifts it. */
  rateLimit(limit: RateLimitOptions | null): void {
    this.#rateLimit = limit ?? undefined;
    this.#windowStarts.length = 0;
  }

  /** Clears every pending fault, the latency and the rate limit (not the statistics). */
  reset(): void {
    this.#failRules.length = 0;
    this.#hangRules.length = 0;
    this.#holdRules.length = 0;
    this.#rateLimit = undefined;
    this.#outage = undefined;
    this.#windowStarts.length = 0;
    this.#latency = 0;
    this.organizationsEnabled = true;
    this.unstableOrganizationOrder = false;
    this.usersPerOrganizationLimit = undefined;
  }

  stats(): RequestStats {
    return structuredClone(this.#stats);
  }

  resetStats(): void {
    this.#stats = { total: 0, byStatus: {}, byRoute: {} };
  }

  /** Ends hung requests (on shutdown). */
  releaseHung(): void {
    for (const response of this.#hung) response.destroy();
    this.#hung.clear();
  }

  #record(route: string, status: string): void {
    const stats = this.#stats;
    stats.total += 1;
    stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    const routeStats = (stats.byRoute[route] ??= { total: 0, byStatus: {} });
    routeStats.total += 1;
    routeStats.byStatus[status] = (routeStats.byStatus[status] ?? 0) + 1;
  }

  #takeRule<T extends { remaining: number; paths: RegExp | undefined }>(rules: T[], path: string): T | undefined {
    const index = rules.findIndex((rule) => !rule.paths || rule.paths.test(path));
    if (index === -1) return undefined;
    const rule = rules[index] as T;
    rule.remaining -= 1;
    if (rule.remaining <= 0) rules.splice(index, 1);
    return rule;
  }

  #latencyMs(): number {
    const latency = this.#latency;
    if (typeof latency === 'number') return latency;
    return latency.minMs + this.#random() * (latency.maxMs - latency.minMs);
  }

  /** Seconds until the oldest request leaves the window, or undefined when under the limit. */
  #rateLimited(): number | undefined {
    const limit = this.#rateLimit;
    if (!limit) return undefined;
    const now = this.#now();
    while (this.#windowStarts.length > 0 && (this.#windowStarts[0] as number) <= now - limit.perMs) this.#windowStarts.shift();
    if (this.#windowStarts.length < limit.requests) {
      this.#windowStarts.push(now);
      return undefined;
    }
    const oldest = this.#windowStarts[0] as number;
    return Math.max(1, Math.ceil((oldest + limit.perMs - now) / 1000));
  }

  /** Counts every answered request by route template and status. */
  readonly statsMiddleware: RequestHandler = (request, response, next) => {
    if (request.get(bypassHeader)) {
      next();
      return;
    }
    const route = `${request.method} ${routeTemplate(request.path)}`;
    let recorded = false;
    // Recorded as the response is written, not on 'finish', so a client that has just read its
    // answer always finds it counted.
    const end = response.end.bind(response) as (...args: unknown[]) => Response;
    response.end = ((...args: unknown[]) => {
      if (!recorded) {
        recorded = true;
        this.#record(route, String(response.statusCode));
      }
      return end(...args);
    }) as Response['end'];
    response.on('close', () => {
      if (!recorded) {
        recorded = true;
        this.#record(route, 'aborted');
      }
    });
    next();
  };

  /** Applies latency, hangs, injected failures and the rate limit, in that order. */
  readonly faultMiddleware: RequestHandler = async (request: Request, response: Response, next: NextFunction) => {
    if (request.get(bypassHeader)) {
      next();
      return;
    }
    const latency = this.#latencyMs();
    if (latency > 0) await sleep(latency);
    // Mounted under /api and /oidc, `request.path` lost its prefix; rules match the full path.
    const path = request.originalUrl.split('?')[0] ?? '/';
    if (this.#takeRule(this.#hangRules, path)) {
      this.#hung.add(response);
      response.on('close', () => this.#hung.delete(response));
      return;
    }
    const outage = this.#outage;
    if (outage && this.#now() < outage.until && (!outage.paths || outage.paths.test(path))) {
      if (outage.status === undefined) response.socket?.destroy();
      else this.#sendFailure(response, outage.status, undefined);
      return;
    }
    const hold = this.#takeRule(this.#holdRules, path);
    if (hold) {
      hold.markHeld();
      await hold.gate;
    }
    const failure = this.#takeRule(this.#failRules, path);
    if (failure) {
      this.#sendFailure(response, failure.status, failure.retryAfterSeconds);
      return;
    }
    const retryAfter = this.#rateLimited();
    if (retryAfter !== undefined) {
      this.#sendFailure(response, 429, retryAfter);
      return;
    }
    next();
  };

  #sendFailure(response: Response, status: FaultStatus, retryAfterSeconds: number | undefined): void {
    if (retryAfterSeconds !== undefined) response.set('Retry-After', String(retryAfterSeconds));
    const body = statusBodies[status];
    response.status(status);
    if (body.json !== undefined) response.json(body.json);
    else response.type('text/plain').send(body.text);
  }
}
