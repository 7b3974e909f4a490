import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { routeTemplate, type SimulatedTenant, startSimulatedTenant } from '../../src/simulator/index.js';
import { accessToken, apiGet, fetchToken } from './helpers.js';

describe('simulated faults', () => {
  let sim: SimulatedTenant;
  let token: string;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
    token = await accessToken(sim);
  });
  afterEach(() => {
    sim.faults.reset();
    sim.faults.resetStats();
  });
  afterAll(() => sim.close());

  it('fails the next requests with 429 and Retry-After, then recovers', async () => {
    sim.faults.failNext(2, { status: 429, retryAfterSeconds: 7 });
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const response = await apiGet(sim, token, '/users');
      expect(response.status).toBe(429);
      expect(response.headers.get('retry-after')).toBe('7');
    }
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
  });

  it('fails only matching paths, including the token endpoint', async () => {
    sim.faults.failNext(1, { status: 503, paths: /^\/oidc\/token$/ });
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
    const failed = await fetchToken(sim);
    expect(failed.status).toBe(503);
    expect((await fetchToken(sim)).status).toBe(200);

    sim.faults.failNext(1, { status: 500, paths: /\/organizations/ });
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
    const internal = await apiGet(sim, token, '/organizations');
    expect(internal.status).toBe(500);
    expect(await internal.json()).toEqual({ message: 'Internal server error.' });
  });

  it('does not let the admin caller use up a fault meant for the client', async () => {
    sim.faults.failNext(1, { status: 502 });
    expect((await sim.api.get('/users')).status).toBe(200);
    expect((await apiGet(sim, token, '/users')).status).toBe(502);
  });

  it('answers 429 with Retry-After once the rate limit is exceeded', async () => {
    sim.faults.rateLimit({ requests: 3, perMs: 60_000 });
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 5; attempt += 1) statuses.push((await apiGet(sim, token, '/users')).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    const limited = await apiGet(sim, token, '/users');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    sim.faults.rateLimit(null);
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
  });

  it('never answers a hung request, so the client has to time out', async () => {
    sim.faults.hangNext(1);
    await expect(
      fetch(`${sim.baseUrl}/api/users`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(150) }),
    ).rejects.toThrow();
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
  });

  it('holds a matching request until released, then answers it normally; others pass meanwhile', async () => {
    const hold = sim.faults.holdNext({ paths: /^\/api\/organizations$/ });
    let answered = false;
    const held = apiGet(sim, token, '/organizations').then((response) => {
      answered = true;
      return response;
    });
    await hold.held;
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
    expect(answered).toBe(false);
    hold.release();
    expect((await held).status).toBe(200);
    expect((await apiGet(sim, token, '/organizations')).status).toBe(200);
  });

  it('counts requests by route template and status', async () => {
    const organization = sim.state.createOrganization({ name: 'Counted' }).id;
    await apiGet(sim, token, `/organizations/${organization}/users`);
    await apiGet(sim, token, '/organizations/other/users?page_size=2');
    await apiGet(sim, token, '/users?page_size=500');
    await sim.api.get('/users'); // the admin caller is not counted
    const stats = sim.stats();
    expect(stats.total).toBe(3);
    expect(stats.byRoute['GET /api/organizations/:id/users']).toEqual({ total: 2, byStatus: { '200': 2 } });
    expect(stats.byRoute['GET /api/users']).toEqual({ total: 1, byStatus: { '400': 1 } });
    expect(stats.byStatus).toEqual({ '200': 2, '400': 1 });
  });

  it('names routes as Logto does', () => {
    expect(routeTemplate('/api/organizations/abc/users/def/roles/ghi')).toBe(
      '/api/organizations/:id/users/:userId/roles/:organizationRoleId',
    );
    expect(routeTemplate('/api/organizations/abc/users/roles')).toBe('/api/organizations/:id/users/roles');
    expect(routeTemplate('/api/users/u1/custom-data')).toBe('/api/users/:userId/custom-data');
    expect(routeTemplate('/oidc/token')).toBe('/oidc/token');
  });
});
