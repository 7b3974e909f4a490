import { sql } from 'drizzle-orm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rows } from '../../src/db/client.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { applyMembers, gatherMemberWrites, type MemberWrites } from '../../src/sync/apply/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, hasPostgresServer, type TestDatabase } from '../helpers/database.js';
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
describe('member pages of small organizations written together', () => {
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

  it('lands exactly, several organizations per transaction, with one change per membership and member role; a re-run writes nothing', async () => {
    const database = await freshDatabase();
    const deps = syncDepsFor(database, clientFor(sim));
    expect(small().length).toBeGreaterThan(20);
    const { run } = await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    await expectOneChangeEach(database);
    // Each transaction's change rows share one time (`at`): fewer times than organizations means pages of
    // several organizations shared a transaction.
    const organizationsWritten = await count(database, sql`select count(distinct organization_id)::int as n from access_changes where kind = 'member.added'`);
    const transactions = await count(database, sql`select count(distinct at)::int as n from access_changes where kind = 'member.added'`);
    expect(organizationsWritten).toBeGreaterThan(20);
    expect(transactions).toBeLessThan(organizationsWritten);

    const changesBefore = await count(database, sql`select count(*)::int as n from access_changes`);
    const again = await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
    expect(again.counts.rowsWritten).toBe(0);
    expect(await count(database, sql`select count(*)::int as n from access_changes`)).toBe(changesBefore);
  });

  it.skipIf(!hasPostgresServer())('a page that fails fails every page of its transaction, leaves their previous state, and the next write lands each once', async () => {
    const database = await freshDatabase();
    const deps = syncDepsFor(database, clientFor(sim));
    expect((await runFullSync(deps, { kind: 'baseline', trigger: 'test' })).run.status).toBe('succeeded');
    const changesBefore = await count(database, sql`select count(*)::int as n from access_changes`);
    // A new user joins three small organizations, whose pages are written together; one of them fails.
    const joining = sim.state.createUser({ username: 'joins-three-organizations' });
    const blocking = sim.state.createUser({ username: 'holds-the-writes-back' });
    const [held, first, second, third] = small().sort();
    for (const id of [first!, second!, third!]) sim.state.addMembers(id, [joining.id]);
    sim.state.addMembers(held!, [blocking.id]);
    await failMembershipsOf(database, second!);
    const logto = clientFor(sim);
    const context = { source: 'reconcile' as const, observedAt: new Date(), actor: 'test' };

    // One transaction at a time, the first held back by the entity lock of the user it brings (taken here),
    // so that the three pages compared meanwhile wait together for the next.
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    const lockQuery = (fn: string) => ({ text: `select ${fn}(hashtextextended($1, 0))`, values: [`user:${blocking.id}`] });
    await locker.query(lockQuery('pg_advisory_lock'));
    const inner = gatherMemberWrites(database.db, { concurrency: 1 });
    let submitted = 0;
    const writes: MemberWrites = {
      write: (page) => {
        submitted += 1;
        // The held page and the three behind it are all waiting: let the first transaction go.
        if (submitted === 4) void locker.query(lockQuery('pg_advisory_unlock'));
        return inner.write(page);
      },
    };
    const heldWrite = applyMembers(database.db, held!, [{ userId: blocking.id, organizationRoleIds: [] }], context, {
      users: [(await logto.getUser(blocking.id))!],
      writes,
    });
    // Until its transaction waits for the lock.
    for (;;) {
      const waiting = await count(database, sql`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())`);
      if (waiting > 0) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    const user = (await logto.getUser(joining.id))!;
    const applied = await Promise.allSettled(
      [first!, second!, third!].map((id) => applyMembers(database.db, id, [{ userId: joining.id, organizationRoleIds: [] }], context, { users: [user], writes })),
    );
    expect((await heldWrite).rowsWritten).toBeGreaterThan(0);
    await locker.end();
    expect(applied.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected', 'rejected']);
    // Nothing of the three pages: not the user they brought, no membership, no change row.
    expect(await count(database, sql`select count(*)::int as n from users where id = ${joining.id}`)).toBe(0);
    expect(await count(database, sql`select count(*)::int as n from organization_members where user_id = ${joining.id}`)).toBe(0);
    expect(await count(database, sql`select count(*)::int as n from access_changes where user_id = ${joining.id}`)).toBe(0);
    expect(await count(database, sql`select count(*)::int as n from access_changes where id > 0`)).toBeGreaterThan(changesBefore);

    await stopFailing(database);
    const { run } = await runFullSync(deps, { kind: 'reconcile', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    await expectOneChangeEach(database);
    expect(await count(database, sql`select count(*)::int as n from access_changes where kind like '%removed' or kind like '%revoked' or kind like '%deleted'`)).toBe(0);
  });

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

    await stopFailing(database);
    const { run, resumedFrom } = await runFullSync(deps, { kind: 'baseline', trigger: 'test' });
    expect(run.status).toBe('succeeded');
    expect(resumedFrom).not.toBeNull();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    await expectOneChangeEach(database);
  });
});
