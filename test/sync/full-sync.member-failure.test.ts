import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows } from '../../src/db/client.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/** Makes every insert of a membership of `organizationId` fail, as a write that breaks part-way would. */
const failMembershipsOf = async (database: TestDatabase, organizationId: string) => {
  await database.db.execute(sql.raw(`create or replace function test_fail_membership() returns trigger language plpgsql as $$
    begin
      if new.organization_id = '${organizationId}' then raise exception 'membership write failed for the test'; end if;
      return new;
    end $$`));
  await database.db.execute(sql`create trigger test_fail_membership before insert on organization_members for each row execute function test_fail_membership()`);
};
const stopFailing = (database: TestDatabase) => database.db.execute(sql`drop trigger if exists test_fail_membership on organization_members`);

const count = async (database: TestDatabase, query: ReturnType<typeof sql>) => (await rows<{ n: number }>(database.db, query))[0]!.n;

/** Exactly one change row per stored membership and member role, and none for anything else of the kind. */
const expectOneChangeEach = async (database: TestDatabase) => {
  expect(
    await count(database, sql`select count(*)::int as n from (select organization_id, user_id from access_changes where kind = 'member.added' group by 1, 2 having count(*) <> 1) d`),
  ).toBe(0);
  expect(await count(database, sql`select count(*)::int as n from access_changes where kind = 'member.added'`)).toBe(
    await count(database, sql`select count(*)::int as n from organization_members`),
  );
  expect(
    await count(
      database,
      sql`select count(*)::int as n from (select organization_id, user_id, organization_role_id from access_changes where kind = 'member_role.granted' group by 1, 2, 3 having count(*) <> 1) d`,
    ),
  ).toBe(0);
  expect(await count(database, sql`select count(*)::int as n from access_changes where kind = 'member_role.granted'`)).toBe(
    await count(database, sql`select count(*)::int as n from organization_member_roles`),
  );
};

/** Many organizations of one member page each: the shape most of a tenant's organizations have. */
describe('a baseline of many one-page organizations', () => {
  let sim: SimulatedTenant;
  const databases: TestDatabase[] = [];
  const freshDatabase = async () => {
    const database = await createTestDatabase();
    databases.push(database);
    return database;
  };

  beforeAll(async () => {
    sim = await startTenant({ seed: 31, generate: { users: 400, organizations: 40, organizationRoles: 4, largestOrganizationShare: 0.2 } });
  });
  afterAll(async () => {
    await sim.close();
    for (const database of databases) await database.drop();
  });

  const small = () =>
    sim.state
      .listOrganizations()
      .map((organization) => organization.id)
      .filter((id) => sim.state.memberCount(id) > 0 && sim.state.memberCount(id) <= 100);

  it('a baseline failing on one organization fails, removes nothing, and the run after it continues to the exact state', async () => {
    const database = await freshDatabase();
    const deps = syncDepsFor(database, clientFor(sim));
    const [, failing] = small().sort();
    await failMembershipsOf(database, failing!);
    const failed = await runFullSync(deps, { kind: 'baseline', trigger: 'test' }).catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(Error);
    expect(await count(database, sql`select count(*)::int as n from organization_members where organization_id = ${failing!}`)).toBe(0);
    expect(await count(database, sql`select count(*)::int as n from access_changes where kind like '%removed' or kind like '%revoked' or kind like '%deleted'`)).toBe(0);
    // Not recorded as done: the run after it crawls that organization again.
    expect(
      await count(database, sql`select count(*)::int as n from sync_seen where entity = 'organization_members' and id = ${failing!}`),
    ).toBe(0);

    // Nor is any organization whose members the failure left unwritten (those crawled together with it).
    expect(
      await count(
        database,
        sql`select count(*)::int as n from sync_seen s where s.entity = 'organization_members'
          and s.id = any(${sql.param(small())}::text[]) and not exists (select from organization_members m where m.organization_id = s.id)`,
      ),
    ).toBe(0);

    await stopFailing(database);
    const { run, resumedFrom } = await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    expect(resumedFrom).not.toBeNull();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    await expectOneChangeEach(database);
  });

  it('writes the members of small organizations in a transaction per group of them, not one per organization', async () => {
    const database = await freshDatabase();
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    await expectOneChangeEach(database);
    const organizations = small();
    expect(organizations.length).toBeGreaterThan(20);
    // The transactions that inserted their memberships (each row's xmin): one per organization when applied one by one.
    const transactions = await count(
      database,
      sql`select count(distinct xmin::text)::int as n from organization_members where organization_id = any(${sql.param(organizations)}::text[])`,
    );
    expect(transactions).toBeLessThanOrEqual(Math.ceil(organizations.length / 4));
  });
});
