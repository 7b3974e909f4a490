/**
 * Logto's error envelope and the phrases the simulator answers with. Messages are copied from
 * `packages/phrases/src/locales/en/errors/*.ts` so a client that logs them sees what Logto says.
 */

/** Body of every Logto error response: `{code, data?, details?, message}` in that key order. */
export interface LogtoErrorBody {
  code: string;
  data?: unknown;
  details?: string;
  message: string;
}

export const phrases = {
  'auth.authorization_header_missing': 'Authorization header is missing.',
  'auth.authorization_token_type_not_supported': 'Authorization type is not supported.',
  'auth.unauthorized': 'Unauthorized. Please check credentials and its scope.',
  'auth.forbidden': 'Forbidden. Please check your user roles and permissions.',
  'guard.invalid_input': 'The request {{type}} is invalid.',
  'guard.invalid_pagination': 'The request pagination value is invalid.',
  'request.invalid_input': 'Input is invalid. {{details}}',
  'entity.not_found': 'The resource does not exist.',
  'entity.not_exists_with_id': 'The {{name}} with ID `{{id}}` does not exist.',
  'entity.relation_foreign_key_not_found':
    'Cannot find one or more foreign keys. Please check the input and ensure that all referenced entities exist.',
  'entity.unique_integrity_violation': 'The entity already exists. Please check the input and try again.',
  'entity.db_constraint_violated': 'Database constraint violated.',
  'user.username_already_in_use': 'This username is already in use.',
  'user.email_already_in_use': 'This email is associated with an existing account.',
  'user.phone_already_in_use': 'This phone number is associated with an existing account.',
  'user.password_and_digest': 'You cannot set both plain text password and password digest.',
  'user.password_algorithm_required': 'Password algorithm is required.',
  'organization.require_membership': 'The user must be a member of the organization to proceed.',
  // Not in the phrases files we could read (the code references it); worded after its siblings.
  'organization.role_names_not_found': 'Organization roles not found for names: {{names}}.',
  'organization.roles.invalid_scope_ids': 'The organization scope IDs are not valid.',
  // Logto Cloud's plan quotas (`libraries/quota.ts`); not in the phrases we could read, worded after its siblings.
  'subscription.limit_exceeded': 'You have reached the limit of your current plan. Please upgrade your plan.',
} as const;

export type LogtoErrorCode = keyof typeof phrases;

const interpolate = (template: string, values: Record<string, string>): string =>
  template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, key: string) => values[key] ?? '');

/**
 * An error that the Management API turns into Logto's `{code, message}` body. The tenant state
 * throws these too, so a test that injects an impossible change gets the same answer a client would.
 */
export class LogtoApiError extends Error {
  readonly status: number;
  readonly code: LogtoErrorCode;
  readonly data: unknown;
  readonly details: string | undefined;

  constructor(
    status: number,
    code: LogtoErrorCode,
    options: { interpolation?: Record<string, string>; data?: unknown; details?: string } = {},
  ) {
    super(interpolate(phrases[code], options.interpolation ?? {}));
    this.name = 'LogtoApiError';
    this.status = status;
    this.code = code;
    this.data = options.data;
    this.details = options.details;
  }

  toBody(): LogtoErrorBody {
    // Logto spreads code, data and details first and appends the message.
    return {
      code: this.code,
      ...(this.data === undefined ? {} : { data: this.data }),
      ...(this.details === undefined ? {} : { details: this.details }),
      message: this.message,
    };
  }
}

export const notFound = () => new LogtoApiError(404, 'entity.not_found');

/** What Logto's generic `findById` answers for organizations and organization roles. */
export const notExistsWithId = (table: string, id: string) =>
  new LogtoApiError(404, 'entity.not_exists_with_id', { interpolation: { name: table, id } });

export const foreignKeyNotFound = () => new LogtoApiError(422, 'entity.relation_foreign_key_not_found');

/** Logto Cloud's answer when a write would go beyond the plan's quota (never on self-hosted Logto). */
export const limitExceeded = (quota: string) => new LogtoApiError(403, 'subscription.limit_exceeded', { data: { key: quota } });

export const requireMembership = () => new LogtoApiError(422, 'organization.require_membership');

export const invalidInput = (type: 'body' | 'query' | 'params', details?: string) =>
  new LogtoApiError(400, 'guard.invalid_input', {
    interpolation: { type },
    ...(details === undefined ? {} : { details }),
  });

export const invalidPagination = () => new LogtoApiError(400, 'guard.invalid_pagination');
