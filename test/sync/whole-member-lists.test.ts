import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogtoOrganizationMember } from '../../src/logto/index.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { WholeMemberListComparer } from '../../src/sync/whole-member-lists.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

/** Whole member lists compared with the stored state several organizations at a time (an unchanged reconcile's small organizations). */
describe('comparing whole member lists with the stored state', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let lists: { organizationId: string; members: LogtoOrganizationMember[] }[];

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 31, generate: { users: 120, organizations: 8, organizationRoles: 4 } });
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
    const logto = clientFor(sim);
    lists = [];
    for (const organization of sim.state.listOrganizations()) {
      const members: LogtoOrganizationMember[] = [];
      for await (const page of logto.listOrganizationMembers(organization.id)) members.push(...page.items);
      // Members holding roles, so that a role can be taken away and another added.
      if (members.some((member) => member.organizationRoles.length > 0) && members.length >= 2) lists.push({ organizationId: organization.id, members });
    }
    expect(lists.length).toBeGreaterThanOrEqual(6);
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  it('finds unchanged lists the same, several at once', async () => {
    const comparer = new WholeMemberListComparer(database.db);
    const answers = await Promise.all(lists.map((list) => comparer.sameAsStored(list.organizationId, list.members)));
    expect(answers).toEqual(lists.map(() => true));
  });

  it('finds a list different when a member or member role is missing or extra, or the organization is not stored, and only that list', async () => {
    const [same, lacking, extra, lessRoles, moreRoles, unchanged] = lists;
    const withRoles = (members: LogtoOrganizationMember[]) => members.findIndex((member) => member.organizationRoles.length > 0);
    const outsider = lists
      .flatMap((list) => list.members)
      .find((candidate) => !extra!.members.some((member) => member.id === candidate.id))!;
    const lessRolesAt = withRoles(lessRoles!.members);
    const moreRolesAt = withRoles(moreRoles!.members);
    const allRoles = sim.state.listOrganizationRoles().map((role) => ({ id: role.id, name: role.name }));
    const missingRole = allRoles.find((role) => !moreRoles!.members[moreRolesAt]!.organizationRoles.some((held) => held.id === role.id))!;
    const cases: [string, LogtoOrganizationMember[], boolean][] = [
      [same!.organizationId, same!.members, true],
      [lacking!.organizationId, lacking!.members.slice(1), false],
      [extra!.organizationId, [...extra!.members, { ...outsider, organizationRoles: [] }], false],
      [
        lessRoles!.organizationId,
        lessRoles!.members.map((member, index) => (index === lessRolesAt ? { ...member, organizationRoles: member.organizationRoles.slice(1) } : member)),
        false,
      ],
      [
        moreRoles!.organizationId,
        moreRoles!.members.map((member, index) => (index === moreRolesAt ? { ...member, organizationRoles: [...member.organizationRoles, missingRole] } : member)),
        false,
      ],
      ['org_not_stored', same!.members, false],
      [unchanged!.organizationId, unchanged!.members, true],
    ];
    const comparer = new WholeMemberListComparer(database.db);
    const answers = await Promise.all(cases.map(([organizationId, members]) => comparer.sameAsStored(organizationId, members)));
    expect(answers).toEqual(cases.map(([, , expected]) => expected));
  });
});
