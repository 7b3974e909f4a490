import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncState } from '../../db/schema.js';
import { openPostgres, rows, type DatabaseHandle } from '../../src/db/client.js';
import { transactionWithSettings } from '../../src/db/transaction.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const settings = `select set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true)`;
const current = (db: DatabaseHandle['db']) =>
  rows<{ commit: string; plans: string }>(db, sql`select current_setting('synchronous_commit') as commit, current_setting('plan_cache_mode') as plans`);

/**
 * The settings of an apply transaction ride with its `begin`: they hold for every statement inside, end
 * with it, and a failure inside still rolls back and hands the connection back to the pool.
 */
describe('a transaction with its settings sent alongside begin', () => {
  let database: TestDatabase;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    database = await createTestDatabase();
    // One connection: what the transaction leaves on it is what the next statement sees.
    handle = database.url ? openPostgres(database.url, { max: 1 }) : database;
  });
  afterAll(async () => {
    if (handle !== database) await handle?.close();
    await database?.drop();
  });

  it('applies the settings inside the transaction only', async () => {
    const inside = await transactionWithSettings(handle.db, settings, async (tx) => {
      await tx.insert(syncState).values({ key: 'inside', value: {} });
      return current(tx);
    });
    expect(inside).toEqual([{ commit: 'off', plans: 'force_custom_plan' }]);
    expect(await current(handle.db)).toEqual([{ commit: 'on', plans: 'auto' }]);
    expect(await handle.db.select().from(syncState).where(eq(syncState.key, 'inside'))).toHaveLength(1);
  });

  it('rolls back on failure and leaves the connection usable', async () => {
    const failure = await transactionWithSettings(handle.db, settings, async (tx) => {
      await tx.insert(syncState).values({ key: 'rolled-back', value: {} });
      throw new Error('the page failed');
    }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(Error);
    expect(await handle.db.select().from(syncState).where(eq(syncState.key, 'rolled-back'))).toHaveLength(0);
    expect(await current(handle.db)).toEqual([{ commit: 'on', plans: 'auto' }]);
  });
});
