import cron from 'node-cron';
import { z } from 'zod';

/** Parses `"200/10s"` (count per duration; units ms, s, m) into a rate budget. */
export const parseRateLimit = (value: string): { requests: number; intervalMs: number } | null => {
  const match = /^\s*(\d+)\s*\/\s*(\d+)?\s*(ms|s|m)\s*$/.exec(value);
  if (!match) return null;
  const requests = Number(match[1]);
  const amount = match[2] === undefined ? 1 : Number(match[2]);
  const unit = match[3] === 'ms' ? 1 : match[3] === 's' ? 1000 : 60_000;
  if (requests < 1 || amount < 1) return null;
  return { requests, intervalMs: amount * unit };
};

/** `"2m"`, `"90s"`, `"500ms"`, `"1h"` → milliseconds, or null. */
const parseDuration = (value: string): number | null => {
  const match = /^(\d+)\s*(ms|s|m|h)$/.exec(value.trim());
  if (!match) return null;
  return Number(match[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
};

const url = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });
const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);
const optionalText = z
  .string()
  .trim()
  .transform((value) => (value === '' ? undefined : value))
  .optional();

/** `"10m"`, `"30s"`, `"1h"`, `"500ms"` → milliseconds. */
const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((value, context) => {
      const match = /^(\d+)\s*(ms|s|m|h)$/.exec(value.trim());
      if (!match || Number(match[1]) === 0) {
        context.addIssue({ code: 'custom', message: 'must look like 10m, 30s or 1h' });
        return z.NEVER;
      }
      const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
      return Number(match[1]) * unit;
    });

const environmentSchema = z.object({
  LOGTO_BASE_URL: url.transform((value) => value.replace(/\/+$/, '')),
  LOGTO_TOKEN_URL: url.optional(),
  LOGTO_MANAGEMENT_API_RESOURCE: url.optional(),
  LOGTO_CLIENT_ID: z.string({ error: 'is required' }).trim().min(1, 'is required'),
  LOGTO_CLIENT_SECRET: z.string({ error: 'is required' }).min(1, 'is required'),
  LOGTO_RATE_LIMIT: z
    .string()
    .default('200/10s')
    .transform((value, context) => {
      const parsed = parseRateLimit(value);
      if (!parsed) {
        context.addIssue({ code: 'custom', message: 'must look like 200/10s' });
        return z.NEVER;
      }
      return parsed;
    }),
  LOGTO_CONCURRENCY: positiveInt(8),
  LOGTO_TIMEOUT_MS: positiveInt(15_000),
  LOGTO_MAX_RETRIES: z.coerce.number().int().min(0).max(1000).default(100),
  LOGTO_RETRY_WINDOW: z
    .string()
    .default('2m')
    .transform((value, context) => {
      const ms = parseDuration(value);
      if (ms === null) {
        context.addIssue({ code: 'custom', message: 'must look like 2m, 90s or 500ms' });
        return z.NEVER;
      }
      return ms;
    }),
  LOGTO_HOOK_ID: optionalText,
  LOGTO_WEBHOOK_SIGNING_KEYS: z
    .string()
    .default('')
    .transform((value) => value.split(',').map((key) => key.trim()).filter(Boolean)),
  SVIX_WEBHOOK_SECRET: optionalText,
  DATABASE_URL: optionalText.pipe(
    z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  ),
  DATA_DIR: z.string().default('./data'),
  // Below Logto's 10 s delivery timeout: Logto then records the 503 (which it may retry), not a timeout.
  DATABASE_QUERY_TIMEOUT_MS: positiveInt(5_000),
  PORT: z.coerce.number().int().min(0).max(65_535).default(3000),
  HOST: z.string().default('0.0.0.0'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  API_KEYS: z
    .string()
    .default('')
    .transform((value, context) =>
      value
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean)
        .map((entry, index) => {
          const [name, scope, ...rest] = entry.split(':');
          const secret = rest.join(':');
          if (!name || (scope !== 'read' && scope !== 'write') || secret.length < 16) {
            context.addIssue({
              code: 'custom',
              message: `entry ${index + 1} must be name:read|write:secret with a secret of 16+ characters`,
            });
            return { name: '', scope: 'read' as const, secret: '' };
          }
          return { name, scope: scope as 'read' | 'write', secret };
        }),
    ),
  RECONCILE_CRON: z
    .string()
    .default('0 3 * * *')
    .refine((value) => cron.validate(value), 'must be a cron expression such as "0 3 * * *"'),
  RECONCILE_TZ: z
    .string()
    .default('UTC')
    .refine((value) => {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: value });
        return true;
      } catch {
        return false;
      }
    }, 'must be an IANA time zone such as UTC or Europe/Berlin'),
  ROLE_SWEEP_INTERVAL: duration('10m'),
  MISSED_DELIVERIES_INTERVAL: duration('5m'),
  SERVE_BEFORE_FIRST_SYNC: z
    .enum(['true', 'false', '1', '0'], { error: 'must be true or false' })
    .default('false')
    .transform((value) => value === 'true' || value === '1'),
  WEBHOOK_MAX_ATTEMPTS: positiveInt(8),
  WEBHOOK_LEASE_MS: positiveInt(60_000),
  API_KEY_FAILURE_LIMIT: z
    .string()
    .default('20/1m')
    .transform((value, context) => {
      const parsed = parseRateLimit(value);
      if (!parsed) {
        context.addIssue({ code: 'custom', message: 'must look like 20/1m (failed key lookups per client address per window)' });
        return z.NEVER;
      }
      return parsed;
    }),
  TRUST_PROXY: z
    .string()
    .trim()
    .default('')
    .transform((value): boolean | number | string => {
      if (value === '' || value === 'false') return false;
      if (value === 'true') return true;
      return /^\d+$/.test(value) ? Number(value) : value;
    }),
  SHUTDOWN_TIMEOUT_MS: positiveInt(10_000),
  EVENT_SUBSCRIPTIONS_ALLOW_PRIVATE_URLS: z
    .enum(['true', 'false'], { error: 'must be true or false' })
    .default('false')
    .transform((value) => value === 'true'),
  EVENT_SENDER_CONCURRENCY: positiveInt(256),
});

