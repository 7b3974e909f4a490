import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Logger } from 'pino';
import { createSimulatedApiClient, type SimulatedApiClient } from './client.js';
import { toUserInfo, toUserResponse, type UserResponse } from './entities.js';
import { Faults, type LatencyOption, type RequestStats } from './faults.js';
import { generateTenant, type GeneratedTenantSummary, type GenerateTenantOptions } from './generate.js';
import { HookLogStore } from './hook-logs.js';
import { generateId, generateRequestId, generateSecret, standardIdLength } from './ids.js';
import { createManagementApi } from './management-api.js';
import {
  experiencePayload,
  type HookPayload,
  type InteractionContext,
  type InteractionHookEvent,
  interactionPayload,
  membershipDelta,
  type SimulatedApplication,
} from './payloads.js';
import { type CreateUserInput, TenantState } from './state.js';
import { createTokenRouter, TokenIssuer } from './token.js';
import { type WebhookEndpoint, WebhookSender } from './webhooks.js';

export interface SimulatedWebhookEndpoint {
  url: string;
  /** Default: the tenant's `signingKey`. */
  signingKey?: string;
  /** Default: the tenant's `hookId`. */
  hookId?: string;
  events?: WebhookEndpoint['events'];
  headers?: Record<string, string>;
  enabled?: boolean;
}

export interface SimulatedTenantOptions {
  /** Default 0: a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 'default', as on self-hosted Logto. */
  tenantId?: string;
  /** Default 'sim-m2m-app'. */
  clientId?: string;
  /** Default 'sim-secret'. */
  clientSecret?: string;
  /**
   * The Management API resource indicator. Default `https://<tenantId>.logto.app/api` (so
   * `https://default.logto.app/api`); `'self'` means `<baseUrl>/api`.
   */
  resource?: string;
  /** Default 3600. */
  tokenTtlSeconds?: number;
  /** Whether the M2M app holds the `all` scope. Default true. */
  grantAllScope?: boolean;
  /** Default true. See `Faults.organizationsEnabled`. */
  organizationsEnabled?: boolean;
  /** Default false. See `Faults.unstableOrganizationOrder`. */
  unstableOrganizationOrder?: boolean;
  /** The hooks to deliver to. More can be set later with `webhooks.setEndpoints`. */
  webhookEndpoints?: SimulatedWebhookEndpoint[];
  /** Signing key of the hook. Default: a random 32-character secret. */
  signingKey?: string;
  /** Default: a random 21-character id. */
  hookId?: string;
  /** Logto's is 10 000. */
  webhookTimeoutMs?: number;
  /** Seeds the generator and the faults' randomness. Default 1. */
  seed?: number;
  /** Fill the tenant with generated data. */
  generate?: Omit<GenerateTenantOptions, 'seed'>;
  /** Latency before each API/token request. Default 0. */
  latencyMs?: LatencyOption;
  logger?: Logger;
}

/** The end user's side of an interaction event (defaults: a browser and a SPA). */
export interface InteractionOptions {
  userAgent?: string;
  ip?: string;
  sessionId?: string;
  application?: Partial<SimulatedApplication>;
}

export interface SimulatedTenant {
  /** `http://127.0.0.1:<port>`: the Logto endpoint. */
  baseUrl: string;
  tokenUrl: string;
  resource: string;
  clientId: string;
  clientSecret: string;
  tenantId: string;
  hookId: string;
  signingKey: string;
  state: TenantState;
  webhooks: WebhookSender;
  faults: Faults;
  tokens: TokenIssuer;
  logs: HookLogStore;
  /** An authenticated admin caller: its writes send webhooks exactly like a real admin call. */
  api: SimulatedApiClient;
  /** What `generate` produced, if anything. */
  generated: GeneratedTenantSummary | undefined;
  /** Requests by route and status, excluding the admin caller's. */
  stats(): RequestStats;
  expireAllTokens(): void;
  /** Points the hook at these endpoints (signing key and hook id default to the tenant's). */
  setWebhookEndpoints(endpoints: SimulatedWebhookEndpoint[]): void;
  /**
   * Registration with just-in-time provisioning, as the Experience API does it: creates the user,
   * makes it a member of each organization with `roleIds`, then sends one
   * `Organization.Membership.Updated` per organization BEFORE `User.Created`, then `PostRegister`.
   */
  registerWithJit(
    user: CreateUserInput,
    organizationIds: readonly string[],
    roleIds?: readonly string[],
    options?: InteractionOptions,
  ): UserResponse;
  /** Sends `PostSignIn` (updating `lastSignInAt` silently, as a sign-in does), `PostRegister` or `PostResetPassword`. */
  emitInteractionEvent(event: InteractionHookEvent, userId: string, options?: InteractionOptions): void;
  close(): Promise<void>;
}

const defaultApplication: SimulatedApplication = {
  id: 'simspaapplication0001',
  type: 'SPA',
  name: 'Simulated SPA',
  description: null,
};

