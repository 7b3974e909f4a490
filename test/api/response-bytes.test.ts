import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, type TestApp } from './harness.js';
import { at, insertMemberships, insertUsers, seedTenant } from './seed.js';

/*
 * The read routes answer with exactly the bytes they answered before their responses were built
 * differently (in PostgreSQL instead of parsed rows shaped in Node). The fixture was recorded with the
 * previous implementation (`UPDATE_RESPONSE_FIXTURE=1` rewrites it): data meant to catch every
 * difference between PostgreSQL's JSON and JSON.stringify (microsecond timestamps, jsonb key order and
 * number forms, escapes, characters outside ASCII), and paths that walk every page.
 */
const fixture = new URL('../fixtures/api/read-responses.json', import.meta.url);

const trickyUsers = [
  {
    id: 'u-json',
    username: 'quote"back\\slash',
    primaryEmail: 'zoë@example.com',
    name: 'Tab\tNew\nline \u0001 \u001f \u2028 🦊 李',
    customData: {
      zz: 1.5,
      a: { nested: [1, 'two', null, true, { deep: -0.25 }] },
      big: 12345678901234567890,
      tiny: 1e-7,
      huge: 1e21,
      fraction: 0.30000000000000004,
      text: 'line\r\nbreak "quoted" \\ / \b \f',
      emoji: '🚀',
      empty: {},
      list: [],
    },
    profile: { givenName: 'Zoë', address: { locality: 'Łódź', postalCode: '90-001' } },
    avatar: 'https://example.com/a.png?x=1&y=2',
    applicationId: 'app-1',
    lastSignInAt: at('2024-05-01T08:00:00.123Z'),
    createdAt: at('2024-01-01T10:00:00.999Z'),
    updatedAt: at('2024-02-01T10:00:00.001Z'),
  },
  ...Array.from({ length: 7 }, (_, index) => ({
    id: `u-page-${index}`,
    username: index % 2 === 0 ? null : `page${index}`,
    name: index % 3 === 0 ? null : `Página ${index}`,
    customData: index % 2 === 0 ? {} : { index, flag: index % 4 === 1 },
  })),
];

const paths = [
  '/v1/users/alice',
  '/v1/users/u-json',
  '/v1/users/u-page-3',
  '/v1/users/dave',
  '/v1/users/alice/organizations',
  '/v1/users/u-json/organizations',
  '/v1/users/u-json/organizations?limit=1',
  '/v1/users/dave/organizations',
  '/v1/organizations/acme/members',
  '/v1/organizations/acme/members?limit=2',
  '/v1/organizations/acme/members?roleId=role-admin',
  '/v1/organizations/acme/members?roleName=member&limit=1',
  '/v1/organizations/globex/members',
  '/v1/organizations/initech/members',
  '/v1/organization-roles/role-admin/members',
  '/v1/organization-roles/role-member/members?limit=2',
  '/v1/organization-roles/role-viewer/members',
  '/v1/organization-roles/role-auditor/members',
  '/v1/access?userId=alice&organizationId=acme',
  '/v1/access?userId=u-json&organizationId=acme&role=admin',
  '/v1/access?userId=dave&organizationId=acme&role=admin',
];

type Recorded = { path: string; status: number; body: string };

describe('read responses keep their bytes', () => {
  let database: TestDatabase;
  let t: TestApp;
  beforeAll(async () => {
    database = await createTestDatabase();
    await seedTenant(database.db);
    await insertUsers(database.db, trickyUsers);
    await insertMemberships(database.db, [
      {
        organizationId: 'acme',
        userId: 'u-json',
        since: at('2024-03-01T00:00:00.000Z'),
        roles: [
          { id: 'role-member', since: at('2024-03-01T00:00:00.000Z') },
          { id: 'role-viewer', since: at('2024-03-01T00:00:00.000Z') },
        ],
      },
      { organizationId: 'globex', userId: 'u-json', since: at('2024-03-01T00:00:00.000Z') },
      ...trickyUsers.slice(1).map((user, index) => ({
        organizationId: 'acme',
        userId: user.id,
        since: at('2024-03-01T00:00:00.000Z'),
        roles: index % 2 === 0 ? [{ id: 'role-admin', since: at('2024-03-01T00:00:00.000Z') }] : [],
      })),
    ]);
    // Timestamps written by PostgreSQL's now() carry microseconds, which JavaScript dates do not.
    await database.db.execute(sql`update organization_members set since = since + interval '0.291999 seconds' where user_id = 'u-json'`);
    await database.db.execute(sql`update organization_member_roles set since = since + interval '0.000001 seconds' where user_id = 'u-json'`);
    await database.db.execute(sql`update organization_member_roles set since = since + interval '0.999999 seconds' where user_id = 'u-page-0'`);
    await database.db.execute(sql`update users set last_sign_in_at = '2024-05-01 08:00:00.579500+00' where id = 'u-page-1'`);
    t = await createTestApp(database.db);
  });
  afterAll(async () => {
    await database.drop();
  });

  const record = async (): Promise<Recorded[]> => {
    const recorded: Recorded[] = [];
    for (const path of paths) {
      // Every page: the cursor of each page is part of the bytes.
      let next: string | null = path;
      while (next) {
        const response = await t.get(next);
        recorded.push({ path: next, status: response.status, body: response.text });
        const cursor = response.status === 200 ? (JSON.parse(response.text) as { nextCursor?: string | null }).nextCursor : null;
        next = cursor ? `${path}${path.includes('?') ? '&' : '?'}cursor=${cursor}` : null;
      }
    }
    return recorded;
  };

  it('answers every read route with the recorded bytes', async () => {
    const recorded = await record();
    if (process.env.UPDATE_RESPONSE_FIXTURE === '1' || !existsSync(fixture)) {
      writeFileSync(fixture, `${JSON.stringify(recorded, null, 2)}\n`);
    }
    const expected = JSON.parse(readFileSync(fixture, 'utf8')) as Recorded[];
    expect(recorded.map((entry) => entry.path)).toEqual(expected.map((entry) => entry.path));
    for (const [index, entry] of recorded.entries()) expect(entry, entry.path).toEqual(expected[index]);
    // The recording covers what it is meant to: multi-page walks, members with and without roles, a 404.
    expect(recorded.filter((entry) => entry.path.includes('cursor=')).length).toBeGreaterThan(5);
    expect(recorded.some((entry) => entry.status === 404)).toBe(false);
    expect(recorded.some((entry) => entry.body.includes('.291Z'))).toBe(true);
  });
});
