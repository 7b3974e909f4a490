import { createHmac } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type SimulatedTenant, startSimulatedTenant } from '../../src/simulator/index.js';
import { recordedSigningKey } from '../helpers/recordings.js';
import { loadActions, loadApiCapture, loadDeliveries, type Receiver, startReceiver } from './helpers.js';

// The recordings were signed with this hook's key and carry its id; reusing both lets a simulated
// payload be compared with a recorded one byte for byte, timestamps and generated ids aside.
const capturedHookId = 'dbrt9gjsogij6xpaiiu06';

/** Zeroes timestamps, keeping key order, so two payloads compare as strings. */
const normalize = (value: unknown): string =>
  JSON.stringify(
    JSON.parse(JSON.stringify(value ?? ''), (key, item: unknown) =>
      key === 'createdAt' || key === 'updatedAt' || key === 'lastSignInAt' ? 0 : item,
    ),
  );

describe('webhooks: replaying the recorded actions', () => {
  it('sends, for each recorded Management API call, the recorded webhooks and answers', async () => {
    const receiver = await startReceiver();
    const sim = await startSimulatedTenant({
      webhookEndpoints: [{ url: receiver.url }],
      signingKey: recordedSigningKey,
      hookId: capturedHookId,
    });
    try {
      const deliveries = loadDeliveries();
      const ids = new Map<string, string>();
      const mapIds = <T>(value: T): T => {
        let text = JSON.stringify(value ?? null);
        for (const [captured, simulated] of ids) text = text.split(captured).join(simulated);
        return JSON.parse(text) as T;
      };
      let compared = 0;
      for (const action of loadActions()) {
        // The simulator models users and organizations, not applications.
        if (action.path.includes('/applications')) continue;
        const before = sim.webhooks.sent.length;
        const response = await sim.api.request(action.method, mapIds(action.path).replace(/^\/api/, ''), {
          ...(action.requestBody === undefined ? {} : { body: mapIds(action.requestBody) }),
          headers: { 'user-agent': 'curl/7.88.1' },
        });
        expect(`HTTP ${response.status}`, action.action).toBe(action.status);
        const captured = action.response as { id?: string } | string;
        if (action.method === 'POST' && typeof captured === 'object' && captured.id) {
          ids.set(captured.id, (response.body as { id: string }).id);
        }
        expect(normalize(response.body), action.action).toBe(normalize(mapIds(action.response)));

        await sim.webhooks.idle();
        const sent = sim.webhooks.sent.slice(before);
        const expected: string[] = [];
        for (let seq = action.webhookSeqFrom; seq <= action.webhookSeqTo; seq += 1) {
          expected.push(deliveries.get(seq)?.rawBody ?? '');
        }
        expect(sent.length, action.action).toBe(expected.length);
        sent.forEach((delivery, index) => {
          const recorded = JSON.parse(expected[index] as string) as unknown;
          expect(normalize(delivery.payload), action.action).toBe(normalize(mapIds(recorded)));
          compared += 1;
        });
      }
      // Every recorded delivery caused by a modelled action was compared.
      expect(compared).toBe(26);
      expect(receiver.received).toHaveLength(26);
    } finally {
      await sim.close();
      await receiver.close();
    }
  });
});

