import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows, type DatabaseHandle } from '../../src/db/client.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/**
 * Reads of the change log's id sequence by the session's backend, as PostgreSQL counts them (each
 * `lastChangeId` reads its one block): forced out of the backend's pending counts, then read afresh.
 */
const changeIdReads = async (session: DatabaseHandle) => {
  await session.db.execute(sql`select pg_stat_force_next_flush()`);
  await session.db.execute(sql`select pg_stat_clear_snapshot()`);
  const [row] = await rows<{ reads: string }>(
    session.db,
    sql`select coalesce(blks_hit, 0) + coalesce(blks_read, 0) as reads from pg_statio_user_sequences where relname = 'access_changes_id_seq'`,
  );
  return Number(row!.reads);
};

/**
 * An unchanged reconcile compares every organization's members with their stored state, read before the
 * crawl, and must look once whether anything changed since (a webhook's write the compare could not see).
 * A statement per organization for that look was most of its statements, each a round trip the page
 * responses waited behind: it is made once for several organizations.
 */
describe.runIf(hasPostgresServer())('the statements of an unchanged reconcile', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  const organizationCount = 60;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 71, generate: { users: 600, organizations: organizationCount, organizationRoles: 3 } });
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  it('looks for changes made since the stored members were read once per batch of organizations, not once per organization', async () => {
    const withMembers = sim.state.listOrganizations().filter((organization) => sim.state.memberCount(organization.id) > 0).length;
    expect(withMembers).toBeGreaterThan(40);
    // One connection: every statement of the reconcile is counted by the backend the counts are read from.
    const session = database.separatePool(1);
    try {
      const before = await changeIdReads(session);
      const { counts } = await runFullSync(syncDepsFor(session, clientFor(sim)), { kind: 'reconcile', trigger: 'test' });
      const reads = (await changeIdReads(session)) - before;
      expect(counts.rowsWritten).toBe(0);
      // One with the stored members of each batch of 100 organizations, and one per 20 organizations crawled.
      expect(reads).toBeGreaterThan(0);
      expect(reads).toBeLessThanOrEqual(1 + Math.ceil(withMembers / 20) + 1);
    } finally {
      await session.close();
    }
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
});
