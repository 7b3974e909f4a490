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

/*
 * A whole list page as one row, for lists of users: PostgreSQL writes every item, and Node only puts the
 * users' non-empty jsonb fields (customData, profile) where PostgreSQL left a placeholder, after one parse
 * of all of them together. One row instead of a hundred is what the driver and the event loop save.
 */

/** Marks where a jsonb value goes: PostgreSQL's JSON text never holds a raw U+0001 (it escapes control characters). */
const slot = '\u0001';
const emptyJsonb = (column: string) => `${column} in ('{}'::jsonb, '[]'::jsonb)`;
const jsonbSlotSql = (column: string) => `case when ${emptyJsonb(column)} then ${column}::text else chr(1) end`;
const jsonbValueSql = (column: string) => `case when not ${emptyJsonb(column)} then ${column}::text end`;

/**
 * The select list of one user item (alias `u`) for `pageRowSql`: `item`, the user object as JSON text
 * with the given extra fields after the timestamps (the same bytes as `userJsonText` once filled in), and
 * `item_values`, the JSON of its placeholders' values joined by commas ('' when none).
 */
export const userItemSql = (extraFields: string[]): string => `
  left((select row_to_json(h)::text from (select u.id, u.username, u.primary_email as "primaryEmail", u.primary_phone as "primaryPhone",
    u.name, u.avatar, u.is_suspended as "isSuspended") h), -1)
  || ',"customData":' || ${jsonbSlotSql('u.custom_data')} || ',"profile":' || ${jsonbSlotSql('u.profile')} || ','
  || substr((select row_to_json(t)::text from (select u.application_id as "applicationId", ${isoSql('u.last_sign_in_at')} as "lastSignInAt",
    ${isoSql('u.created_at')} as "createdAt", ${isoSql('u.updated_at')} as "updatedAt"${extraFields.map((field) => `, ${field}`).join('')}) t), 2) as item,
  concat_ws(',', ${jsonbValueSql('u.custom_data')}, ${jsonbValueSql('u.profile')}) as item_values`;

/**
 * One row for a page: `rowsSql` selects the sort key columns, `userItemSql`'s columns and
 * `row_number() over (order by <the sort key>) as rn`, ordered by the sort key and limited to `$2`
 * (the page size plus one: the extra row only says that another page exists).
 */
export const pageRowSql = (rowsSql: string, keyColumns: string[]): string => `
  select count(*)::int as fetched,
    string_agg(p.item, ',' order by p.rn) filter (where p.rn < $2) as items,
    string_agg(nullif(p.item_values, ''), ',' order by p.rn) filter (where p.rn < $2) as item_values,
    ${keyColumns.map((column, index) => `(array_agg(p.${column} order by p.rn desc) filter (where p.rn < $2))[1] as last_${index}`).join(',\n    ')}
  from (${rowsSql}) p`;

export type PageRow = { fetched: number; items: string | null; item_values: string | null } & Record<`last_${number}`, string | null>;

/** The list body `{"data":[…],"nextCursor":…}` of a row of `pageRowSql` with `keyCount` sort key columns. */
export const pageFromRow = (row: PageRow, limit: number, keyCount: number): string => {
  let items = row.items ?? '';
  if (row.item_values) {
    const values = JSON.parse(`[${row.item_values}]`) as unknown[];
    const parts = items.split(slot);
    items = parts[0]!;
    for (let index = 1; index < parts.length; index += 1) items += JSON.stringify(values[index - 1]) + parts[index]!;
  }
  const key = Array.from({ length: keyCount }, (_, index) => row[`last_${index}`]);
  const next = row.fetched > limit ? JSON.stringify(encodeCursor(key)) : 'null';
  return `{"data":[${items}],"nextCursor":${next}}`;
};
