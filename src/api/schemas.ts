import { z } from 'zod';
import { decodeCursor } from '../db/queries/pagination.js';
import type { RoleGrant, RoleRef } from '../db/queries/sql.js';
import type { UserDto } from '../db/queries/users.js';

/*
 * Schemas shared by several routes. Each is registered under a component name (see `components`),
 * so the OpenAPI document refers to it instead of repeating it. Response schemas carry no transforms:
 * what a handler returns is exactly what the schema describes.
 */

// ---- request parameters ----------------------------------------------------------------------

/** The message of a wrong-type issue: absent, or given in another form (e.g. twice in a query string). */
export const typeError =
  (invalid: string) =>
  (issue: { input?: unknown }): string =>
    issue.input === undefined ? 'is required' : invalid;

/** Logto ids are short random strings of letters and digits (nanoid); anything else cannot be one. */
export const idParam = (what: string) =>
  z
    .string({ error: typeError('must be a single id') })
    .regex(/^[A-Za-z0-9_-]{1,128}$/, 'must be 1 to 128 letters, digits, "-" or "_"')
    .describe(`The ${what} id`);

/** A numeric id of this service's own rows (sync runs, deliveries). */
export const serialParam = (what: string) =>
  z
    .string({ error: typeError('must be a positive integer') })
    .regex(/^[1-9][0-9]{0,14}$/, 'must be a positive integer')
    .transform(Number)
    .describe(`The ${what} id`);

export const limitParam = z.coerce
  .number({ error: 'must be an integer between 1 and 500' })
  .int('must be an integer between 1 and 500')
  .min(1, 'must be an integer between 1 and 500')
  .max(500, 'must be an integer between 1 and 500')
  .default(100)
  .describe('Page size, 1 to 500');

/**
 * An opaque cursor: base64url JSON of the sort key of the last row of the previous page. `key`
 * checks the decoded key's shape, so a garbled or foreign cursor is a 400 naming `cursor`.
 */
export const cursorParam = <K extends z.ZodType>(key: K) =>
  z
    .string({ error: 'must be a cursor returned as nextCursor' })
    .max(1024, 'is not a valid cursor')
    .transform((value, context): z.output<K> => {
      const parsed = key.safeParse(decodeCursor(value));
      if (!parsed.success) {
        context.addIssue({ code: 'custom', message: 'is not a valid cursor' });
        return z.NEVER;
      }
      return parsed.data;
    })
    .optional()
    .describe('The nextCursor of the previous page; omit for the first page');

/** PostgreSQL text cannot hold NUL: a parameter with one would fail its query instead of matching nothing. */
export const withoutNul = (value: string): boolean => !value.includes('\u0000');
export const nulMessage = 'must not contain NUL characters';

/** A cursor's text sort key (decoded cursors are outside input too). */
export const textKey = () => z.string().min(1).refine(withoutNul);

export const stringKey = z.tuple([textKey()]);
export const numberKey = z.tuple([z.number().int().positive().max(Number.MAX_SAFE_INTEGER)]);

export const searchParam = (fields: string) =>
  z
    .string({ error: 'must be given once' })
    .trim()
    .max(200, 'must be at most 200 characters')
    .refine(withoutNul, nulMessage)
    .transform((value) => (value === '' ? undefined : value))
    .optional()
    .describe(`Case-insensitive substring of ${fields}`);

export const booleanParam = (description: string) =>
  z
    .enum(['true', 'false'], { error: 'must be true or false' })
    .transform((value) => value === 'true')
    .optional()
    .describe(description);

const isoInstant = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

/** An ISO 8601 date (midnight UTC) or date-time with an offset; a time without offset is ambiguous. */
export const instantParam = (description: string) =>
  z
    .string({ error: 'must be an ISO 8601 date or date-time with offset' })
    .refine((value) => isoInstant.test(value) && !Number.isNaN(Date.parse(value)), {
      message: 'must be an ISO 8601 date or date-time with offset',
    })
    .transform((value) => new Date(value))
    .optional()
    .describe(description);

export const pageQuery = <K extends z.ZodType>(key: K) => ({ limit: limitParam, cursor: cursorParam(key) });

