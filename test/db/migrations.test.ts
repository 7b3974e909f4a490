import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrationsApplied, rows } from '../../src/db/client.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

describe('migrations', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });

  it('creates every access-state table and records itself as applied', async () => {
    const tables = await rows<{ table_name: string }>(
      database.db,
      sql`select table_name from information_schema.tables where table_schema = 'public' order by table_name`,
    );
    expect(tables.map((row) => row.table_name)).toEqual([
      'access_changes',
      'api_keys',
      'event_outbox',
      'event_subscriptions',
      'idempotency_keys',
      'organization_member_roles',
      'organization_members',
      'organization_resyncs',
      'organization_roles',
      'organizations',
      'sync_runs',
      'sync_seen',
      'sync_state',
      'users',
      'webhook_deliveries',
    ]);
    expect(await migrationsApplied(database.db)).toBe(true);
  });

  it('compares Logto ids byte by byte, in the order JavaScript sorts them', async () => {
    // The id columns every baseline index is keyed on: "C", one memcmp per comparison (see `id` in db/schema.ts).
    const collations = await rows<{ column: string; collation: string | null }>(
      database.db,
      sql`select c.table_name || '.' || c.column_name as column, c.collation_name as collation from information_schema.columns c
        where c.table_schema = 'public' and (c.table_name, c.column_name) in (('users', 'id'), ('organizations', 'id'), ('organization_roles', 'id'),
          ('organization_members', 'organization_id'), ('organization_members', 'user_id'), ('organization_member_roles', 'organization_id'),
          ('organization_member_roles', 'user_id'), ('organization_member_roles', 'organization_role_id'), ('access_changes', 'user_id'),
          ('access_changes', 'organization_id'), ('access_changes', 'organization_role_id'))
        order by 1`,
    );
    expect(collations).toHaveLength(11);
    expect(collations.filter((row) => row.collation !== 'C')).toEqual([]);
    // Stored ids come back in JavaScript's order (`<`), the order the crawl sorts and compares pages in,
    // whatever collation the database was created with.
    const ids = ['b', 'B', 'a-1', 'a1', 'A', '_x', 'é', 'z'];
    await database.db.execute(sql`insert into organizations (id, name, created_at, raw, observed_at)
      select id, id, now(), '{}', now() from unnest(${sql.param(ids)}::text[]) as t(id)`);
    const sorted = await rows<{ id: string }>(database.db, sql`select id from organizations where id = any(${sql.param(ids)}::text[]) order by id`);
    expect(sorted.map((row) => row.id)).toEqual([...ids].sort());
  });

  it('keeps no deduplication on the indexes whose every entry is unique (each ends in a primary key)', async () => {
    const options = await rows<{ index: string; options: string[] | null }>(
      database.db,
      sql`select c.relname as index, c.reloptions as options from pg_class c
        where c.relname in ('access_changes_user_idx', 'access_changes_organization_idx', 'organization_members_user_idx', 'organization_member_roles_role_idx')
        order by 1`,
    );
    expect(options).toEqual(
      ['access_changes_organization_idx', 'access_changes_user_idx', 'organization_member_roles_role_idx', 'organization_members_user_idx'].map((index) => ({
        index,
        options: ['deduplicate_items=off'],
      })),
    );
  });
});
