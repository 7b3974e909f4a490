import type { SimulatedTenant } from '../../src/simulator/index.js';

export type Random = () => number;

const pick = <T>(random: Random, items: readonly T[]): T | undefined => items[Math.floor(random() * items.length)];

/**
 * One random administrator change made through the simulated Management API, of a kind Logto sends a
 * webhook for (users created, renamed, suspended or deleted; members added or removed), so the
 * deliveries alone can bring a mirror to the tenant's state. Returns what it did, for failure messages.
 */
export const randomEventfulChange = async (sim: SimulatedTenant, random: Random, serial: number): Promise<string> => {
  const users = sim.state.listUsers();
  const organizations = sim.state.listOrganizations();
  const roll = random();
  if (roll < 0.15 || users.length < 5) {
    const created = await sim.api.post('/users', { username: `crash_${serial}_${Math.floor(random() * 1e6)}`, name: `Crash ${serial}` });
    return `created user ${created.body.id}`;
  }
  const user = pick(random, users)!;
  const organization = pick(random, organizations);
  if (roll < 0.35) {
    await sim.api.patch(`/users/${user.id}`, { name: `Renamed ${serial}` });
    return `renamed ${user.id}`;
  }
  if (roll < 0.45) {
    await sim.api.patch(`/users/${user.id}/is-suspended`, { isSuspended: !user.isSuspended });
    return `toggled suspension of ${user.id}`;
  }
  if (roll < 0.5) {
    await sim.api.delete(`/users/${user.id}`);
    return `deleted user ${user.id}`;
  }
  if (!organization) return 'nothing (no organization)';
  if (roll < 0.8) {
    const outsiders = users.filter((candidate) => !sim.state.isMember(organization.id, candidate.id)).slice(0, 40);
    const chosen = [pick(random, outsiders), pick(random, outsiders)].filter((id): id is NonNullable<typeof id> => id !== undefined);
    const userIds = [...new Set(chosen.map((candidate) => candidate.id))];
    if (userIds.length === 0) return 'nothing (organization full)';
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds });
    return `added ${userIds.join(',')} to ${organization.id}`;
  }
  const member = pick(random, sim.state.listMemberIds(organization.id));
  if (!member) return 'nothing (organization empty)';
  await sim.api.delete(`/organizations/${organization.id}/users/${member}`);
  return `removed ${member} from ${organization.id}`;
};

/**
 * One random change to member roles, made in the tenant's state directly: Logto sends no webhook when
 * a member's organization roles change, so only the role sweep or a reconcile can find it.
 */
export const randomSilentRoleChange = (sim: SimulatedTenant, random: Random): void => {
  const organization = pick(random, sim.state.listOrganizations());
  if (!organization) return;
  const member = pick(random, sim.state.listMemberIds(organization.id));
  if (!member) return;
  const roles = sim.state.listOrganizationRoles().filter(() => random() < 0.4).map((role) => role.id);
  sim.state.setMemberRoles(organization.id, member, roles);
};
