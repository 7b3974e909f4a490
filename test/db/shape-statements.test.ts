import { sql, type SQL } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows } from '../../src/db/client.js';
import { namedRows, namedShapeRows } from '../../src/db/prepared.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';

/** A statement of the shape `namedShapeRows` builds once: `value` is a placeholder or the value itself. */
const statement = (value: (name: string) => unknown): SQL =>
  sql`select ${value('id')}::text as id, cardinality(${value('ids')}::text[]) as n, ${value('id')}::text = any(${value('ids')}::text[]) as listed`;

describe('namedShapeRows', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });

  it('binds each call its own values, the statement built once', async () => {
    let builds = 0;
    const build = () => {
      builds += 1;
      return statement((name) => sql.placeholder(name));
    };
    const first = await namedShapeRows<{ id: string; n: number; listed: boolean }>(database.db, 'test.shape', build, { id: 'a', ids: '{"a","b"}' });
    const second = await namedShapeRows<{ id: string; n: number; listed: boolean }>(database.db, 'test.shape', build, { id: 'c', ids: '{"a"}' });
    expect(first).toEqual([{ id: 'a', n: 2, listed: true }]);
    expect(second).toEqual([{ id: 'c', n: 1, listed: false }]);
    expect(builds).toBe(1);
  });

  it.runIf(hasPostgresServer())('sends the text namedRows sends for the statement with its values in place (one prepared statement for both)', async () => {
    const values: Record<string, unknown> = { id: 'x', ids: '{"x"}' };
    await database.withSession(async (session) => {
      await namedRows(session, statement((name) => values[name]));
      await namedShapeRows(session, 'test.same-text', () => statement((name) => sql.placeholder(name)), values);
      const [row] = await rows<{ n: number }>(session, sql`select count(*)::int as n from pg_prepared_statements where name like 'las\\_%'`);
      expect(row!.n).toBe(1);
    });
  });
});
