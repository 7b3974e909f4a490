import { encodeCursor } from './pagination.js';

/*
 * Response bodies built as JSON text by PostgreSQL (row_to_json / array_to_json write compact JSON,
 * the same bytes as JSON.stringify for text, booleans, nulls and ISO timestamps), so list routes send
 * what the database wrote instead of parsing rows into objects only to serialise them again.
 * jsonb columns are the exception: PostgreSQL writes them with spaces (and its own number forms), so
 * they come back as text and are made compact in Node (`{}`, the common case, as it is).
 */

/** A timestamp column as ISO 8601 UTC with milliseconds (as `Date.prototype.toISOString`), in SQL. */
export const isoSql = (column: string): string => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/**
 * The roles one member holds as a compact JSON array ordered by name then id (`since` included when
 * asked), for a membership given by two SQL expressions.
 */
export const memberRolesJsonSql = (organizationId: string, userId: string, withSince: boolean): string =>
  `coalesce((select array_to_json(array_agg(g order by g.name, g.id)) from (
    select r.id, r.name${withSince ? `, ${isoSql('mr.since')} as since` : ''}
    from organization_member_roles mr join organization_roles r on r.id = mr.organization_role_id
    where mr.organization_id = ${organizationId} and mr.user_id = ${userId}) g), '[]'::json)`;

/**
 * The select list of a user as three pieces (alias `u`): `head` (the fields before customData),
 * `custom_data` and `profile` (jsonb as text), and `tail`: applicationId, the timestamps, then the
 * given extra fields (`expression as "name"`, in order) as one compact object.
 */
export const userPiecesSql = (extraFields: string[]): string => `
  (select row_to_json(h)::text from (select u.id, u.username, u.primary_email as "primaryEmail", u.primary_phone as "primaryPhone",
    u.name, u.avatar, u.is_suspended as "isSuspended") h) as head,
  u.custom_data::text as custom_data,
  u.profile::text as profile,
  (select row_to_json(t)::text from (select u.application_id as "applicationId", ${isoSql('u.last_sign_in_at')} as "lastSignInAt",
    ${isoSql('u.created_at')} as "createdAt", ${isoSql('u.updated_at')} as "updatedAt"${extraFields.map((field) => `, ${field}`).join('')}) t) as tail`;

export type UserPieces = { head: string; custom_data: string; profile: string; tail: string };

/** jsonb text as JSON.stringify writes it. */
const compact = (jsonb: string): string => (jsonb === '{}' || jsonb === '[]' ? jsonb : JSON.stringify(JSON.parse(jsonb)));

/** One user object from its pieces: `{…head, "customData":…, "profile":…, …tail}`. */
export const userJsonText = (pieces: UserPieces): string =>
  `${pieces.head.slice(0, -1)},"customData":${compact(pieces.custom_data)},"profile":${compact(pieces.profile)},${pieces.tail.slice(1)}`;

/**
 * A list body `{"data":[…],"nextCursor":…}` from rows fetched with `limit + 1` (the extra row only says
 * that another page exists); `keyOf` gives the sort key of the last row kept.
 */
export const pageJsonText = <T>(rows: T[], limit: number, item: (row: T) => string, keyOf: (row: T) => unknown[]): string => {
  const kept = rows.length > limit ? rows.slice(0, limit) : rows;
  const last = kept[kept.length - 1];
  const next = rows.length > limit && last !== undefined ? JSON.stringify(encodeCursor(keyOf(last))) : 'null';
  return `{"data":[${kept.map(item).join(',')}],"nextCursor":${next}}`;
};
