import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, syncRuns, webhookDeliveries } from '../../db/schema.js';
import { loadConfig, type Config } from '../../src/config.js';
import { insertDelivery } from '../../src/db/inbox.js';
import { silentLogger } from '../../src/logger.js';
import { startService, type Service } from '../../src/service.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startTenant, tenantEnvironment } from '../helpers/tenant.js';
import { eq } from 'drizzle-orm';

const apiKey = 'e2e-writer-secret-0123456789abcdef';

/** The whole service as it runs in production: HTTP, webhooks in, inbox worker, Logto over HTTP, one database. */
describe('the service end to end', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let service: Service;
  let config: Config;

  const start = async () => {
    service = await startService(config, { logger: silentLogger, jobs: false, database });
    sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);
  };
  const settle = async () => {
    await sim.webhooks.idle();
    await service.drainInbox();
  };
  const api = () => request(service.url);
  const auth = { authorization: `Bearer ${apiKey}` };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 5, generate: { users: 120, organizations: 10, organizationRoles: 4 } });
    config = loadConfig({
      ...tenantEnvironment(sim),
      PORT: '0',
      HOST: '127.0.0.1',
      API_KEYS: `e2e:write:${apiKey}`,
      LOG_LEVEL: 'silent',
    });
    await start();
  });
  afterAll(async () => {
    await service?.close();
    await sim.close();
    await database.drop();
  });

  it('runs the baseline at its first start and serves the result', async () => {
    for (let waited = 0; waited < 200; waited += 1) {
      const [run] = await database.db.select().from(syncRuns);
      if (run && run.status !== 'running') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const [run] = await database.db.select().from(syncRuns);
    expect(run).toMatchObject({ kind: 'baseline', trigger: 'start', status: 'succeeded' });
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const status = await api().get('/v1/sync/status').set(auth);
    expect(status.status).toBe(200);
    expect(status.headers['x-access-state-as-of']).not.toBe('never');
  });

  it('follows changes made in Logto through signed webhooks', async () => {
    const [first, second] = sim.state.listUsers();
    const organization = sim.state.listOrganizations()[0]!;
    const created = await sim.api.post('/users', { username: 'webhook_newcomer', name: 'Newcomer Ünïcode' });
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [created.body.id] });
    await sim.api.patch(`/users/${first!.id}`, { name: 'Renamed through a webhook' });
    await sim.api.patch(`/users/${second!.id}/is-suspended`, { isSuspended: true });
    await sim.api.delete(`/organization-roles/${sim.state.listOrganizationRoles()[0]!.id}`);
    await settle();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const webhookChanges = await database.db.select().from(accessChanges).where(eq(accessChanges.source, 'webhook'));
    expect(webhookChanges.map((change) => change.kind)).toEqual(
      expect.arrayContaining(['user.created', 'member.added', 'user.updated', 'user.suspended', 'organization_role.deleted']),
    );
    const access = await api().get('/v1/access').query({ userId: created.body.id, organizationId: organization.id }).set(auth);
    expect(access.body).toMatchObject({ member: true, isSuspended: false });
  });

  it('provisions through Logto and shows the result at once, before any webhook', async () => {
    const organization = sim.state.listOrganizations()[1]!;
    const outsider = sim.state.listUsers().find((user) => !sim.state.isMember(organization.id, user.id))!;
    const role = sim.state.listOrganizationRoles()[0]!;
    sim.webhooks.pause();
    try {
      const added = await api().post(`/v1/organizations/${organization.id}/members`).set(auth).send({ userIds: [outsider.id] });
      expect(added.status).toBe(201);
      const granted = await api()
        .post(`/v1/organizations/${organization.id}/members/${outsider.id}/roles`)
        .set(auth)
        .send({ organizationRoleIds: [role.id] });
      expect(granted.status).toBe(201);
      expect(sim.state.getMemberRoleIds(organization.id, outsider.id)).toEqual([role.id]);
      const access = await api().get('/v1/access').query({ userId: outsider.id, organizationId: organization.id, role: role.name }).set(auth);
      expect(access.body).toMatchObject({ member: true, hasRole: true, organizationRoles: [{ id: role.id, name: role.name }] });
      const provisioned = await database.db.select().from(accessChanges).where(eq(accessChanges.source, 'provision')).orderBy(accessChanges.id);
      expect(provisioned.map((change) => [change.kind, change.actor])).toEqual([
        ['member.added', 'e2e'],
        ['member_role.granted', 'e2e'],
      ]);
    } finally {
      sim.webhooks.resume();
    }
    // The echoes Logto sends afterwards find nothing left to change.
    const before = await database.db.$count(accessChanges);
    await settle();
    expect(await database.db.$count(accessChanges)).toBe(before);
  });

  it('applies after a restart a delivery stored but not yet applied when the process stopped', async () => {
    await service.close();
    const user = sim.state.updateUser(sim.state.listUsers()[4]!.id, { name: 'Changed while the service was down' });
    const payload = {
      event: 'User.Data.Updated',
      createdAt: new Date().toISOString(),
      path: `/users/${user.id}`,
      method: 'PATCH',
      status: 200,
      params: { userId: user.id },
      matchedRoute: '/users/:userId',
      data: user,
      hookId: sim.hookId,
    };
    // Exactly what the receiver commits before answering.
    await insertDelivery(database.db, { dedupKey: 'sha256:restart-test', channel: 'logto', payload });
    await start();
    await service.drainInbox();
    const [delivery] = await database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.dedupKey, 'sha256:restart-test'));
    expect(delivery?.status).toBe('applied');
    expect((await mirrorState(database.db)).users[user.id]?.name).toBe('Changed while the service was down');
  });
});
