import type { Config } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import { createLogtoClient, type LogtoClient } from '../../src/logto/index.js';
import { startSimulatedTenant, type SimulatedTenant, type SimulatedTenantOptions } from '../../src/simulator/index.js';
import type { SyncDeps } from '../../src/sync/context.js';
import type { DatabaseHandle } from '../../src/db/client.js';

/** The Logto settings an admin would enter, pointing at a simulated tenant. */
export const logtoConfigFor = (sim: SimulatedTenant, overrides: Partial<Config['logto']> = {}): Config['logto'] => ({
  baseUrl: sim.baseUrl,
  tokenUrl: sim.tokenUrl,
  resource: sim.resource,
  clientId: sim.clientId,
  clientSecret: sim.clientSecret,
  rateLimit: { requests: 10_000, intervalMs: 1000 },
  concurrency: 8,
  timeoutMs: 2000,
  maxRetries: 6,
  hookId: sim.hookId,
  ...overrides,
});

/** A Logto client with fast retries, so fault tests stay quick. */
export const clientFor = (sim: SimulatedTenant, overrides: Partial<Config['logto']> = {}): LogtoClient =>
  createLogtoClient(logtoConfigFor(sim, overrides), { backoff: { baseMs: 5, capMs: 50 } });

export const syncDepsFor = (database: DatabaseHandle, logto: LogtoClient): SyncDeps => ({
  database,
  logto,
  logger: silentLogger,
});

export const startTenant = (options: SimulatedTenantOptions = {}) => startSimulatedTenant({ resource: 'self', ...options });

/** The settings an admin would put in the environment, pointing the service at a simulated tenant. */
export const tenantEnvironment = (sim: SimulatedTenant): Record<string, string> => ({
  LOGTO_BASE_URL: sim.baseUrl,
  LOGTO_MANAGEMENT_API_RESOURCE: sim.resource,
  LOGTO_CLIENT_ID: sim.clientId,
  LOGTO_CLIENT_SECRET: sim.clientSecret,
  LOGTO_WEBHOOK_SIGNING_KEYS: sim.signingKey,
});
