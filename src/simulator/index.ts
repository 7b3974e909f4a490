/** The simulated Logto tenant: a Management API, a token endpoint and signed webhooks over real HTTP. */
export { startSimulatedTenant } from './server.js';
export type {
  InteractionOptions,
  SimulatedTenant,
  SimulatedTenantOptions,
  SimulatedWebhookEndpoint,
} from './server.js';
export { TenantState } from './state.js';
export type {
  CreateOrganizationInput,
  CreateOrganizationRoleInput,
  CreateUserInput,
  RecordMeta,
  TenantCounts,
  TenantSnapshot,
  TenantStateOptions,
  UpdateOrganizationInput,
  UpdateOrganizationRoleInput,
  UpdateUserInput,
} from './state.js';
export type {
  JsonObject,
  OrganizationMemberResponse,
  OrganizationRecord,
  OrganizationResponse,
  OrganizationRoleRecord,
  OrganizationRoleResponse,
  OrganizationRoleType,
  OrganizationRoleWithScopesResponse,
  RoleReference,
  UserInfo,
  UserOrganizationResponse,
  UserRecord,
  UserResponse,
} from './entities.js';
export { generateTenant } from './generate.js';
export type { GeneratedTenantSummary, GenerateTenantOptions } from './generate.js';
export { WebhookSender, signWebhook, signatureHeader, webhookUserAgent } from './webhooks.js';
export type { SentWebhook, WebhookEndpoint, WebhookSenderOptions } from './webhooks.js';
export type { DataHookEvent, HookEvent, HookPayload, InteractionHookEvent, SimulatedApplication } from './payloads.js';
export { membershipDeltaCap } from './payloads.js';
export { Faults, routeTemplate } from './faults.js';
export type { FailOptions, FaultStatus, HangOptions, LatencyOption, RateLimitOptions, RequestStats, RouteStats } from './faults.js';
export { TokenIssuer } from './token.js';
export type { IssuedToken, TokenIssuerOptions } from './token.js';
export { HookLogStore, toJsonbOrder } from './hook-logs.js';
export type { HookLogPayload, HookLogQuery, HookLogRow } from './hook-logs.js';
export { adminUserAgent } from './client.js';
export type { SimulatedApiClient, SimulatedApiRequestOptions, SimulatedApiResponse } from './client.js';
export { LogtoApiError } from './errors.js';
export type { LogtoErrorBody, LogtoErrorCode } from './errors.js';
export { mulberry32 } from './ids.js';
