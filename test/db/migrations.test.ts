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
});