export async function startSimulatedTenant(options: SimulatedTenantOptions = {}): Promise<SimulatedTenant> {
  const tenantId = options.tenantId ?? 'default';
  const clientId = options.clientId ?? 'sim-m2m-app';
  const clientSecret = options.clientSecret ?? 'sim-secret';
  const hookId = options.hookId ?? generateId(standardIdLength);
  const signingKey = options.signingKey ?? generateSecret(24);
  const seed = options.seed ?? 1;

  const state = new TenantState({ tenantId });
  const logs = new HookLogStore();
  const faults = new Faults({
    seed,
    ...(options.latencyMs === undefined ? {} : { latencyMs: options.latencyMs }),
    organizationsEnabled: options.organizationsEnabled ?? true,
    unstableOrganizationOrder: options.unstableOrganizationOrder ?? false,
  });
  const toEndpoint = (endpoint: SimulatedWebhookEndpoint): WebhookEndpoint => ({
    ...endpoint,
    signingKey: endpoint.signingKey ?? signingKey,
    hookId: endpoint.hookId ?? hookId,
  });
  const webhooks = new WebhookSender({
    hookId,
    logs,
    endpoints: (options.webhookEndpoints ?? []).map(toEndpoint),
    ...(options.webhookTimeoutMs === undefined ? {} : { timeoutMs: options.webhookTimeoutMs }),
  });
  const tokens = new TokenIssuer({
    clientId,
    clientSecret,
    resource: options.resource ?? `https://${tenantId}.logto.app/api`,
    ...(options.tokenTtlSeconds === undefined ? {} : { tokenTtlSeconds: options.tokenTtlSeconds }),
    ...(options.grantAllScope === undefined ? {} : { grantAllScope: options.grantAllScope }),
  });
  const generated = options.generate ? generateTenant(state, { ...options.generate, seed }) : undefined;

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_request, response, next) => {
    response.set('Logto-Core-Request-Id', generateRequestId());
    next();
  });
  app.use(faults.statsMiddleware);
  app.use(['/api', '/oidc'], faults.faultMiddleware);
  app.use('/oidc', createTokenRouter(tokens));
  app.use(
    '/api',
    createManagementApi({ state, webhooks, faults, logs, tokens, ...(options.logger ? { logger: options.logger } : {}) }),
  );
  app.use((_request, response) => {
    response.sendStatus(404);
  });

  const server: Server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const baseUrl = `http://${host}:${address.port}`;
  if (options.resource === 'self') tokens.resource = `${baseUrl}/api`;

  const interactionContext = (interaction: InteractionOptions = {}): InteractionContext => ({
    sessionId: interaction.sessionId ?? generateId(standardIdLength),
    userAgent: interaction.userAgent ?? 'Mozilla/5.0 (X11; Linux x86_64) SimulatedBrowser/1.0',
    ip: interaction.ip ?? '203.0.113.7',
    application: { ...defaultApplication, ...interaction.application },
  });

  const api = createSimulatedApiClient(() => baseUrl, tokens);
  let closed = false;

  return {
    baseUrl,
    tokenUrl: `${baseUrl}/oidc/token`,
    get resource() {
      return tokens.resource;
    },
    clientId,
    clientSecret,
    tenantId,
    hookId,
    signingKey,
    state,
    webhooks,
    faults,
    tokens,
    logs,
    api,
    generated,
    stats: () => faults.stats(),
    expireAllTokens: () => tokens.expireAllTokens(),
    setWebhookEndpoints: (endpoints) => webhooks.setEndpoints(endpoints.map(toEndpoint)),
    registerWithJit(user, organizationIds, roleIds = [], interaction) {
      const context = interactionContext(interaction);
      const created = state.createUser({ ...user, lastSignInAt: user.lastSignInAt ?? Date.now() });
      const payloads: HookPayload[] = [];
      for (const organizationId of organizationIds) {
        const added = state.addMembers(organizationId, [created.id]);
        if (roleIds.length > 0) state.addMemberRoles(organizationId, created.id, roleIds);
        if (added.length > 0) {
          payloads.push(
            experiencePayload('Organization.Membership.Updated', 'Register', context, membershipDelta(organizationId, { addedUserIds: added })),
          );
        }
      }
      const info = toUserInfo(created);
      payloads.push(experiencePayload('User.Created', 'Register', context, { data: info }));
      payloads.push(interactionPayload('PostRegister', context, info));
      webhooks.send(payloads);
      return toUserResponse(created);
    },
    emitInteractionEvent(event, userId, interaction) {
      const user = event === 'PostSignIn' ? state.updateUser(userId, { lastSignInAt: Date.now() }) : state.requireUser(userId);
      webhooks.send([interactionPayload(event, interactionContext(interaction), toUserInfo(user))]);
    },
    async close() {
      if (closed) return;
      closed = true;
      webhooks.close();
      faults.releaseHung();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
