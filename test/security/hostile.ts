import { Agent, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import { rows, type Database } from '../../src/db/client.js';

/*
 * Generators of hostile input shared by the fuzz tests, and a fingerprint of the whole database to
 * prove that refused input changed nothing.
 */

/** How many cases each property runs: FUZZ_SCALE=10 for a long local hunt. */
export const runs = (base: number): number => Math.max(1, Math.round(base * Number(process.env.FUZZ_SCALE ?? 1)));

export const sqlFragments = [
  "' OR '1'='1",
  "'; drop table users; --",
  '1; select pg_sleep(10)',
  '$1',
  '\\',
  '%',
  '_',
  "') union select * from api_keys --",
  '"',
  '`',
  '\\x00',
  'null',
  'NaN',
  '-1',
  '1e309',
  '0x10',
  '9'.repeat(40),
];

export const prototypeKeys = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'];

/** Text with NUL, unpaired surrogates, control and bidi characters, combining marks, emoji. */
export const nastyCharacters = ['\u0000', '\uD800', '\uDC00', '\uDBFF\uDFFF', '\u202E', '\uFEFF', '\u0007', '\n', '\r', '\t', 'e\u0301', '💥', '\uFFFD', '\u2028'];

export const hostileString = (maxLength = 64): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.string({ maxLength, unit: 'binary' }) },
    { weight: 2, arbitrary: fc.constantFrom(...sqlFragments, ...prototypeKeys) },
    { weight: 2, arbitrary: fc.array(fc.constantFrom(...nastyCharacters, 'a', '0', ' '), { maxLength }).map((parts) => parts.join('')) },
    { weight: 1, arbitrary: fc.integer({ min: 1000, max: 20_000 }).map((length) => 'x'.repeat(length)) },
    { weight: 2, arbitrary: fc.string({ maxLength, unit: 'grapheme-ascii' }) },
  );

/** JSON values with hostile strings and keys, `__proto__` among them. */
export const hostileJson: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.constantFrom(Number.MAX_SAFE_INTEGER + 2, -0, 1e308),
    hostileString(),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(fc.oneof(hostileString(12), fc.constantFrom(...prototypeKeys)), tie('value'), { maxKeys: 5 }),
  ),
})).value;

/** `[[[…]]]` (or `{"a":{"a":…}}`) nested `depth` times, as text: JSON.parse and jsonb both recurse on it. */
export const deeplyNested = (depth: number, kind: 'array' | 'object'): string =>
  kind === 'array' ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

/** A UTF-8 body with raw bytes that are not UTF-8 (lone continuation bytes, overlongs, surrogate encodings) inside a string. */
export const invalidUtf8Bytes = fc.uint8Array({ minLength: 1, maxLength: 64, min: 0x80, max: 0xff });

export type Fingerprint = Record<string, { rows: number; digest: string | null }>;

/**
 * Row count and digest of the contents of every table in the schema: equal fingerprints mean nothing
 * was written. `ignore` names columns that may move on their own (e.g. `last_used_at` of a key).
 */
export const fingerprint = async (db: Database, ignore: string[] = ['last_used_at']): Promise<Fingerprint> => {
  const tables = await rows<{ table_name: string }>(
    db,
    sql`select table_name from information_schema.tables where table_schema = current_schema() and table_type = 'BASE TABLE' order by table_name`,
  );
  const result: Fingerprint = {};
  const dropped = ignore.map((column) => ` - '${column}'`).join('');
  for (const { table_name: table } of tables) {
    const [row] = await rows<{ rows: string; digest: string | null }>(
      db,
      sql.raw(
        `select count(*)::text as rows, md5(string_agg((to_jsonb(t)${dropped})::text, '|' order by (to_jsonb(t)${dropped})::text)) as digest from "${table}" t`,
      ),
    );
    result[table] = { rows: Number(row!.rows), digest: row!.digest };
  }
  return result;
};

export type RawResponse = { status: number; headers: IncomingHttpHeaders; body: Buffer; text: string };

/**
 * A fast HTTP client for many sequential requests: node:http over one keep-alive agent, which also
 * sends what fetch refuses (any header name, latin-1 header bytes, no content-type).
 */
export const rawClient = (baseUrl: string) => {
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  const send = (method: string, path: string, options: { headers?: OutgoingHttpHeaders; body?: Buffer | string } = {}): Promise<RawResponse> =>
    new Promise((resolve, reject) => {
      const body = options.body === undefined ? undefined : Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body);
      const request = httpRequest(
        `${baseUrl}${path}`,
        { method, agent, headers: { ...(body ? { 'content-length': body.length } : {}), ...options.headers } },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            const all = Buffer.concat(chunks);
            resolve({ status: response.statusCode ?? 0, headers: response.headers, body: all, text: all.toString('utf8') });
          });
          response.on('error', reject);
        },
      );
      request.on('error', reject);
      request.end(body);
    });
  return { send, close: () => agent.destroy() };
};

/** Cases are sent `size` at a time, concurrently: the server overlaps them as it would real traffic. */
export const batchOf = <T>(arbitrary: fc.Arbitrary<T>, size = 8): fc.Arbitrary<T[]> => fc.array(arbitrary, { minLength: size, maxLength: size });