describe('webhooks: delivery', () => {
  let receiver: Receiver;
  let sim: SimulatedTenant;

  beforeAll(async () => {
    receiver = await startReceiver();
    sim = await startSimulatedTenant({ webhookEndpoints: [{ url: receiver.url }], webhookTimeoutMs: 300 });
  });
  afterEach(async () => {
    receiver.respondWith = () => 200;
    sim.webhooks.resume();
    await sim.webhooks.idle();
    receiver.received.length = 0;
    sim.webhooks.clearSent();
  });
  afterAll(async () => {
    await sim.close();
    await receiver.close();
  });

  it('signs the raw body with HMAC-SHA256 and sends Logto\'s headers', async () => {
    await sim.api.post('/users', { username: 'signed', name: 'Ådne Øvergård 🦊' });
    await sim.webhooks.idle();
    const [delivery] = receiver.received;
    expect(delivery).toBeDefined();
    const expected = createHmac('sha256', sim.signingKey).update(delivery!.rawBody).digest('hex');
    expect(delivery!.headers['logto-signature-sha-256']).toBe(expected);
    expect(delivery!.headers['user-agent']).toBe('Logto (https://logto.io/)');
    expect(delivery!.headers['content-type']).toBe('application/json');
    const recordedHeaders = Object.keys(loadDeliveries().get(1)?.headers ?? {}).sort();
    expect(Object.keys(delivery!.headers).sort()).toEqual(recordedHeaders);
    expect(delivery!.rawBody.toString('utf8')).toBe(sim.webhooks.sent[0]?.rawBody);
    expect(delivery!.body.hookId).toBe(sim.hookId);
  });

  it('sends only User.Deleted when a member user is deleted, and the memberships are gone', async () => {
    const user = (await sim.api.post('/users', { username: 'leaving' })).body.id as string;
    const organization = (await sim.api.post('/organizations', { name: 'Org' })).body.id as string;
    await sim.api.post(`/organizations/${organization}/users`, { userIds: [user] });
    await sim.webhooks.idle();
    sim.webhooks.clearSent();
    expect((await sim.api.delete(`/users/${user}`)).status).toBe(204);
    await sim.webhooks.idle();
    expect(sim.webhooks.sent.map((delivery) => delivery.event)).toEqual(['User.Deleted']);
    const payload = sim.webhooks.sent[0]!.payload;
    expect(Object.keys(payload).slice(0, 5)).toEqual(['event', 'createdAt', 'userAgent', 'ip', 'data']);
    expect(payload.data).not.toHaveProperty('hasPassword');
    expect(sim.state.listMemberIds(organization)).toEqual([]);
  });

  it('sends nothing for any member-role route', async () => {
    const user = (await sim.api.post('/users', { username: 'roles' })).body.id as string;
    const organization = (await sim.api.post('/organizations', { name: 'Roles' })).body.id as string;
    const role = (await sim.api.post('/organization-roles', { name: 'role-a' })).body.id as string;
    const other = (await sim.api.post('/organization-roles', { name: 'role-b' })).body.id as string;
    await sim.api.post(`/organizations/${organization}/users`, { userIds: [user] });
    await sim.webhooks.idle();
    const before = sim.webhooks.sent.length;
    expect((await sim.api.post(`/organizations/${organization}/users/${user}/roles`, { organizationRoleIds: [role] })).status).toBe(201);
    expect((await sim.api.post(`/organizations/${organization}/users/roles`, { userIds: [user], organizationRoleIds: [other] })).status).toBe(201);
    expect((await sim.api.put(`/organizations/${organization}/users/${user}/roles`, { organizationRoleIds: [role, other] })).status).toBe(204);
    expect((await sim.api.delete(`/organizations/${organization}/users/${user}/roles/${other}`)).status).toBe(204);
    await sim.webhooks.idle();
    expect(sim.webhooks.sent.length).toBe(before);
    expect(sim.state.getMemberRoleIds(organization, user)).toEqual([role]);
  });

  it('lists only truly new members in a POST membership event, and both deltas for PUT', async () => {
    const [a, b, c] = ['m_a', 'm_b', 'm_c'].map((name) => sim.state.createUser({ username: name }).id) as [string, string, string];
    const organization = sim.state.createOrganization({ name: 'Delta' }).id;
    await sim.api.post(`/organizations/${organization}/users`, { userIds: [a] });
    await sim.api.post(`/organizations/${organization}/users`, { userIds: [a, b, b] });
    await sim.api.post(`/organizations/${organization}/users`, { userIds: [a] });
    await sim.api.put(`/organizations/${organization}/users`, { userIds: [b, c] });
    await sim.api.delete(`/organizations/${organization}/users/${c}`);
    await sim.webhooks.idle();
    const deltas = sim.webhooks.sent.map(({ payload }) => ({
      added: payload.addedUserIds,
      removed: payload.removedUserIds,
      organizationId: payload.organizationId,
    }));
    expect(deltas).toEqual([
      { added: [a], removed: undefined, organizationId: organization },
      { added: [b], removed: undefined, organizationId: organization },
      { added: undefined, removed: undefined, organizationId: organization },
      { added: [c], removed: [a], organizationId: organization },
      { added: undefined, removed: [c], organizationId: organization },
    ]);
  });

  it('puts only the customData in a custom-data event', async () => {
    const user = sim.state.createUser({ username: 'custom', customData: { a: 1 } }).id;
    const response = await sim.api.patch(`/users/${user}/custom-data`, { customData: { b: 2 } });
    expect(response.body).toEqual({ a: 1, b: 2 });
    await sim.webhooks.idle();
    expect(sim.webhooks.sent[0]?.payload.data).toEqual({ a: 1, b: 2 });
    expect(sim.webhooks.sent[0]?.payload.matchedRoute).toBe('/users/:userId/custom-data');
  });

  it('logs a failed delivery in recent-logs shaped like the recording', async () => {
    receiver.respondWith = () => 500;
    const user = sim.state.createUser({ username: 'failing' }).id;
    await sim.api.patch(`/users/${user}`, { name: 'Alice 500 test' });
    await sim.webhooks.idle();
    const response = await sim.api.get(`/hooks/${sim.hookId}/recent-logs`, { page_size: 6, logKey: 'TriggerHook.User.Data.Updated' });
    expect(response.status).toBe(200);
    const captured = loadApiCapture('api-hooks-recent-logs').body as Array<{ payload: Record<string, unknown> }>;
    const capturedFailure = captured.find((row) => String(row.payload.error).startsWith('HTTPError'))!;
    const [row] = response.body as Array<{ key: string; payload: Record<string, unknown> }>;
    expect(Object.keys(row!)).toEqual(Object.keys(captured[0]!));
    expect(row!.key).toBe('TriggerHook.User.Data.Updated');
    expect(Object.keys(row!.payload)).toEqual(Object.keys(capturedFailure.payload));
    expect(row!.payload.result).toBe('Error');
    expect(String(row!.payload.error)).toMatch(/^HTTPError: \{"message":"Request failed with status code 500 Internal Server Error"/);
    expect(row!.payload.response).toEqual({ body: { ok: false, seq: 1 }, statusCode: 500 });
    const requestBody = (row!.payload.hookRequest as { body: Record<string, unknown> }).body;
    const capturedBody = (capturedFailure.payload.hookRequest as { body: Record<string, unknown> }).body;
    expect(Object.keys(requestBody)).toEqual(Object.keys(capturedBody));
    expect(Object.keys(requestBody.data as object)).toEqual(Object.keys(capturedBody.data as object));
    expect(requestBody.params).toEqual({ userId: user });
  });

  it('logs timeouts and dropped deliveries as errors, and filters logs by key', async () => {
    receiver.respondWith = () => 'hang';
    const user = sim.state.createUser({ username: 'slow' }).id;
    await sim.api.patch(`/users/${user}/is-suspended`, { isSuspended: true });
    await sim.webhooks.idle();
    expect(sim.webhooks.sent[0]?.error).toBe('TimeoutError: {"message":"Request timed out","request":{},"name":"TimeoutError"}');

    receiver.respondWith = () => 200;
    receiver.received.length = 0;
    sim.webhooks.dropNext(1);
    await sim.api.post('/organizations', { name: 'Dropped' });
    await sim.webhooks.idle();
    expect(receiver.received).toHaveLength(0);
    expect(sim.webhooks.sent.at(-1)).toMatchObject({ event: 'Organization.Created', dropped: true });

    const suspension = await sim.api.get(`/hooks/${sim.hookId}/recent-logs`, { logKey: 'TriggerHook.User.SuspensionStatus.Updated' });
    expect(suspension.headers.get('total-number')).toBe('1');
    expect(suspension.body[0].payload).toMatchObject({ result: 'Error', hookId: sim.hookId });
    const dropped = await sim.api.get(`/hooks/${sim.hookId}/recent-logs`, { logKey: 'TriggerHook.Organization.Created' });
    expect(dropped.body[0].payload.result).toBe('Error');
    const other = await sim.api.get('/hooks/another-hook/recent-logs');
    expect(other.body).toEqual([]);
  });

  it('holds deliveries while paused and sends them on resume', async () => {
    sim.webhooks.pause();
    await sim.api.post('/organizations', { name: 'Paused' });
    await sim.webhooks.idle();
    expect(receiver.received).toHaveLength(0);
    expect(sim.webhooks.parkedCount).toBe(1);
    sim.webhooks.resume();
    await sim.webhooks.idle();
    expect(receiver.received.map((delivery) => delivery.body.event)).toEqual(['Organization.Created']);
  });

  it('sends JIT membership events before User.Created, then PostRegister', async () => {
    const organization = sim.state.createOrganization({ name: 'JIT' }).id;
    const second = sim.state.createOrganization({ name: 'JIT 2' }).id;
    const role = sim.state.createOrganizationRole({ name: 'jit-role' }).id;
    const user = sim.registerWithJit({ username: 'jit', primaryEmail: 'jit@example.com' }, [organization, second], [role]);
    await sim.webhooks.idle();
    expect(sim.webhooks.sent.map((delivery) => delivery.event)).toEqual([
      'Organization.Membership.Updated',
      'Organization.Membership.Updated',
      'User.Created',
      'PostRegister',
    ]);
    const [membership, , created, register] = sim.webhooks.sent.map((delivery) => delivery.payload);
    expect(membership).toMatchObject({ organizationId: organization, addedUserIds: [user.id], interactionEvent: 'Register' });
    expect(membership).not.toHaveProperty('path');
    expect((created?.data as { id: string }).id).toBe(user.id);
    expect(Object.keys(register ?? {})).toEqual([
      'event', 'interactionEvent', 'createdAt', 'sessionId', 'userAgent', 'userId', 'userIp', 'user', 'application', 'hookId',
    ]);
    expect(sim.state.getMemberRoleIds(second, user.id)).toEqual([role]);
  });

  it('sends PostSignIn for a sign-in', async () => {
    const user = sim.state.createUser({ username: 'signin' });
    sim.emitInteractionEvent('PostSignIn', user.id);
    await sim.webhooks.idle();
    expect(receiver.received[0]?.body).toMatchObject({ event: 'PostSignIn', interactionEvent: 'SignIn', userId: user.id });
  });
});
