export {
  createLogtoClient,
  defaultUserAgent,
  findUsersBatchSize,
  type CreateUserInput,
  type HookLogQuery,
  type LogtoClient,
  type LogtoClientOptions,
  type LogtoOrganizationWithMemberCount,
  type OrganizationsProbe,
} from './client.js';
export {
  LogtoError,
  isLogtoError,
  isNotFound,
  isNotMember,
  isTransient,
  type LogtoErrorKind,
} from './errors.js';
export { backoffDelay, defaultBackoff, defaultRetryWindowMs, parseRetryAfter, retryWait, parseTotalNumber, type BackoffOptions } from './backoff.js';
export { maxPageSize, type AheadOptions } from './paginate.js';
export { parseLogtoUser, plainRecord } from './parse-user.js';
export {
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
