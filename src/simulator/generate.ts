import type { JsonObject } from './entities.js';
import { generateId, mulberry32, organizationIdLength, type Random, shuffled, standardIdLength, userIdLength } from './ids.js';
import type { TenantCounts, TenantState } from './state.js';

/**
 * A seeded, realistic tenant: heavy-tailed organization sizes (a few organizations with thousands
 * of members, many with a handful), a few users in very many organizations, members with zero to
 * three roles, suspended users and names well outside ASCII. The same seed always yields the same
 * tenant: ids, timestamps and all.
 */

export interface GenerateTenantOptions {
  /** Default 1. */
  seed?: number;
  /** Default 1000. */
  users?: number;
  /** Default 50. */
  organizations?: number;
  /** Default 6. */
  organizationRoles?: number;
  /** Members of the largest organization as a share of all users (0–0.5). Default 0.3. */
  largestOrganizationShare?: number;
  /** Default 0.03. */
  suspendedShare?: number;
  /**
   * Chances of a member holding 0, 1, 2 and 3 roles (normalised). Default [0.25, 0.5, 0.18, 0.07]:
   * about 1.07 roles per member.
   */
  memberRoleWeights?: readonly [number, number, number, number];
  /** `createdAt` of the first generated entity (epoch ms). Default 2025-01-01T00:00:00Z. */
  startTime?: number;
}

export interface GeneratedTenantSummary extends TenantCounts {
  /** Member counts of all generated organizations, largest first. */
  organizationSizes: number[];
  /** The users in the most organizations and how many. */
  busiestUser: { id: string; organizations: number } | undefined;
}

// [display, ASCII slug] pairs: names exercise Unicode, usernames must match /^[A-Z_a-z]\w*$/.
const firstNames: ReadonlyArray<readonly [string, string]> = [
  ['Zoë', 'zoe'], ['Ådne', 'adne'], ['李', 'li'], ['Łukasz', 'lukasz'], ['José', 'jose'], ['Søren', 'soren'],
  ['Ngọc', 'ngoc'], ['Chloé', 'chloe'], ['Þórður', 'thordur'], ['Анна', 'anna'], ['محمد', 'mohammed'],
  ['Émilie', 'emilie'], ['Jürgen', 'jurgen'], ['Aoife', 'aoife'], ['さくら', 'sakura'], ['Ana', 'ana'],
  ['Björk', 'bjork'], ['Dvořák', 'dvorak'], ['Alice', 'alice'], ['Bob', 'bob'], ['Carol', 'carol'],
  ['Dave', 'dave'], ['Eve', 'eve'], ['Mallory', 'mallory'], ['Trent', 'trent'], ['Ιωάννης', 'ioannis'],
];
const lastNames: readonly string[] = [
  'Ñúñez', 'Øvergård', '雷', 'Müller', 'Kowalczyk', "O'Brien", 'Nguyễn', 'Åström', 'Ødegaard', 'Иванова',
  'García-Márquez', 'Smith', 'Johnson', 'Çelik', 'Schrödinger', '山田', 'van der Berg', 'Da Silva', 'Ngata',
];
const nameSuffixes: readonly string[] = ['', '', '', '', '', '', ' 🦊', ' 🚀', ' (she/her)', ' Jr.'];
const companyNames: readonly string[] = [
  'Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli', 'Société Générale', 'Müller & Söhne', '株式会社テスト',
  'Ærø Fiskeri', 'Łódź Logistics', '🚀 Rocket Labs', 'Pied Piper', 'Wayne Enterprises', 'Çay Evi', 'Café Olé',
  'Stark Industries', 'Nakatomi', 'Cyberdyne', 'Soylent', 'Tyrell', 'Оникс', 'Vandelay Industries',
];
const departments: readonly string[] = ['engineering', 'sales', 'support', 'finance', 'légal', 'R&D'];
const baseRoleNames: readonly string[] = [
  'admin', 'member', 'viewer', 'billing', 'owner', 'editor', 'auditor', 'support', 'réviseur', 'guest',
];

const pick = <T>(items: readonly T[], random: Random): T => items[Math.floor(random() * items.length)] as T;

const defaultRoleWeights = [0.25, 0.5, 0.18, 0.07] as const;

/** 0–3 roles: most members hold one. */
const roleCount = (random: Random, weights: readonly number[]): number => {
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  let draw = random() * total;
  for (const [count, weight] of weights.entries()) {
    if (draw < weight) return count;
    draw -= weight;
  }
  return weights.length - 1;
};

const uniqueId = (length: number, random: Random, taken: (id: string) => boolean): string => {
  for (;;) {
    const id = generateId(length, random);
    if (!taken(id)) return id;
  }
};

