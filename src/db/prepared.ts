import { createHash } from 'node:crypto';
import { sql, type SQL } from 'drizzle-orm';
import pg from 'pg';
import { rows, type Database } from './client.js';

/**
 * A statement of the read hot paths, written once with `$1…$n` placeholders. On PostgreSQL it runs as
 * a named prepared statement: each pooled connection parses and plans it once, then only binds values.
 * The name must be unique per text.
 */
export type PreparedStatement = { name: string; text: string };

export const prepared = (name: string, text: string): PreparedStatement => ({ name, text });

/** A PostgreSQL array literal, bound as one parameter: elements quoted (null as NULL), so any text fits; the same on both drivers. */
export const arrayLiteral = (values: (string | number | boolean | null)[]): string =>
  `{${values.map((value) => (value === null ? 'NULL' : `"${String(value).replace(/[\\"]/g, '\\$&')}"`)).join(',')}}`;

/**
 * `arrayLiteral` of strings (the literal node-postgres would send for the array), built with one `join`
 * when no element needs escaping (ids, digests): node-postgres builds it an element at a time through
 * string concatenation and two regular expressions each, and a baseline sends ~600,000 ids as array
 * parameters (at scale 0.3 that was 180 MB of the 930 MB the sync process allocated beyond its crawl).
 * Bound to a `…::text[]` cast, PostgreSQL reads the same array either way.
 */
export const textArray = (values: readonly string[]): string => {
  for (const value of values) if (value.includes('"') || value.includes('\\')) return arrayLiteral([...values]);
  return values.length === 0 ? '{}' : `{"${values.join('","')}"}`;
};

/**
 * What `pg.escapeLiteral` returns (quotes and backslashes doubled, ` E` before a literal with a
 * backslash), in one replace: pg's builds the literal a character at a time, and for the settlement's
 * arrays (some 80 characters per result) that was 7 % of the bytes the sender allocated during the
 * events bench, more than any other function of its own.
 */
export const quotedLiteral = (value: string): string => {
  const quoted = `'${value.replace(/['\\]/g, '$&$&')}'`;
  return value.includes('\\') ? ` E${quoted}` : quoted;
};

type QueryClient = { query(text: string, values: unknown[]): Promise<{ rows: unknown[] }> };

/** `$n` placeholders as drizzle parameters, for a transaction (which has no client of its own to prepare on). */
const asSql = (statement: PreparedStatement, values: unknown[]): SQL => {
  const parts = statement.text.split(/\$(\d+)/);
  const chunks: SQL[] = [];
  parts.forEach((part, index) => chunks.push(index % 2 === 0 ? sql.raw(part) : sql`${values[Number(part) - 1]}`));
  return sql.join(chunks);
};

/**
 * Rows of a prepared statement. Columns come back as PostgreSQL sends them through the driver's own
 * parsers, so statements meant for both drivers select text, booleans and integers only.
 */
export const preparedRows = async <T>(db: Database, statement: PreparedStatement, values: unknown[]): Promise<T[]> => {
  const client = (db as { $client?: unknown }).$client;
  if (client instanceof pg.Pool) {
    const result = await client.query({ name: statement.name, text: statement.text, values });
    return result.rows as T[];
  }
  if (client && typeof (client as QueryClient).query === 'function') {
    // PGlite: one in-process connection, nothing to gain from naming the statement.
    return (await (client as QueryClient).query(statement.text, values)).rows as T[];
  }
  return rows<T>(db, asSql(statement, values));
};

/**
 * Whether `db` runs `namedRows` statements as named prepared statements, whose plans its connections keep
 * (node-postgres); PGlite runs them unnamed. A transaction's handle answers false: ask the database's.
 */
export const keepsNamedPlans = (db: Database): boolean => {
  const client = (db as { $client?: unknown }).$client;
  return client instanceof pg.Pool || client instanceof pg.Client;
};

type NamingSession = {
  prepareQuery(query: { sql: string; params: unknown[] }, fields: undefined, name: string, arrayMode: false): { execute(values?: Record<string, unknown>): Promise<unknown> };
};

/**
 * Rows of a statement built with drizzle's `sql` (`db` may be a transaction), run as a named prepared
 * statement named after its text: each connection parses and plans a text once and afterwards only binds
 * values. For statements a crawl sends once per page with the same text, whose parse and plan cost more
 * than a small page's execution (a page of members: ~20 % of PostgreSQL's CPU in a baseline, by `perf`).
 * Their plans are generic after five executions, so such a statement must be written so that any values
 * plan well (its rows come from JSON or array parameters, its probes fixed by the text).
 * PGlite runs it unnamed, like `rows`.
 */
export const namedRows = async <T>(db: Database, query: SQL): Promise<T[]> => {
  const { session, dialect } = db as unknown as NamingDatabase;
  const built = dialect.sqlToQuery(query);
  const result = (await session.prepareQuery(built, undefined, statementName(built.sql), false).execute()) as { rows: T[] };
  return result.rows;
};

type NamingDatabase = {
  session: NamingSession;
  dialect: { sqlToQuery(query: SQL): { sql: string; params: unknown[] } };
};

const statementName = (text: string) => `las_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`;

/** Statements built once per shape (`namedShapeRows`): their text, parameters (placeholders among them) and name. */
const shapes = new Map<string, { sql: string; params: unknown[]; name: string }>();

/**
 * `namedRows` of the statement `build` makes, whose values are placeholders (`sql.placeholder(name)`)
 * filled from `values`: built by drizzle once per `shape` (a key naming the statement and whatever
 * changes its text), then only bound. A baseline compares and writes each batch of member pages (about
 * a thousand at scale 0.3) with the two largest statements it sends, trees of hundreds of SQL chunks that
 * drizzle walked again every time (drizzle was ~0.5 of the sync process's ~5 main-thread CPU-s there).
 * The text and values sent are what `namedRows` sends for the same statement with its values in place.
 */
export const namedShapeRows = async <T>(db: Database, shape: string, build: () => SQL, values: Record<string, unknown>): Promise<T[]> => {
  const { session, dialect } = db as unknown as NamingDatabase;
  let built = shapes.get(shape);
  if (!built) {
    const query = dialect.sqlToQuery(build());
    built = { ...query, name: statementName(query.sql) };
    shapes.set(shape, built);
  }
  const result = (await session.prepareQuery(built, undefined, built.name, false).execute(values)) as { rows: T[] };
  return result.rows;
};
