import { eq } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { organizationMemberRoles, organizationMembers } from '../../db/schema.js';
import type { LogtoClient, Page } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { applyMembers } from '../../src/sync/apply/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { interceptFirstPage, reconcileSuiteHooks, reconcileThrough } from '../helpers/reconcile.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/** Yields every page, then runs `after` before telling the caller the list has ended. */
async function* afterLastPage<T>(pages: AsyncIterable<Page<T>>, after: () => Promise<void>): AsyncIterable<Page<T>> {
  yield* pages;
  await after();
}

/** Yields the pages with the first one's `Total-Number` one higher: the list moved between its pages. */
async function* movedAfterFirstPage<T>(pages: AsyncIterable<Page<T>>): AsyncIterable<Page<T>> {
  let first = true;
  for await (const page of pages) {
    yield first && page.total !== null ? { ...page, total: page.total + 1 } : page;
    first = false;
  }
}

/**
 * A member stored during a reconcile's crawl (a webhook that read Logto earlier, whose removal event was
 * lost, or that never held) that no page of the crawl lists must be confirmed with Logto and removed,
 * whichever way the organization was crawled: listed as empty with nothing stored (no request made),
 * with nothing stored before its crawl, or in the second pass over a list that moved.
 */
describe('reconciling members stored during the crawl that no page lists', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let large: string;
  let empty: string;

  const outsiderOf = (organizationId: string) => sim.state.listUsers().find((user) => !sim.state.isMember(organizationId, user.id))!.id;
  const webhookAdds = (organizationId: string, userId: string) =>
    applyMembers(database.db, organizationId, [{ userId, organizationRoleIds: [] }], { source: 'webhook', observedAt: new Date() });
  const storedMemberCount = (organizationId: string) => database.db.$count(organizationMembers, eq(organizationMembers.organizationId, organizationId));
  /** Waits until the crawl has written members of the organization (its first pages are applied). */
  const untilStored = async (organizationId: string) => {
    while ((await storedMemberCount(organizationId)) === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  };
  /** A client whose member list of `organizationId` goes through `wrap` (the nth call of the crawl counted from 0). */
  const wrapping = (organizationId: string, wrap: (pages: AsyncIterable<Page<never>>, call: number) => AsyncIterable<Page<never>>): LogtoClient => {
    const real = clientFor(sim);
    let calls = 0;
    return {
      ...real,
      listOrganizationMembers: (id, options) =>
        id === organizationId ? (wrap(real.listOrganizationMembers(id, options) as AsyncIterable<Page<never>>, calls++) as ReturnType<LogtoClient['listOrganizationMembers']>) : real.listOrganizationMembers(id, options),
    };
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 33, generate: { users: 2_400, organizations: 4, organizationRoles: 4, largestOrganizationShare: 0.5 } });
    const bySize = [...sim.state.listOrganizations()].sort((a, b) => sim.state.memberCount(b.id) - sim.state.memberCount(a.id));
    large = bySize[0]!.id;
    empty = bySize[bySize.length - 1]!.id;
    for (const userId of [...sim.state.listMemberIds(empty)]) sim.state.removeMember(empty, userId);
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
  });
  reconcileSuiteHooks(() => ({ database, sim }));

  it('removes a member a webhook added to an organization Logto lists as empty, nothing stored, while other organizations were crawled', async () => {
    expect(sim.state.memberCount(empty)).toBe(0);
    expect(await storedMemberCount(empty)).toBe(0);
    const outsider = outsiderOf(empty);
    await reconcileThrough(database, wrapping(large, (pages) => interceptFirstPage(pages, async () => void (await webhookAdds(empty, outsider)))));
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('removes a member a webhook added during the crawl of an organization none of whose members were stored', async () => {
    expect(sim.state.memberCount(large)).toBeGreaterThan(1_000);
    // Its stored members lost: every page differs, and the crawl reads the stored members as it writes.
    await database.db.delete(organizationMemberRoles).where(eq(organizationMemberRoles.organizationId, large));
    await database.db.delete(organizationMembers).where(eq(organizationMembers.organizationId, large));
    const outsider = outsiderOf(large);
    await reconcileThrough(
      database,
      wrapping(large, (pages, call) =>
        call === 0
          ? afterLastPage(pages, async () => {
              await untilStored(large);
              await webhookAdds(large, outsider);
            })
          : pages,
      ),
    );
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('removes a member a webhook added during the second pass over a member list that moved', async () => {
    const outsider = outsiderOf(large);
    let passes = 0;
    await reconcileThrough(
      database,
      wrapping(large, (pages, call) => {
        passes = call + 1;
        if (call === 0) return movedAfterFirstPage(pages);
        if (call === 1) return afterLastPage(pages, async () => void (await webhookAdds(large, outsider)));
        return pages;
      }),
    );
    expect(passes).toBe(2);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });
});