export const generateTenant = (state: TenantState, options: GenerateTenantOptions = {}): GeneratedTenantSummary => {
  const random = mulberry32(options.seed ?? 1);
  const userCount = Math.max(0, Math.floor(options.users ?? 1000));
  const organizationCount = Math.max(0, Math.floor(options.organizations ?? 50));
  const roleTotal = Math.max(0, Math.floor(options.organizationRoles ?? 6));
  const largestShare = Math.min(0.5, Math.max(0, options.largestOrganizationShare ?? 0.3));
  const suspendedShare = Math.min(1, Math.max(0, options.suspendedShare ?? 0.03));
  let clock = options.startTime ?? Date.UTC(2025, 0, 1);
  const roleWeights = options.memberRoleWeights ?? defaultRoleWeights;

  // Roles.
  const roleIds: string[] = [];
  for (let index = 0; index < roleTotal; index += 1) {
    const name = baseRoleNames[index] ?? `role-${index + 1}`;
    const id = uniqueId(standardIdLength, random, (candidate) => state.getOrganizationRole(candidate) !== undefined);
    state.createOrganizationRole({ name, description: random() < 0.7 ? `Generated role ${name}` : null }, { id });
    roleIds.push(id);
  }

  // Users: strictly increasing createdAt, so `created_at desc` is a total order.
  const userIds: string[] = [];
  for (let index = 0; index < userCount; index += 1) {
    clock += 1000 + Math.floor(random() * 60_000);
    const [first, slug] = pick(firstNames, random);
    const name = `${first} ${pick(lastNames, random)}${pick(nameSuffixes, random)}`;
    const id = uniqueId(userIdLength, random, (candidate) => state.getUser(candidate) !== undefined);
    const customData: JsonObject = random() < 0.2 ? { department: pick(departments, random), employeeNumber: index + 1 } : {};
    state.createUser(
      {
        username: `${slug}_${index + 1}`,
        primaryEmail: random() < 0.9 ? `${slug}.${index + 1}@example.com` : null,
        primaryPhone: random() < 0.3 ? `1555${String(index).padStart(7, '0')}` : null,
        name,
        customData,
        isSuspended: random() < suspendedShare,
        hasPassword: random() < 0.7,
        lastSignInAt: random() < 0.6 ? clock + Math.floor(random() * 86_400_000) : null,
      },
      { id, createdAt: clock, updatedAt: clock + Math.floor(random() * 30 * 86_400_000) },
    );
    userIds.push(id);
  }

  // Organizations.
  const organizationIds: string[] = [];
  for (let index = 0; index < organizationCount; index += 1) {
    clock += 1000 + Math.floor(random() * 60_000);
    const id = uniqueId(organizationIdLength, random, (candidate) => state.getOrganization(candidate) !== undefined);
    state.createOrganization(
      {
        name: `${pick(companyNames, random)} ${index + 1}`,
        description: random() < 0.6 ? `Generated organization number ${index + 1}` : null,
        customData: random() < 0.3 ? { plan: pick(['free', 'pro', 'enterprise'], random) } : {},
      },
      { id, createdAt: clock },
    );
    organizationIds.push(id);
  }

  // Heavy-tailed sizes (Zipf, exponent 1): rank r gets about largest / r members. Ranks are
  // shuffled so the biggest organization is not always the first one created.
  const largest = Math.max(1, Math.round(userCount * largestShare));
  const ranks = shuffled(
    organizationIds.map((_, index) => index + 1),
    random,
  );
  const powerUsers = shuffled(userIds, random).slice(0, Math.max(1, Math.round(userCount * 0.01)));

  organizationIds.forEach((organizationId, index) => {
    if (userCount === 0 || random() < 0.03) return; // a few empty organizations
    const rank = ranks[index] as number;
    const jitter = 0.8 + random() * 0.4;
    const size = Math.min(userCount, Math.max(1, Math.round((largest / rank) * jitter)));
    const members = new Set<string>();
    // A few users belong to very many organizations.
    for (const userId of powerUsers) {
      if (members.size < size && random() < 0.3) members.add(userId);
    }
    while (members.size < size) members.add(userIds[Math.floor(random() * userCount)] as string);
    const memberIds = [...members];
    state.addMembers(organizationId, memberIds);
    if (roleIds.length === 0) return;
    for (const userId of memberIds) {
      const count = roleCount(random, roleWeights);
      if (count > 0) state.addMemberRoles(organizationId, userId, shuffled(roleIds, random).slice(0, count));
    }
  });

  let busiestUser: GeneratedTenantSummary['busiestUser'];
  for (const userId of userIds) {
    const organizations = state.listUserOrganizationIds(userId).length;
    if (!busiestUser || organizations > busiestUser.organizations) busiestUser = { id: userId, organizations };
  }
  return {
    ...state.counts(),
    organizationSizes: organizationIds.map((id) => state.memberCount(id)).sort((a, b) => b - a),
    busiestUser,
  };
};
