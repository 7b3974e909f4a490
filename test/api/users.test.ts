import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, walk, type TestApp } from './harness.js';
import { insertMemberships, insertUsers, seedTenant, type Tenant } from './seed.js';

describe('users', () => {
  let database: TestDatabase;
  let t: TestApp;
  let tenant: Tenant;
  beforeAll(async () => {
    database = await createTestDatabase();
    tenant = await seedTenant(database.db);
    t = await createTestApp(database.db);
  });
  afterAll(async () => {
    await database.drop();
  });

  const ids = (body: { data: { id: string }[] }) => body.data.map((item) => item.id);

  describe('GET /v1/users', () => {
    it('lists every user ordered by id, with Logto field names and ISO timestamps', async () => {
      const response = await t.get('/v1/users').expect(200);
      expect(response.headers['content-type']).toMatch(/^application\/json/);
      expect(ids(response.body)).toEqual(['alice', 'bob', 'carol', 'dave', 'erin']);
      expect(response.body.nextCursor).toBeNull();
      const alice = tenant.users.find((user) => user.id === 'alice')!;
      expect(response.body.data[0]).toEqual({
        id: 'alice',
        username: 'alice',
        primaryEmail: 'alice@example.com',
        primaryPhone: null,
        name: 'Alice Liddell',
        avatar: null,
        isSuspended: false,
        customData: { team: 'red' },
        profile: { givenName: 'Alice' },
        applicationId: null,
        lastSignInAt: '2024-05-01T08:00:00.000Z',
        createdAt: alice.createdAt.toISOString(),
        updatedAt: alice.updatedAt.toISOString(),
      });
    });

    it('searches username, primaryEmail and name case-insensitively', async () => {
      expect(ids((await t.get('/v1/users?search=ALI').expect(200)).body)).toEqual(['alice', 'erin']); // name "Erin Alison"
      expect(ids((await t.get('/v1/users?search=corp.EXAMPLE').expect(200)).body)).toEqual(['carol']);
      expect(ids((await t.get('/v1/users?search=builder').expect(200)).body)).toEqual(['bob']);
    });

    it('treats % and _ in a search as plain characters', async () => {
      expect(ids((await t.get('/v1/users?search=%25').expect(200)).body)).toEqual(['dave']);
      expect(ids((await t.get('/v1/users?search=e_1').expect(200)).body)).toEqual(['dave']);
    });

    it('filters by isSuspended', async () => {
      expect(ids((await t.get('/v1/users?isSuspended=true').expect(200)).body)).toEqual(['carol']);
      expect(ids((await t.get('/v1/users?isSuspended=false').expect(200)).body)).toEqual(['alice', 'bob', 'dave', 'erin']);
    });

    it('filters by organizationId, and combines filters', async () => {
      expect(ids((await t.get('/v1/users?organizationId=acme').expect(200)).body)).toEqual(['alice', 'bob', 'carol']);
      expect(ids((await t.get('/v1/users?organizationId=acme&isSuspended=false&search=b').expect(200)).body)).toEqual(['bob']);
      expect(ids((await t.get('/v1/users?organizationId=initech').expect(200)).body)).toEqual([]);
    });

    it('pages with limit and cursor', async () => {
      const first = await t.get('/v1/users?limit=2').expect(200);
      expect(ids(first.body)).toEqual(['alice', 'bob']);
      expect(typeof first.body.nextCursor).toBe('string');
      const second = await t.get(`/v1/users?limit=2&cursor=${first.body.nextCursor}`).expect(200);
      expect(ids(second.body)).toEqual(['carol', 'dave']);
      const third = await t.get(`/v1/users?limit=2&cursor=${second.body.nextCursor}`).expect(200);
      expect(ids(third.body)).toEqual(['erin']);
      expect(third.body.nextCursor).toBeNull();
    });

    it('pages through the members of an organization', async () => {
      const { items, pages } = await walk<{ id: string }>(async (cursor) =>
        (await t.get(`/v1/users?organizationId=acme&limit=1${cursor ? `&cursor=${cursor}` : ''}`).expect(200)).body,
      );
      expect(items.map((user) => user.id)).toEqual(['alice', 'bob', 'carol']);
      expect(pages).toBe(3);
    });

    it('rejects bad parameters with a 400 naming each', async () => {
      for (const [query, name] of [
        ['limit=0', 'limit'],
        ['limit=501', 'limit'],
        ['limit=abc', 'limit'],
        ['limit=1.5', 'limit'],
        ['cursor=garbage!', 'cursor'],
        ['cursor=bm90LWpzb24', 'cursor'],
        [`cursor=${Buffer.from('[42]').toString('base64url')}`, 'cursor'],
        ['isSuspended=yes', 'isSuspended'],
        ['organizationId=bad%20id', 'organizationId'],
        ['organisationId=acme', 'organisationId'],
        ['search=a&search=b', 'search'],
      ] as const) {
        const response = await t.get(`/v1/users?${query}`);
        expectProblem(response, 400, 'invalid_params');
        expect(invalidParamNames(response), query).toEqual([name]);
      }
    });
  });

  describe('GET /v1/users/:id', () => {
    it('returns the user with each organization, its roles and since', async () => {
      const response = await t.get('/v1/users/alice').expect(200);
      expect(response.body).toMatchObject({ id: 'alice', username: 'alice', isSuspended: false });
      expect(response.body.organizations).toEqual([
        {
          id: 'acme',
          name: 'Acme Corp',
          description: 'Anvils and rockets',
          since: '2024-03-01T00:00:00.000Z',
          organizationRoles: [
            { id: 'role-admin', name: 'admin', since: '2024-03-02T00:00:00.000Z' },
            { id: 'role-member', name: 'member', since: '2024-03-01T00:00:00.000Z' },
          ],
        },
        {
          id: 'globex',
          name: 'Globex',
          description: 'Global exports',
          since: '2024-04-01T00:00:00.000Z',
          organizationRoles: [{ id: 'role-viewer', name: 'viewer', since: '2024-04-01T12:00:00.000Z' }],
        },
      ]);
    });

    it('gives a user without memberships an empty list', async () => {
      const response = await t.get('/v1/users/dave').expect(200);
      expect(response.body.organizations).toEqual([]);
      expect(response.body.username).toBe('dave_100%');
    });

    it('answers 404 for an unknown id and 400 for a malformed one', async () => {
      const missing = expectProblem(await t.get('/v1/users/nobody'), 404, 'not_found');
      expect(missing.instance).toBe('/v1/users/nobody');
      const malformed = await t.get(`/v1/users/${'x'.repeat(129)}`);
      expectProblem(malformed, 400, 'invalid_params');
      expect(invalidParamNames(malformed)).toEqual(['id']);
      expect(invalidParamNames(await t.get('/v1/users/bad%20id'))).toEqual(['id']);
    });
  });

  describe('GET /v1/users/:id/organizations', () => {
    it("lists the user's organizations with roles and since", async () => {
      const response = await t.get('/v1/users/alice/organizations').expect(200);
      expect(response.body.nextCursor).toBeNull();
      expect(response.body.data.map((organization: { id: string }) => organization.id)).toEqual(['acme', 'globex']);
      expect(response.body.data[1]).toEqual({
        id: 'globex',
        name: 'Globex',
        description: 'Global exports',
        organizationRoles: [{ id: 'role-viewer', name: 'viewer', since: '2024-04-01T12:00:00.000Z' }],
        since: '2024-04-01T00:00:00.000Z',
      });
      expect((await t.get('/v1/users/erin/organizations').expect(200)).body.data[0].organizationRoles).toEqual([]);
    });

    it('pages, answers an empty list for a user without organizations and 404 for an unknown user', async () => {
      const first = await t.get('/v1/users/alice/organizations?limit=1').expect(200);
      expect(first.body.data.map((organization: { id: string }) => organization.id)).toEqual(['acme']);
      const second = await t.get(`/v1/users/alice/organizations?limit=1&cursor=${first.body.nextCursor}`).expect(200);
      expect(second.body.data.map((organization: { id: string }) => organization.id)).toEqual(['globex']);
      expect(second.body.nextCursor).toBeNull();
      expect((await t.get('/v1/users/dave/organizations').expect(200)).body).toEqual({ data: [], nextCursor: null });
      expectProblem(await t.get('/v1/users/nobody/organizations'), 404, 'not_found');
    });

    it('follows changes to the data at once', async () => {
      await insertUsers(database.db, [{ id: 'frank', username: 'frank' }]);
      await insertMemberships(database.db, [{ organizationId: 'initech', userId: 'frank', since: new Date('2024-08-01T00:00:00Z') }]);
      const response = await t.get('/v1/users/frank/organizations').expect(200);
      expect(response.body.data).toEqual([
        { id: 'initech', name: 'Initech', description: null, organizationRoles: [], since: '2024-08-01T00:00:00.000Z' },
      ]);
    });
  });
});
