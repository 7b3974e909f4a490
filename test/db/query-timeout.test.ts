import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncState } from '../../db/schema.js';
import { isDatabaseUnavailable, openPostgres, type DatabaseHandle } from '../../src/db/client.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * DATABASE_QUERY_TIMEOUT_MS against a partition that heals: the query that timed out is answered late,
 * on a connection whose transaction never got its ROLLBACK. That connection must not serve anyone again,
 * or the next statement would run inside the dead transaction and vanish with it.
 */
describe.skipIf(!hasPostgresServer())('a query timeout inside a transaction, then the partition heals', () => {
  let database: TestDatabase;
  let proxy: TcpProxy;
  let handle: DatabaseHandle;

  beforeAll(async () => {
    database = await createTestDatabase();
    const target = new URL(database.url!);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    // One connection: the statement after the timeout gets the very connection the transaction used, if it is kept.
    handle = openPostgres(proxy.rewrite(database.url!), { max: 1, queryTimeoutMs: 300 });
  });
  afterAll(async () => {
    await handle?.close().catch(() => {});
    await proxy?.close();
    await database?.drop();
  });

  const stored = async (key: string) => (await database.db.select().from(syncState).where(eq(syncState.key, key))).length;

  it('fails the transaction, and the next statement is committed on a connection of its own', async () => {
    const failed = await handle.db
      .transaction(async (tx) => {
        await tx.insert(syncState).values({ key: 'inside-the-timed-out-transaction', value: {} });
        proxy.stall();
        await tx.execute(sql`select 1`);
      })
      .catch((error: unknown) => error);
    // Its ROLLBACK timed out behind the unanswered query too: the error says the database is away.
    expect(isDatabaseUnavailable(failed)).toBe(true);

    proxy.heal();
    // Long enough for the late answer to come back over the healed connection.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await handle.db.insert(syncState).values({ key: 'after-the-partition', value: {} });

    expect(await stored('after-the-partition')).toBe(1);
    expect(await stored('inside-the-timed-out-transaction')).toBe(0);
  });
});
