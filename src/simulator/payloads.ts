import type { UserInfo } from './entities.js';

/**
 * Webhook payloads shaped as Logto builds them (`libraries/hook/index.ts` `buildWebhooks`,
 * `context-manager.ts`). JSON key order follows object insertion order, so each builder inserts
 * keys in the order seen in the recorded deliveries (`test/fixtures/logto/deliveries/*.json`). `hookId` is appended per
 * hook when the payload is sent; `createdAt` is filled in at dispatch, like Logto's.
 */

export type DataHookEvent =
  | 'User.Created'
  | 'User.Deleted'
  | 'User.Data.Updated'
  | 'User.SuspensionStatus.Updated'
  | 'Organization.Created'
  | 'Organization.Deleted'
  | 'Organization.Data.Updated'
  | 'Organization.Membership.Updated'
  | 'OrganizationRole.Created'
  | 'OrganizationRole.Deleted'
  | 'OrganizationRole.Data.Updated';

export type InteractionHookEvent = 'PostRegister' | 'PostSignIn' | 'PostResetPassword';

export type HookEvent = DataHookEvent | InteractionHookEvent;

/** A payload before it is sent: `createdAt` is a placeholder until dispatch and there is no `hookId` yet. */
export type HookPayload = { event: HookEvent; createdAt: string } & Record<string, unknown>;

/** What Logto records about a Management API call (`buildManagementApiContext` plus the caller). */
export interface ManagementApiContext {
  userAgent: string | undefined;
  ip: string;
  /** Without the `/api` prefix. */
  path: string;
  method: string;
  status: number;
  params: Record<string, string>;
  matchedRoute: string;
}

/** Logto's `MEMBERSHIP_DELTA_CAP`: longer delta lists are silently truncated. */
export const membershipDeltaCap = 5000;

const pending = '';

/**
 * A data event caused by a Management API call. `data` normally follows the route context; the
 * manually emitted `User.Deleted` puts it before (`{event, createdAt, userAgent, ip, data, path, …}`).
 */
export const managementApiPayload = (
  event: DataHookEvent,
  context: ManagementApiContext,
  options: { data?: unknown; dataFirst?: boolean; extra?: Record<string, unknown> } = {},
): HookPayload => {
  const payload: HookPayload = { event, createdAt: pending };
  if (context.userAgent !== undefined) payload.userAgent = context.userAgent;
  payload.ip = context.ip;
  if (options.dataFirst && options.data !== undefined) payload.data = options.data;
  payload.path = context.path;
  payload.method = context.method;
  payload.status = context.status;
  payload.params = { ...context.params };
  payload.matchedRoute = context.matchedRoute;
  if (!options.dataFirst && options.data !== undefined) payload.data = options.data;
  Object.assign(payload, options.extra);
  return payload;
};

/** `{organizationId, addedUserIds?, removedUserIds?}`: empty lists omitted, long lists capped. */
export const membershipDelta = (
  organizationId: string,
  delta: { addedUserIds?: readonly string[]; removedUserIds?: readonly string[] },
): Record<string, unknown> => {
  const fields: Record<string, unknown> = { organizationId };
  if (delta.addedUserIds && delta.addedUserIds.length > 0) {
    fields.addedUserIds = delta.addedUserIds.slice(0, membershipDeltaCap);
  }
  if (delta.removedUserIds && delta.removedUserIds.length > 0) {
    fields.removedUserIds = delta.removedUserIds.slice(0, membershipDeltaCap);
  }
  return fields;
};

export interface SimulatedApplication {
  id: string;
  type: string;
  name: string;
  description: string | null;
}

/** The end user's side of a sign-in or registration (Experience API). */
export interface InteractionContext {
  sessionId: string;
  userAgent: string | undefined;
  ip: string;
  application: SimulatedApplication;
}

/**
 * A data event from a sign-in/registration flow: no path, method, status or params, but the
 * interaction metadata (`koa-experience-interaction-hooks.ts`).
 */
export const experiencePayload = (
  event: DataHookEvent,
  interactionEvent: 'Register' | 'SignIn' | 'ForgotPassword',
  context: InteractionContext,
  fields: Record<string, unknown>,
): HookPayload => {
  const payload: HookPayload = { event, createdAt: pending, interactionEvent };
  if (context.userAgent !== undefined) payload.userAgent = context.userAgent;
  payload.applicationId = context.application.id;
  payload.sessionId = context.sessionId;
  payload.ip = context.ip;
  payload.application = { ...context.application };
  Object.assign(payload, fields);
  return payload;
};

const interactionEvents: Record<InteractionHookEvent, 'Register' | 'SignIn' | 'ForgotPassword'> = {
  PostRegister: 'Register',
  PostSignIn: 'SignIn',
  PostResetPassword: 'ForgotPassword',
};

/** `PostRegister`, `PostSignIn`, `PostResetPassword` (`triggerInteractionHooks`). */
export const interactionPayload = (
  event: InteractionHookEvent,
  context: InteractionContext,
  user: UserInfo,
): HookPayload => {
  const payload: HookPayload = {
    event,
    interactionEvent: interactionEvents[event],
    createdAt: pending,
    sessionId: context.sessionId,
  };
  if (context.userAgent !== undefined) payload.userAgent = context.userAgent;
  payload.userId = user.id;
  payload.userIp = context.ip;
  payload.user = user;
  payload.application = { ...context.application };
  return payload;
};
