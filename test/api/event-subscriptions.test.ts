import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventOutbox } from '../../db/schema.js';
import { recordChanges } from '../../src/sync/apply/changes.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { createTestApp, expectProblem, invalidParamNames, type TestApp } from './harness.js';

const context = { source: 'webhook' as const, observedAt: new Date() };

describe('event subscriptions API', () => {
  let database: TestDatabase;
  let strict: TestApp;
  let open: TestApp;

  beforeAll(async () => {
    database = await createTestDatabase();
    strict = await createTestApp(database.db);
    open = await createTestApp(database.db, {
      config: (config) => ({ ...config, events: { ...config.events, allowPrivateUrls: true } }),
    });
  });
  afterAll(async () => {
    await database.drop();
  });

  it('refuses private, loopback and link-local URLs unless allowed, and anything but http(s)', async () => {
    for (const url of [
      'http://127.0.0.1:8080/hook',
      'http://localhost/hook',
      'http://10.1.2.3/hook',
      'http://169.254.169.254/latest/meta-data',
      'http://[::1]/hook',
      'http://[::ffff:127.0.0.1]/hook',
      'http://[fe80::1]/hook',
      'http://[fd00::1]/hook',
    ]) {
      const refused = await strict.post('/v1/event-subscriptions').send({ url });
      expectProblem(refused, 400, 'invalid_params');
      expect(invalidParamNames(refused)).toEqual(['url']);
    }
    const ftp = await open.post('/v1/event-subscriptions').send({ url: 'ftp://example.com/hook' });
    expect(invalidParamNames(ftp)).toEqual(['url']);
    const allowed = await open.post('/v1/event-subscriptions').send({ url: 'http://127.0.0.1:8080/hook' });
    expect(allowed.status).toBe(201);
  });

  it('creates a subscription with its secret shown once, then lists, reads, changes and deletes it', async () => {
    const created = await open
      .post('/v1/event-subscriptions')
      .send({ url: 'http://127.0.0.1:9/hook', eventTypes: ['organization.member.added'], description: 'cache' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ url: 'http://127.0.0.1:9/hook', eventTypes: ['organization.member.added'], enabled: true });
    expect(created.body.secret).toMatch(/^whsec_[A-Za-z0-9+/=]{32}$/);
    const id = created.body.id as string;

    const read = await open.get(`/v1/event-subscriptions/${id}`);
    expect(read.status).toBe(200);
    expect(read.body.secret).toBeUndefined();
    const listed = await open.get('/v1/event-subscriptions?limit=1');
    expect(listed.body.data.map((entry: { id: string }) => entry.id)).toEqual([id]);
    expect(listed.body.nextCursor).not.toBeNull();

    const readerCannotWrite = await open.patch(`/v1/event-subscriptions/${id}`, open.keys.read.secret).send({ enabled: false });
    expectProblem(readerCannotWrite, 403, 'insufficient_scope');
    const patched = await open.patch(`/v1/event-subscriptions/${id}`).send({ enabled: false, eventTypes: null });
    expect(patched.body).toMatchObject({ enabled: false, eventTypes: null, disabledReason: 'disabled through the API' });
    const badType = await open.patch(`/v1/event-subscriptions/${id}`).send({ eventTypes: ['member.added'] });
    expect(invalidParamNames(badType)).toEqual(['eventTypes[0]']);

    const rotated = await open.post(`/v1/event-subscriptions/${id}/rotate-secret`);
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).not.toBe(created.body.secret);
    expect(Date.parse(rotated.body.previousSecretExpiresAt) - Date.now()).toBeGreaterThan(23 * 3600 * 1000);

    expect((await open.delete(`/v1/event-subscriptions/${id}`)).status).toBe(204);
    expectProblem(await open.get(`/v1/event-subscriptions/${id}`), 404, 'not_found');
  });

  it('queues events only for changes after creation and only of the chosen types; lists, retries and replays deliveries', async () => {
    await recordChanges(database.db, [{ kind: 'member.added', userId: 'early', organizationId: 'org1' }], context);
    const created = await open.post('/v1/event-subscriptions').send({ url: 'http://127.0.0.1:9/hook', eventTypes: ['organization.member.added'] });
    const id = created.body.id as string;
    await recordChanges(
      database.db,
      [
        { kind: 'member.added', userId: 'late', organizationId: 'org1' },
        { kind: 'user.created', userId: 'late' },
      ],
      context,
    );
    const deliveries = await open.get(`/v1/event-subscriptions/${id}/deliveries`);
    expect(deliveries.status).toBe(200);
    expect(deliveries.body.data).toHaveLength(1);
    const [delivery] = deliveries.body.data as { id: number; changeId: number; status: string; webhookId: string }[];
    expect(delivery).toMatchObject({ status: 'pending', attempts: 0, webhookId: `evt_${delivery!.changeId}` });

    await database.db.update(eventOutbox).set({ status: 'failed', attempts: 8, lastStatus: 500 }).where(eq(eventOutbox.id, delivery!.id));
    const failed = await open.get(`/v1/event-subscriptions/${id}/deliveries?status=failed`);
    expect(failed.body.data[0]).toMatchObject({ id: delivery!.id, lastResponseStatus: 500, attempts: 8 });
    const retried = await open.post(`/v1/event-subscriptions/${id}/deliveries/${delivery!.id}/retry`);
    expect(retried.status).toBe(202);
    expect(retried.body).toMatchObject({ status: 'pending', attempts: 0 });
    expectProblem(await open.post(`/v1/event-subscriptions/${id}/deliveries/999999/retry`), 404, 'not_found');

    const replayed = await open.post(`/v1/event-subscriptions/${id}/replay`).send({ since: '2000-01-01T00:00:00Z' });
    expect(replayed.status).toBe(202);
    expect(replayed.body.queued).toBe(2);
    const all = await open.get(`/v1/event-subscriptions/${id}/deliveries`);
    expect(all.body.data.filter((entry: { replay: boolean }) => entry.replay)).toHaveLength(2);
    const badSince = await open.post(`/v1/event-subscriptions/${id}/replay`).send({ since: 'yesterday' });
    expect(invalidParamNames(badSince)).toEqual(['since']);
  });
});
