import { afterAll, beforeEach, expect } from 'vitest';
import type { LogtoClient, Page } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import type { DriftItem, DriftReport } from '../../src/sync/report.js';
import { mirrorState, tenantState } from './compare.js';
import type { TestDatabase } from './database.js';
import { clientFor, syncDepsFor } from './tenant.js';

/** A reconcile through `logto`, with its drift report. */
export const reconcileThrough = async (database: TestDatabase, logto: LogtoClient) => {
  const result = await runFullSync(syncDepsFor(database, logto), { kind: 'reconcile', trigger: 'test' });
  return { ...result, drift: (result.run.report as { drift: DriftReport }).drift };
};

/**
 * The hooks of a reconcile suite on one tenant and database (given once its `beforeAll` has set them):
 * each test starts from a database equal to the tenant, repaired by a reconcile from what the test
 * before it changed; both are closed after the last test.
 */
export const reconcileSuiteHooks = (suite: () => { database: TestDatabase; sim: SimulatedTenant }) => {
  afterAll(async () => {
    const { database, sim } = suite();
    await sim.close();
    await database.drop();
  });
  beforeEach(async () => {
    const { database, sim } = suite();
    await reconcileThrough(database, clientFor(sim));
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
};

const itemKey = (item: DriftItem) =>
  [item.kind, item.entity, item.userId, item.organizationId, item.organizationRoleId].map((part) => part ?? '').join('|');

/** Drift items in one order, so that two reports compare by content. */
export const sortItems = (items: DriftItem[]) => [...items].sort((a, b) => itemKey(a).localeCompare(itemKey(b)));

/** Yields the first page, then runs `between` before the caller applies it. */
export async function* interceptFirstPage<T>(pages: AsyncIterable<Page<T>>, between: () => Promise<void>): AsyncIterable<Page<T>> {
  let first = true;
  for await (const page of pages) {
    if (first) {
      first = false;
      await between();
    }
    yield page;
  }
}
