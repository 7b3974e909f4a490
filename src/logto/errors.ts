/**
 * The one error type the Logto client throws. It is built by hand from a status, Logto's error
 * `code` and a message we write, never from an axios error: those carry the request config,
 * including the `Authorization` header, and so the client secret or the access token.
 */
export type LogtoErrorKind =
  /** Logto rejected the client id/secret, or the token it issued (fix the configuration). */
  | 'credentials'
  /** The M2M app lacks the `all` scope of the Management API (assign it the role). */
  | 'scope'
  /** Network failure or no answer after every retry. */
  | 'unreachable'
  /** A write timed out and was not retried: it may or may not have been applied. */
  | 'timeout'
  /** Logto answered with an error status (see `status` and `code`). */
  | 'api'
  /** Logto answered 2xx with a body that does not have the expected shape. */
  | 'invalid_response'
  /** Still throttled (429) after every retry. */
  | 'rate_limited';

export type LogtoErrorDetails = { status?: number; code?: string; path?: string };

export class LogtoError extends Error {
  override readonly name = 'LogtoError';
  readonly status?: number;
  readonly code?: string;
  readonly path?: string;

  constructor(
    readonly kind: LogtoErrorKind,
    message: string,
    details: LogtoErrorDetails = {},
  ) {
    super(message);
    if (details.status !== undefined) this.status = details.status;
    if (details.code !== undefined) this.code = details.code;
    if (details.path !== undefined) this.path = details.path;
  }

  /** What loggers and `JSON.stringify` see: the safe fields and nothing else. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, kind: this.kind, message: this.message, status: this.status, code: this.code, path: this.path };
  }
}

export const isLogtoError = (error: unknown): error is LogtoError => error instanceof LogtoError;

/** Logto answered 404 (entity missing, or a removal of something that is not there). */
export const isNotFound = (error: unknown): boolean => isLogtoError(error) && error.status === 404;

/** 422 `organization.require_membership`: the user is not a member of the organization. */
export const isNotMember = (error: unknown): boolean =>
  isLogtoError(error) && error.status === 422 && error.code === 'organization.require_membership';

/**
 * Worth trying again later (the client already retried with backoff): network trouble, throttling,
 * or a 5xx. Configuration problems (`credentials`, `scope`) and 4xx answers are not.
 */
export const isTransient = (error: unknown): boolean =>
  isLogtoError(error) &&
  (error.kind === 'unreachable' ||
    error.kind === 'timeout' ||
    error.kind === 'rate_limited' ||
    (error.kind === 'api' && error.status !== undefined && error.status >= 500));

/** The message an operator needs when the M2M app lacks the Management API permission. */
export const missingScopeMessage =
  'The Logto M2M application lacks the "all" scope of the Logto Management API: in the Logto Console, ' +
  'assign the "Logto Management API access" role to the machine-to-machine application used by this service';