export type Config = {
  logto: {
    baseUrl: string;
    tokenUrl: string;
    resource: string;
    clientId: string;
    clientSecret: string;
    rateLimit: { requests: number; intervalMs: number };
    concurrency: number;
    timeoutMs: number;
    maxRetries: number;
    /** How long a request keeps being retried (network errors, 5xx, 429); unset: 2 minutes. */
    retryWindowMs?: number;
    hookId: string | undefined;
  };
  webhooks: {
    signingKeys: string[];
    svixSecret: string | undefined;
    maxAttempts: number;
    /** How long a claimed delivery stays claimed without a renewal: after a crash, the wait before another worker takes it. */
    leaseMs: number;
  };
  database: {
    url: string | undefined;
    dataDir: string;
    /** How long a query waits for PostgreSQL's answer before it fails as the database being unreachable. */
    queryTimeoutMs?: number;
  };
  http: {
    port: number;
    host: string;
    apiKeys: { name: string; scope: 'read' | 'write'; secret: string }[];
    /** Answer reads before the first full sync succeeded (partial answers) instead of 503 not_synced. */
    serveBeforeFirstSync: boolean;
    /** Failed API key lookups allowed per client address per window before it gets 429. */
    apiKeyFailureLimit: { requests: number; intervalMs: number };
    /** Express `trust proxy`: which proxies' X-Forwarded-For names the client address (false: none). */
    trustProxy: boolean | number | string;
  };
  jobs: { reconcileCron: string; reconcileTimezone: string; roleSweepIntervalMs: number; missedDeliveriesIntervalMs: number };
  logLevel: z.infer<typeof environmentSchema>['LOG_LEVEL'];
  shutdownTimeoutMs: number;
  events: { allowPrivateUrls: boolean; senderConcurrency: number };
};

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads the whole configuration once. Every problem is collected so an operator fixes them in one go;
 * messages name the setting but never echo its value, because some of them are secrets.
 */
export const loadConfig = (environment: NodeJS.ProcessEnv = process.env): Config => {
  const parsed = environmentSchema.safeParse(environment);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? 'configuration');
      const missing = issue.code === 'invalid_type' && environment[key] === undefined;
      return `${key} ${missing ? 'is required' : issue.message}`;
    });
    throw new ConfigError([...new Set(problems)]);
  }
  const env = parsed.data;
  return {
    logto: {
      baseUrl: env.LOGTO_BASE_URL,
      tokenUrl: env.LOGTO_TOKEN_URL ?? `${env.LOGTO_BASE_URL}/oidc/token`,
      resource: env.LOGTO_MANAGEMENT_API_RESOURCE ?? `${env.LOGTO_BASE_URL}/api`,
      clientId: env.LOGTO_CLIENT_ID,
      clientSecret: env.LOGTO_CLIENT_SECRET,
      rateLimit: env.LOGTO_RATE_LIMIT,
      concurrency: env.LOGTO_CONCURRENCY,
      timeoutMs: env.LOGTO_TIMEOUT_MS,
      maxRetries: env.LOGTO_MAX_RETRIES,
      retryWindowMs: env.LOGTO_RETRY_WINDOW,
      hookId: env.LOGTO_HOOK_ID,
    },
    webhooks: {
      signingKeys: env.LOGTO_WEBHOOK_SIGNING_KEYS,
      svixSecret: env.SVIX_WEBHOOK_SECRET,
      maxAttempts: env.WEBHOOK_MAX_ATTEMPTS,
      leaseMs: env.WEBHOOK_LEASE_MS,
    },
    database: { url: env.DATABASE_URL, dataDir: env.DATA_DIR, queryTimeoutMs: env.DATABASE_QUERY_TIMEOUT_MS },
    http: {
      port: env.PORT,
      host: env.HOST,
      apiKeys: env.API_KEYS,
      serveBeforeFirstSync: env.SERVE_BEFORE_FIRST_SYNC,
      apiKeyFailureLimit: env.API_KEY_FAILURE_LIMIT,
      trustProxy: env.TRUST_PROXY,
    },
    jobs: {
      reconcileCron: env.RECONCILE_CRON,
      reconcileTimezone: env.RECONCILE_TZ,
      roleSweepIntervalMs: env.ROLE_SWEEP_INTERVAL,
      missedDeliveriesIntervalMs: env.MISSED_DELIVERIES_INTERVAL,
    },
    logLevel: env.LOG_LEVEL,
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
    events: {
      allowPrivateUrls: env.EVENT_SUBSCRIPTIONS_ALLOW_PRIVATE_URLS,
      senderConcurrency: env.EVENT_SENDER_CONCURRENCY,
    },
  };
};

/** The database settings alone, for commands that never talk to Logto (migrate, keys). */
export const loadDatabaseConfig = (environment: NodeJS.ProcessEnv = process.env): Config['database'] => {
  const parsed = environmentSchema.pick({ DATABASE_URL: true, DATA_DIR: true, DATABASE_QUERY_TIMEOUT_MS: true }).safeParse(environment);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => `${String(issue.path[0])} ${issue.message}`));
  }
  return { url: parsed.data.DATABASE_URL, dataDir: parsed.data.DATA_DIR, queryTimeoutMs: parsed.data.DATABASE_QUERY_TIMEOUT_MS };
};
