import { logtoUserSchema, type LogtoOrganizationMember, type LogtoUser } from './types.js';

const textOrNull = (value: unknown): boolean => value === null || typeof value === 'string';

/** A plain record as `z.record` takes it, whose own keys a copy made by assignment would keep (no `__proto__`). */
export const plainRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value) && !Object.hasOwn(value, '__proto__');

/**
 * True when `logtoUserSchema` would return `value` as it is, with no default to fill in and nothing
 * dropped: every field present with its type (a user as Logto sends it in full).
 */
export const isParsedUser = (value: unknown): value is LogtoUser => {
  if (!plainRecord(value)) return false;
  const user = value as Record<string, unknown>;
  return (
    typeof user.id === 'string' &&
    user.id.length > 0 &&
    textOrNull(user.username) &&
    textOrNull(user.primaryEmail) &&
    textOrNull(user.primaryPhone) &&
    textOrNull(user.name) &&
    textOrNull(user.avatar) &&
    textOrNull(user.applicationId) &&
    plainRecord(user.customData) &&
    plainRecord(user.identities) &&
    plainRecord(user.profile) &&
    (user.lastSignInAt === null || Number.isFinite(user.lastSignInAt)) &&
    Number.isFinite(user.createdAt) &&
    Number.isFinite(user.updatedAt) &&
    typeof user.isSuspended === 'boolean' &&
    (user.hasPassword === undefined || typeof user.hasPassword === 'boolean')
  );
};

/**
 * `logtoUserSchema.safeParse(value).data`, or null when it fails, without the copy for a user that
 * already has the parsed shape: every webhook delivery carrying full user data was validated by zod,
 * which rebuilt the user and each of its records (customData, identities, profile) only to return
 * what it was given; that was a sixth of what the inbox worker allocated per delivery. The user comes
 * back as it is, not a copy: callers only read it. Anything else (a default to fill in, a wrong type)
 * goes through zod, so the outcome is zod's.
 */
export const parseLogtoUser = (value: unknown): LogtoUser | null => {
  if (isParsedUser(value)) return value;
  const parsed = logtoUserSchema.safeParse(value);
  return parsed.success ? parsed.data : null;
};

/** An organization role as a member item lists it, as `organizationRoleRefSchema` returns it unchanged. */
const isRoleRef = (value: unknown): boolean =>
  plainRecord(value) && typeof value.id === 'string' && value.id.length > 0 && typeof value.name === 'string';

/**
 * True when `logtoOrganizationMemberSchema` would return `value` as it is: a whole user (`isParsedUser`)
 * with its `organizationRoles`, each an id and a name. The member crawl validates each item of every
 * page, and zod rebuilt every one of them (the user, its records, each role) only to return what it was
 * given: at scale 0.3 a third of what a baseline allocated, every copy garbage by the next page.
 */
export const isParsedMember = (value: unknown): value is LogtoOrganizationMember => {
  if (!isParsedUser(value)) return false;
  const roles = (value as { organizationRoles?: unknown }).organizationRoles;
  if (!Array.isArray(roles)) return false;
  // Indexed, not `every`: a hole is not a role (zod fails it), and `every` would skip it.
  for (let index = 0; index < roles.length; index += 1) if (!isRoleRef(roles[index])) return false;
  return true;
};
