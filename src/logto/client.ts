import { z } from 'zod';
import type { Config } from '../config.js';
import { silentLogger, type Logger } from '../logger.js';
import { defaultBackoff, type BackoffOptions } from './backoff.js';
import { isLogtoError, isNotMember } from './errors.js';
import { apiPath, apiRequest, type ApiRequest, type HttpContext } from './http.js';
import { maxPageSize, paginate, validateItem, type AheadOptions } from './paginate.js';
import { isParsedMember, isParsedUser } from './parse-user.js';
import { RateBudget } from './rate-budget.js';
import { TokenProvider } from './token.js';
import { createTransport } from './transport.js';
import {
  hookLogSchema,
  logtoOrganizationMemberSchema,
  logtoOrganizationRoleSchema,
  logtoOrganizationSchema,
  logtoUserOrganizationSchema,
  logtoUserSchema,
  type HookLog,
  type LogtoClientStats,
  type LogtoOrganization,
  type LogtoOrganizationMember,
  type LogtoOrganizationRole,
  type LogtoOrganizationRoleRef,
  type LogtoUser,
  type LogtoUserOrganization,
  type Page,
} from './types.js';

/** Sent on every request, so the webhook echoes of our own writes can be told apart (`userAgent` in the payload). */
export const defaultUserAgent = 'logto-access-sync/0.1 (+provisioning)';

export type CreateUserInput = {
  username?: string;
  primaryEmail?: string;
  primaryPhone?: string;
  name?: string;
  password?: string;
  customData?: Record<string, unknown>;
  profile?: Record<string, unknown>;
};

export type HookLogQuery = {
  /** Unix ms; sent as `start_time` and also applied here, for Logto versions that ignore it. */
  startTime?: number;
  /** Unix ms; sent as `end_time` and also applied here. */
  endTime?: number;
  /** Only failed deliveries. Logto has no such filter: it is applied here, so `total` counts every log row. */
  result?: 'Error';
};

export type OrganizationsProbe = { available: true } | { available: false; reason: string };

/** An organization as `GET /organizations?showFeatured=true` lists it: with its member count. */
export type LogtoOrganizationWithMemberCount = { organization: LogtoOrganization; usersCount: number | null };

export interface LogtoClient {
  listUsers(options?: AheadOptions): AsyncIterable<Page<LogtoUser>>;
  listOrganizations(options?: AheadOptions): AsyncIterable<Page<LogtoOrganization>>;
  /** The organizations with their member counts (`showFeatured=true`), so member crawls know their page counts. */
  listOrganizationsWithMemberCounts(options?: AheadOptions): AsyncIterable<Page<LogtoOrganizationWithMemberCount>>;
  listOrganizationRoles(options?: AheadOptions): AsyncIterable<Page<LogtoOrganizationRole>>;
  listOrganizationMembers(organizationId: string, options?: AheadOptions): AsyncIterable<Page<LogtoOrganizationMember>>;
  /** null when the user does not exist (404). */
  getUser(id: string): Promise<LogtoUser | null>;
  /** Batched `GET /users?search.id=…&mode.id=exact`, ≤100 ids per call, calls in parallel through the budget. Missing ids are simply absent. */
  findUsersByIds(ids: string[]): Promise<LogtoUser[]>;
  getOrganization(id: string): Promise<LogtoOrganization | null>;
  getOrganizationRole(id: string): Promise<LogtoOrganizationRole | null>;
  /** Every organization of the user with the user's roles in each; null when the user does not exist. */
  getUserOrganizations(userId: string): Promise<LogtoUserOrganization[] | null>;
  listHookLogs(hookId: string, options: HookLogQuery): AsyncIterable<Page<HookLog>>;
  /** `GET /organization-roles?page=1&page_size=1`: 403/404 → unavailable, with status and code as the reason; other errors throw. */
  probeOrganizations(): Promise<OrganizationsProbe>;

  createUser(input: CreateUserInput): Promise<LogtoUser>;
  setUserSuspended(userId: string, isSuspended: boolean): Promise<LogtoUser>;
  addOrganizationMembers(organizationId: string, userIds: string[]): Promise<void>;
  removeOrganizationMember(organizationId: string, userId: string): Promise<void>;
  assignOrganizationMemberRoles(organizationId: string, userId: string, organizationRoleIds: string[]): Promise<void>;
  removeOrganizationMemberRole(organizationId: string, userId: string, organizationRoleId: string): Promise<void>;
  getOrganizationMemberRoles(organizationId: string, userId: string): Promise<LogtoOrganizationRoleRef[]>;
  /** The member's roles, or null when the user is not a member (422 `organization.require_membership`, also for unknown ids). */
  findOrganizationMemberRoles(organizationId: string, userId: string): Promise<LogtoOrganizationRoleRef[] | null>;
  /** `PUT …/users/:userId/roles`: the member holds exactly these roles afterwards. */
  replaceOrganizationMemberRoles(organizationId: string, userId: string, organizationRoleIds: string[]): Promise<void>;
  /** `POST /organizations/:id/users/roles`: every listed member gets every listed role (held roles are kept). */
  assignOrganizationRolesToMembers(organizationId: string, userIds: string[], organizationRoleIds: string[]): Promise<void>;
  stats(): LogtoClientStats;
}

