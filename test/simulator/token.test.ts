import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatedTenant, startSimulatedTenant } from '../../src/simulator/index.js';
import { apiGet, fetchToken } from './helpers.js';

describe('simulated token endpoint', () => {
  let sim: SimulatedTenant;

  beforeAll(async () => {
    sim = await startSimulatedTenant();
  });
  afterAll(() => sim.close());

  it('issues a Bearer token with scope "all" for HTTP Basic client credentials', async () => {
    const response = await fetchToken(sim);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual(['access_token', 'expires_in', 'token_type', 'scope']);
    expect(body).toMatchObject({ expires_in: 3600, token_type: 'Bearer', scope: 'all' });
    expect((await apiGet(sim, body.access_token as string, '/users')).status).toBe(200);
  });

  it('accepts client_secret_post but not both mechanisms at once', async () => {
    const post = await fetchToken(sim, { client_id: sim.clientId, client_secret: sim.clientSecret }, null);
    expect(post.status).toBe(200);
    const both = await fetchToken(sim, { client_id: sim.clientId, client_secret: sim.clientSecret });
    expect(both.status).toBe(400);
    expect(((await both.json()) as { error: string }).error).toBe('invalid_request');
  });

  it('answers 401 invalid_client for a wrong secret or client', async () => {
    for (const credentials of [`${sim.clientId}:wrong`, `someone-else:${sim.clientSecret}`]) {
      const response = await fetchToken(sim, {}, `Basic ${Buffer.from(credentials).toString('base64')}`);
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({ error: 'invalid_client', error_description: 'client authentication failed' });
    }
  });

  it('answers invalid_target for a missing or unknown resource and rejects other grants', async () => {
    const missing = await fetchToken(sim, { resource: '' });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: string }).error).toBe('invalid_target');
    const unknown = await fetchToken(sim, { resource: 'https://elsewhere.example/api' });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: string }).error).toBe('invalid_target');
    const grant = await fetchToken(sim, { grant_type: 'password' });
    expect(grant.status).toBe(400);
    expect(((await grant.json()) as { error: string }).error).toBe('unsupported_grant_type');
  });

  it('issues a token without scope when "all" is not requested, and the API then answers 403', async () => {
    const response = await fetchToken(sim, { scope: '' });
    const body = (await response.json()) as { access_token: string; scope: string };
    expect(body.scope).toBe('');
    const api = await apiGet(sim, body.access_token, '/users');
    expect(api.status).toBe(403);
    expect(await api.json()).toEqual({ code: 'auth.forbidden', message: 'Forbidden. Please check your user roles and permissions.' });
  });

  it('answers 401 for a missing header, another scheme and an unknown token', async () => {
    const noHeader = await fetch(`${sim.baseUrl}/api/users`);
    expect(noHeader.status).toBe(401);
    expect(((await noHeader.json()) as { code: string }).code).toBe('auth.authorization_header_missing');
    const basic = await fetch(`${sim.baseUrl}/api/users`, { headers: { authorization: 'Basic abc' } });
    expect(basic.status).toBe(401);
    expect(((await basic.json()) as { code: string }).code).toBe('auth.authorization_token_type_not_supported');
    const unknown = await apiGet(sim, 'not-a-token', '/users');
    expect(unknown.status).toBe(401);
    expect(((await unknown.json()) as { code: string }).code).toBe('auth.unauthorized');
  });

  it('rejects tokens after expireAllTokens()', async () => {
    const { access_token: token } = (await (await fetchToken(sim)).json()) as { access_token: string };
    expect((await apiGet(sim, token, '/users')).status).toBe(200);
    sim.expireAllTokens();
    const expired = await apiGet(sim, token, '/users');
    expect(expired.status).toBe(401);
    expect(((await expired.json()) as { code: string }).code).toBe('auth.unauthorized');
  });
});

describe('simulated token endpoint options', () => {
  it('grants no scope when the app lacks the "all" permission', async () => {
    const sim = await startSimulatedTenant({ grantAllScope: false });
    try {
      const body = (await (await fetchToken(sim)).json()) as { access_token: string; scope: string };
      expect(body.scope).toBe('');
      expect((await apiGet(sim, body.access_token, '/organizations')).status).toBe(403);
    } finally {
      await sim.close();
    }
  });

  it('expires tokens after tokenTtlSeconds and accepts resource "self"', async () => {
    const sim = await startSimulatedTenant({ tokenTtlSeconds: 0, resource: 'self' });
    try {
      expect(sim.resource).toBe(`${sim.baseUrl}/api`);
      const body = (await (await fetchToken(sim)).json()) as { access_token: string; expires_in: number };
      expect(body.expires_in).toBe(0);
      expect((await apiGet(sim, body.access_token, '/users')).status).toBe(401);
    } finally {
      await sim.close();
    }
  });

  it('uses the tenant id in the default resource', async () => {
    const sim = await startSimulatedTenant({ tenantId: 'abc123' });
    try {
      expect(sim.resource).toBe('https://abc123.logto.app/api');
      const organization = sim.state.createOrganization({ name: 'x' });
      expect(organization.tenantId).toBe('abc123');
    } finally {
      await sim.close();
    }
  });
});