// ---- response bodies ---------------------------------------------------------------------------

export const isoDateTime = z.iso.datetime().describe('ISO 8601, UTC');
const jsonObject = z.record(z.string(), z.unknown());

export const roleRefSchema = z.object({ id: z.string(), name: z.string() });
export const roleGrantSchema = z.object({
  id: z.string(),
  name: z.string(),
  since: isoDateTime.describe('When the member was first seen holding the role'),
});

export const userSchema = z.object({
  id: z.string(),
  username: z.string().nullable(),
  primaryEmail: z.string().nullable(),
  primaryPhone: z.string().nullable(),
  name: z.string().nullable(),
  avatar: z.string().nullable(),
  isSuspended: z.boolean(),
  customData: jsonObject,
  profile: jsonObject,
  applicationId: z.string().nullable(),
  lastSignInAt: isoDateTime.nullable(),
  createdAt: isoDateTime,
  updatedAt: isoDateTime,
});

export const organizationRefSchema = z.object({ id: z.string(), name: z.string() });

export const organizationSchema = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  customData: jsonObject,
  isMfaRequired: z.boolean(),
  createdAt: isoDateTime,
});

export const organizationRoleSchema = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  type: z.string().describe('User or MachineToMachine'),
});

export const userOrganizationSchema = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  organizationRoles: z.array(roleGrantSchema),
  since: isoDateTime.describe('When the user was first seen as a member'),
});

export const listOf = <T extends z.ZodType>(item: T) =>
  z.object({
    data: z.array(item),
    nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page; null on the last page'),
  });

export const problemSchema = z
  .looseObject({
    type: z.string().describe('A URI naming the kind of problem'),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    instance: z.string().describe('The request path'),
    requestId: z.string(),
    code: z.string().describe('A stable, machine-readable error code'),
    invalid_params: z
      .array(z.object({ name: z.string(), reason: z.string() }))
      .optional()
      .describe('For 400 responses: each parameter that was rejected and why'),
  })
  .describe('RFC 9457 problem details');

/** Shared schemas, by component name. */
export const components: [z.ZodType, string][] = [
  [userSchema, 'User'],
  [organizationSchema, 'Organization'],
  [organizationRoleSchema, 'OrganizationRole'],
  [organizationRefSchema, 'OrganizationRef'],
  [roleRefSchema, 'OrganizationRoleRef'],
  [roleGrantSchema, 'OrganizationRoleGrant'],
  [userOrganizationSchema, 'UserOrganization'],
  [problemSchema, 'Problem'],
];

// ---- shaping ------------------------------------------------------------------------------------

export const iso = (value: Date): string => value.toISOString();
export const isoOrNull = (value: Date | null): string | null => (value ? value.toISOString() : null);

/** A timestamp as stored (Date) or as Logto sends it (epoch milliseconds). */
const instant = (value: Date | number | string): string => new Date(value).toISOString();

export type UserLike = Omit<UserDto, 'lastSignInAt' | 'createdAt' | 'updatedAt'> & {
  lastSignInAt: Date | number | null;
  createdAt: Date | number;
  updatedAt: Date | number;
};

export const toUser = (user: UserLike): z.infer<typeof userSchema> => ({
  id: user.id,
  username: user.username ?? null,
  primaryEmail: user.primaryEmail ?? null,
  primaryPhone: user.primaryPhone ?? null,
  name: user.name ?? null,
  avatar: user.avatar ?? null,
  isSuspended: user.isSuspended,
  customData: user.customData ?? {},
  profile: user.profile ?? {},
  applicationId: user.applicationId ?? null,
  lastSignInAt: user.lastSignInAt === null || user.lastSignInAt === undefined ? null : instant(user.lastSignInAt),
  createdAt: instant(user.createdAt),
  updatedAt: instant(user.updatedAt),
});

export const toRoleGrant = (role: RoleGrant): z.infer<typeof roleGrantSchema> => ({
  id: role.id,
  name: role.name,
  since: iso(role.since),
});

export const toRoleRef = (role: RoleRef): z.infer<typeof roleRefSchema> => ({ id: role.id, name: role.name });
