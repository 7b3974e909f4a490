import { z } from 'zod';

/*
 * Shapes of the Management API responses, checked against the recordings in
 * test/fixtures/logto/management-api/*.json. Objects are loose: keys we do not model
 * (cimdClientId, color, branding, scopes, …) pass through untouched so the full JSON can be stored.
 * Fields that older Logto versions lack get a neutral default instead of failing the whole crawl;
 * a field of the wrong type still fails.
 */

const jsonRecord = z.record(z.string(), z.unknown());
const nullableText = z.string().nullable().default(null);

export const logtoUserSchema = z.looseObject({
  id: z.string().min(1),
  username: nullableText,
  primaryEmail: nullableText,
  primaryPhone: nullableText,
  name: nullableText,
  avatar: nullableText,
  customData: jsonRecord.default({}),
  identities: jsonRecord.default({}),
  profile: jsonRecord.default({}),
  lastSignInAt: z.number().nullable().default(null),
  createdAt: z.number(),
  updatedAt: z.number(),
  applicationId: nullableText,
  isSuspended: z.boolean(),
  /** Present on `/users` responses; absent on organization member items. */
  hasPassword: z.boolean().optional(),
});

export const organizationRoleRefSchema = z.looseObject({ id: z.string().min(1), name: z.string() });

export const logtoOrganizationSchema = z.looseObject({
  tenantId: z.string().optional(),
  id: z.string().min(1),
  name: z.string(),
  description: nullableText,
  customData: jsonRecord.default({}),
  isMfaRequired: z.boolean().default(false),
  createdAt: z.number(),
});

export const logtoOrganizationRoleSchema = z.looseObject({
  tenantId: z.string().optional(),
  id: z.string().min(1),
  name: z.string(),
  description: nullableText,
  /** Organization roles predating machine-to-machine roles had no type: they were user roles. */
  type: z.enum(['User', 'MachineToMachine']).default('User'),
});

export const logtoOrganizationMemberSchema = logtoUserSchema.extend({
  organizationRoles: z.array(organizationRoleRefSchema),
});

export const logtoUserOrganizationSchema = logtoOrganizationSchema.extend({
  organizationRoles: z.array(organizationRoleRefSchema),
});

export const hookLogSchema = z.looseObject({
  id: z.string().min(1),
  key: z.string(),
  createdAt: z.number(),
  payload: z.looseObject({
    result: z.enum(['Success', 'Error']),
    hookId: z.string().optional(),
    hookRequest: z.looseObject({ body: z.unknown() }).optional(),
    error: z.unknown().optional(),
    response: z.unknown().optional(),
  }),
});

/** Logto's error body: `{ code, message, details?, data? }`. */
export const logtoErrorBodySchema = z.looseObject({ code: z.string(), message: z.string().optional() });

/** The client-credentials token response. */
export const tokenResponseSchema = z.looseObject({
  access_token: z.string().min(1),
  expires_in: z.coerce.number().positive().default(3600),
  token_type: z.string().optional(),
  scope: z.string().optional(),
});

/** The OAuth error body of the token endpoint (RFC 6749 §5.2). */
export const oauthErrorSchema = z.looseObject({ error: z.string(), error_description: z.string().optional() });

export type LogtoUser = z.infer<typeof logtoUserSchema>;
export type LogtoOrganization = z.infer<typeof logtoOrganizationSchema>;
export type LogtoOrganizationRole = z.infer<typeof logtoOrganizationRoleSchema>;
export type LogtoOrganizationRoleRef = { id: string; name: string };
export type LogtoOrganizationMember = z.infer<typeof logtoOrganizationMemberSchema>;
export type LogtoUserOrganization = z.infer<typeof logtoUserOrganizationSchema>;
export type HookLog = z.infer<typeof hookLogSchema>;

/**
 * One page of a crawl. `items` are already deduplicated against earlier pages of the same crawl;
 * `total` is that page's `Total-Number` header (null when absent). Compare it between pages: if it
 * moved, the collection changed during the crawl and offset pages may have skipped items.
 */
/** One page of a crawl; `requestedAt` is when its request was made (the page is at least that fresh). */
export type Page<T> = { items: T[]; page: number; total: number | null; requestedAt?: Date };

/**
 * Counters for one client instance. `requests` counts HTTP attempts sent to the Management API
 * (retries included, token requests excluded); `byStatus` keys are status codes, or `timeout` /
 * `network` for attempts that got no response; `tokenFetches` counts token endpoint calls.
 */
export type LogtoClientStats = {
  requests: number;
  retries: number;
  byStatus: Record<string, number>;
  tokenFetches: number;
};