export type LogtoClientOptions = {
  logger?: Logger;
  userAgent?: string;
  /** Retry timing; the defaults (250 ms base, 10 s cap, Retry-After up to 120 s) suit production. */
  backoff?: Partial<BackoffOptions>;
};

/** Largest number of ids per `search.id` batch (one page of `page_size=100`). */
export const findUsersBatchSize = maxPageSize;

/**
 * The one client through which every call to Logto goes. One instance means one token cache and one
 * request budget: share it between every caller in the process.
 */
export const createLogtoClient = (config: Config['logto'], options: LogtoClientOptions = {}): LogtoClient => {
  const logger = options.logger ?? silentLogger;
  const userAgent = options.userAgent ?? defaultUserAgent;
  const backoff: BackoffOptions = { ...defaultBackoff, ...options.backoff };
  const stats: LogtoClientStats = { requests: 0, retries: 0, byStatus: {}, tokenFetches: 0 };
  const transport = createTransport();
  const tokens = new TokenProvider({
    config,
    http: transport,
    logger,
    userAgent,
    backoff,
    onFetch: () => {
      stats.tokenFetches += 1;
    },
  });
  const budget = new RateBudget({
    concurrency: config.concurrency,
    requests: config.rateLimit.requests,
    intervalMs: config.rateLimit.intervalMs,
  });
  const context: HttpContext = { config, transport, tokens, budget, logger, userAgent, backoff, stats };

  const getOne = async <T>(schema: z.ZodType<T>, request: ApiRequest): Promise<T | null> => {
    const response = await apiRequest(context, request);
    if (response === null) return null;
    return validateItem(schema, response.data, request);
  };

  const getRequired = async <T>(schema: z.ZodType<T>, request: ApiRequest): Promise<T> => {
    const response = await apiRequest(context, { ...request, notFound: 'error' });
    // notFound 'error' never yields null; the check keeps the types honest.
    if (response === null) throw new Error(`unreachable: ${request.method} ${request.path} returned null`);
    return validateItem(schema, response.data, request);
  };

  const send = async (request: ApiRequest): Promise<void> => {
    await apiRequest(context, request);
  };

  const findUsersBatch = async (ids: string[]): Promise<LogtoUser[]> => {
    const path = apiPath(
      ['users'],
      [
        ['page', 1],
        ['page_size', findUsersBatchSize],
        ...ids.map((id) => ['search.id', id] as const),
        ['mode.id', 'exact'],
        ['isCaseSensitive', 'true'],
      ],
    );
    return getRequired(z.array(logtoUserSchema), { method: 'GET', path });
  };

  const getMemberRoles = async (organizationId: string, userId: string): Promise<LogtoOrganizationRoleRef[]> => {
    // Pagination is optional on this route: without page/page_size it returns every role.
    const roles = await getRequired(z.array(logtoOrganizationRoleSchema), {
      method: 'GET',
      path: apiPath(['organizations', organizationId, 'users', userId, 'roles']),
    });
    return roles.map(({ id, name }) => ({ id, name }));
  };

  return {
    // A whole user or member, as Logto sends every one, is taken as it is (see `CrawlOptions.parsed`).
    listUsers: (options) => paginate(context, { segments: ['users'], item: logtoUserSchema, parsed: isParsedUser }, options),
    listOrganizations: (options) => paginate(context, { segments: ['organizations'], item: logtoOrganizationSchema }, options),
    async *listOrganizationsWithMemberCounts(options) {
      const pages = paginate(
        context,
        { segments: ['organizations'], query: [['showFeatured', 'true']], item: logtoOrganizationSchema },
        options,
      );
      for await (const page of pages) {
        yield {
          ...page,
          // The featured fields are a view of the list, not of the organization: they stay out of its snapshot.
          items: page.items.map(({ usersCount, featuredUsers: _featured, ...organization }) => ({
            organization: organization as LogtoOrganization,
            usersCount: typeof usersCount === 'number' && Number.isInteger(usersCount) && usersCount >= 0 ? usersCount : null,
          })),
        };
      }
    },
    listOrganizationRoles: (options) =>
      paginate(context, { segments: ['organization-roles'], item: logtoOrganizationRoleSchema }, options),
    listOrganizationMembers: (organizationId, options) =>
      paginate(context, { segments: ['organizations', organizationId, 'users'], item: logtoOrganizationMemberSchema, parsed: isParsedMember }, options),

    getUser: (id) => getOne(logtoUserSchema, { method: 'GET', path: apiPath(['users', id]), notFound: 'null' }),

    async findUsersByIds(ids) {
      const unique = [...new Set(ids)];
      const batches: string[][] = [];
      for (let start = 0; start < unique.length; start += findUsersBatchSize) {
        batches.push(unique.slice(start, start + findUsersBatchSize));
      }
      const results = await Promise.all(batches.map(findUsersBatch));
      const byId = new Map<string, LogtoUser>();
      for (const user of results.flat()) byId.set(user.id, user);
      return [...byId.values()];
    },

    getOrganization: (id) =>
      getOne(logtoOrganizationSchema, { method: 'GET', path: apiPath(['organizations', id]), notFound: 'null' }),

    getOrganizationRole: (id) =>
      getOne(logtoOrganizationRoleSchema, { method: 'GET', path: apiPath(['organization-roles', id]), notFound: 'null' }),

    getUserOrganizations: (userId) =>
      getOne(z.array(logtoUserOrganizationSchema), {
        method: 'GET',
        path: apiPath(['users', userId, 'organizations']),
        notFound: 'null',
      }),

    listHookLogs(hookId, { startTime, endTime, result }) {
      const query: [string, number][] = [];
      if (startTime !== undefined) query.push(['start_time', startTime]);
      if (endTime !== undefined) query.push(['end_time', endTime]);
      const inWindow = (log: HookLog) =>
        (startTime === undefined || log.createdAt >= startTime) && (endTime === undefined || log.createdAt <= endTime);
      return paginate(context, {
        segments: ['hooks', hookId, 'recent-logs'],
        query,
        item: hookLogSchema,
        filter: (log) => inWindow(log) && (result === undefined || log.payload.result === result),
      });
    },

    async probeOrganizations() {
      try {
        await apiRequest(context, { method: 'GET', path: apiPath(['organization-roles'], [['page', 1], ['page_size', 1]]) });
        return { available: true };
      } catch (error) {
        // A token without the `all` scope never gets this far (the token check throws kind 'scope'
        // first), so a 403 here, even `auth.forbidden`, is about organizations, not permissions.
        if (isLogtoError(error) && (error.status === 403 || error.status === 404)) {
          return { available: false, reason: `${error.status}${error.code ? ` ${error.code}` : ''}` };
        }
        throw error;
      }
    },

    createUser: (input) => getRequired(logtoUserSchema, { method: 'POST', path: '/users', body: input }),

    setUserSuspended: (userId, isSuspended) =>
      getRequired(logtoUserSchema, { method: 'PATCH', path: apiPath(['users', userId, 'is-suspended']), body: { isSuspended } }),

    async addOrganizationMembers(organizationId, userIds) {
      if (userIds.length === 0) return;
      // Re-adding a member is a no-op in Logto (ON CONFLICT DO NOTHING), so this POST is safe to retry.
      await send({
        method: 'POST',
        path: apiPath(['organizations', organizationId, 'users']),
        body: { userIds: [...new Set(userIds)] },
        idempotent: true,
      });
    },

    removeOrganizationMember: (organizationId, userId) =>
      send({ method: 'DELETE', path: apiPath(['organizations', organizationId, 'users', userId]), notFound: 'done-after-retry' }),

    async assignOrganizationMemberRoles(organizationId, userId, organizationRoleIds) {
      if (organizationRoleIds.length === 0) return;
      // Roles the member already has are ignored by Logto, so this POST is safe to retry.
      await send({
        method: 'POST',
        path: apiPath(['organizations', organizationId, 'users', userId, 'roles']),
        body: { organizationRoleIds: [...new Set(organizationRoleIds)] },
        idempotent: true,
      });
    },

    removeOrganizationMemberRole: (organizationId, userId, organizationRoleId) =>
      send({
        method: 'DELETE',
        path: apiPath(['organizations', organizationId, 'users', userId, 'roles', organizationRoleId]),
        notFound: 'done-after-retry',
      }),

    getOrganizationMemberRoles: getMemberRoles,

    async findOrganizationMemberRoles(organizationId, userId) {
      try {
        return await getMemberRoles(organizationId, userId);
      } catch (error) {
        if (isNotMember(error)) return null;
        throw error;
      }
    },

    async replaceOrganizationMemberRoles(organizationId, userId, organizationRoleIds) {
      await send({
        method: 'PUT',
        path: apiPath(['organizations', organizationId, 'users', userId, 'roles']),
        body: { organizationRoleIds: [...new Set(organizationRoleIds)] },
      });
    },

    async assignOrganizationRolesToMembers(organizationId, userIds, organizationRoleIds) {
      if (userIds.length === 0 || organizationRoleIds.length === 0) return;
      // Held roles are kept as they are (ON CONFLICT DO NOTHING), so this POST is safe to retry.
      await send({
        method: 'POST',
        path: apiPath(['organizations', organizationId, 'users', 'roles']),
        body: { userIds: [...new Set(userIds)], organizationRoleIds: [...new Set(organizationRoleIds)] },
        idempotent: true,
      });
    },

    stats: () => ({ ...stats, byStatus: { ...stats.byStatus } }),
  };
};
