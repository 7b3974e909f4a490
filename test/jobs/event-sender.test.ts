import { and, eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, eventOutbox, eventSubscriptions } from '../../db/schema.js';
import { accessEventTypes, webhookIdOf } from '../../src/db/access-events.js';
import { deleteEventSubscription } from '../../src/db/event-subscriptions.js';
import { createEventSender, type EventSender, type EventSenderOptions } from '../../src/jobs/event-sender.js';
import { silentLogger } from '../../src/logger.js';
import { recordChanges } from '../../src/sync/apply/changes.js';
import { runRoleSweep } from '../../src/sync/role-sweep.js';
import { createEventSubscription, rotateSigningSecret } from '../../src/sync/event-subscriptions.js';
import { startEventReceiver, type EventReceiver } from '../helpers/event-receiver.js';
import { syncDepsFor } from '../helpers/tenant.js';
import { startPipeline, type Pipeline } from '../webhooks/harness.js';

/**
 * Access events out, over real HTTP: changes made in the simulated tenant reach the service through its
 * webhooks (or the role sweep), and every one of them reaches a subscriber as a signed Standard Webhook,
 * verified on arrival with svix's `Webhook.verify`.
 */
describe('the event sender', () => {
  let pipeline: Pipeline;
  let receiver: EventReceiver;
  let subscription: { id: string; secret: string };
  let sender: EventSender;
  const senders: EventSender[] = [];

  const startSender = (options: EventSenderOptions = {}) => {
    const started = createEventSender(
      { db: pipeline.database.db, logger: silentLogger },
      { allowPrivateUrls: true, pollIntervalMs: 20, retryScheduleMs: [0, 30, 30, 30], ...options },
    );
    started.start();
    senders.push(started);
    return started;
  };
  const settle = async () => {
    await pipeline.sim.webhooks.idle();
    await pipeline.worker.drain();
    await sender.drain({ includeDelayed: true });
  };
  const subscribe = async (url: string, eventTypes?: (typeof accessEventTypes)[number][]) => {
    const created = await createEventSubscription(pipeline.database.db, { url, eventTypes }, { allowPrivateUrls: true });
    return { id: created.id, secret: created.secret };
  };

  beforeAll(async () => {
    pipeline = await startPipeline({ seed: 8, generate: { users: 40, organizations: 5, organizationRoles: 3 } });
    receiver = await startEventReceiver(() => subscription.secret);
    subscription = await subscribe(receiver.url);
    sender = startSender();
  });
  afterEach(() => {
    receiver.respond = () => 204;
  });
  afterAll(async () => {
    for (const started of senders) await started.stop();
    await receiver.close();
    await pipeline.close();
  });

  it('sends nothing for the baseline made before the subscription', async () => {
    await settle();
    expect(await pipeline.database.db.$count(accessChanges)).toBeGreaterThan(0);
    expect(receiver.received).toEqual([]);
  });

  it('delivers an event of every type, signed, for changes made in Logto, including sweep-only role changes and cascades', async () => {
    const { sim } = pipeline;
    // Settled after each step: Logto's deliveries race, and an update applied before the creation reads the
    // user's latest state from Logto, which folds the steps between into one change.
    const user = (await sim.api.post('/users', { username: 'event_user', name: 'Event User' })).body as { id: string };
    await settle();
    await sim.api.patch(`/users/${user.id}`, { name: 'Event User Renamed' });
    await settle();
    await sim.api.patch(`/users/${user.id}/is-suspended`, { isSuspended: true });
    await settle();
    await sim.api.patch(`/users/${user.id}/is-suspended`, { isSuspended: false });
    const organization = (await sim.api.post('/organizations', { name: 'Events Org' })).body as { id: string };
    await settle();
    await sim.api.patch(`/organizations/${organization.id}`, { description: 'described' });
    const role = (await sim.api.post('/organization-roles', { name: 'events-role' })).body as { id: string };
    await settle();
    await sim.api.patch(`/organization-roles/${role.id}`, { description: 'described' });
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [user.id] });
    await settle();

    // Logto announces no role change: only the sweep sees this grant.
    sim.state.setMemberRoles(organization.id, user.id, [role.id]);
    await runRoleSweep(syncDepsFor(pipeline.database, pipeline.logto), { maxOrganizations: 100, trigger: 'test' });
    await settle();
    const granted = receiver.delivered().find((event) => event.body.type === 'organization.member.role_granted');
    expect(granted?.body.data).toMatchObject({ source: 'sweep', userId: user.id, organizationId: organization.id, organizationRoleId: role.id });

    // Deleting the user takes the membership and the role along: both are events too.
    await sim.api.delete(`/users/${user.id}`);
    await settle();
    const cascaded = receiver.delivered().filter((event) => event.body.data.userId === user.id && event.body.data.details?.['reason' as never] === 'user.deleted');
    expect(cascaded.map((event) => event.body.type).sort()).toEqual(['organization.member.removed', 'organization.member.role_revoked']);

    // A second member, removed on its own, and the definitions deleted.
    const other = sim.state.listUsers()[0]!;
    await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [other.id] });
    await settle();
    await sim.api.delete(`/organizations/${organization.id}/users/${other.id}`);
    await sim.api.delete(`/organization-roles/${role.id}`);
    await sim.api.delete(`/organizations/${organization.id}`);
    await settle();

    const types = new Set(receiver.delivered().map((event) => event.body.type));
    expect([...types].sort()).toEqual([...accessEventTypes].sort());
    expect(receiver.rejected).toBe(0);
    // One event per change, each with the change's id as its stable webhook-id.
    const changes = await pipeline.database.db.select().from(accessChanges).where(eq(accessChanges.source, 'webhook'));
    for (const event of receiver.delivered()) expect(event.webhookId).toBe(webhookIdOf(event.body.data.changeId));
    expect(receiver.delivered().length).toBe(changes.length + 1);

    const updated = receiver.delivered().find((event) => event.body.type === 'user.updated' && event.body.data.userId === user.id);
    expect(updated?.body).toMatchObject({ type: 'user.updated', data: { source: 'webhook', userId: user.id, user: { id: user.id } } });
    // Read at send time: the user existed then only if the event went out before the deletion.
    const deleted = receiver.delivered().find((event) => event.body.type === 'user.deleted');
    expect(deleted?.body.data.user).toBeUndefined();
  }, 90_000);

  it('sends again, with the same webhook-id, an event the receiver failed; it takes effect once', async () => {
    let calls = 0;
    receiver.respond = () => (calls++ === 0 ? 500 : 200);
    const before = receiver.received.length;
    const target = pipeline.sim.state.listUsers()[1]!;
    await pipeline.sim.api.patch(`/users/${target.id}`, { name: 'Renamed for the retry test' });
    await settle();
    const attempts = receiver.received.slice(before);
    expect(attempts.map((event) => event.accepted)).toEqual([false, true]);
    expect(attempts[0]!.webhookId).toBe(attempts[1]!.webhookId);
    expect(attempts[0]!.raw).toBe(attempts[1]!.raw);
    const [row] = await pipeline.database.db
      .select()
      .from(eventOutbox)
      .where(eq(eventOutbox.changeId, attempts[0]!.body.data.changeId));
    expect(row).toMatchObject({ status: 'delivered', attempts: 2, lastStatus: 200 });
  });

  it('sends the events about one user claimed together one after the other, and holds the later ones behind a retry', async () => {
    const userId = `chained-${Date.now()}`;
    const arrivals: { changeId: number; status: number }[] = [];
    receiver.respond = (event) => {
      if (event.body.data.userId !== userId) return 204;
      const status = arrivals.length === 0 ? 500 : 204;
      arrivals.push({ changeId: event.body.data.changeId, status });
      return status;
    };
    // One transaction, so one claim finds all three.
    await recordChanges(
      pipeline.database.db,
      [
        { kind: 'user.created', userId },
        { kind: 'user.updated', userId },
        { kind: 'user.suspended', userId },
      ],
      { source: 'webhook', observedAt: new Date() },
    );
    await settle();
    const ids = (
      await pipeline.database.db.select({ id: accessChanges.id }).from(accessChanges).where(eq(accessChanges.userId, userId)).orderBy(accessChanges.id)
    ).map((change) => change.id);
    expect(arrivals).toEqual([
      { changeId: ids[0], status: 500 },
      { changeId: ids[0], status: 204 },
      { changeId: ids[1], status: 204 },
      { changeId: ids[2], status: 204 },
    ]);
    const rows = await pipeline.database.db
      .select()
      .from(eventOutbox)
      .where(and(eq(eventOutbox.userId, userId), eq(eventOutbox.subscriptionId, subscription.id)))
      .orderBy(eventOutbox.changeId);
    // A row handed back unsent behind the retry was not an attempt.
    expect(rows.map((row) => [row.status, row.attempts])).toEqual([
      ['delivered', 2],
      ['delivered', 1],
      ['delivered', 1],
    ]);
  });

  it('ends a delivery as failed once the retry schedule is used up', async () => {
    receiver.respond = () => 503;
    const before = receiver.received.length;
    await pipeline.sim.api.patch(`/users/${pipeline.sim.state.listUsers()[4]!.id}`, { name: 'Refused every time' });
    await settle();
    const attempts = receiver.received.slice(before);
    expect(attempts).toHaveLength(4);
    expect(new Set(attempts.map((event) => event.webhookId)).size).toBe(1);
    const [row] = await pipeline.database.db.select().from(eventOutbox).where(eq(eventOutbox.changeId, attempts[0]!.body.data.changeId));
    expect(row).toMatchObject({ status: 'failed', attempts: 4, lastStatus: 503 });
  });

  it('keeps the events about one organization in order while their deliveries are slow and concurrent', async () => {
    const { sim } = pipeline;
    receiver.respond = async () => {
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
      return 204;
    };
    const organizations = await Promise.all(
      [1, 2, 3].map(async (n) => (await sim.api.post('/organizations', { name: `Ordered ${n}` })).body as { id: string }),
    );
    const members = sim.state.listUsers().slice(2, 10);
    await settle();
    const before = receiver.received.length;
    // Memberships added and removed concurrently across the three organizations.
    await Promise.all(
      organizations.map(async (organization) => {
        for (const member of members) await sim.api.post(`/organizations/${organization.id}/users`, { userIds: [member.id] });
        for (const member of members.slice(0, 4)) await sim.api.delete(`/organizations/${organization.id}/users/${member.id}`);
      }),
    );
    await settle();
    const arrived = receiver.received.slice(before).filter((event) => event.accepted);
    for (const organization of organizations) {
      const ids = arrived.filter((event) => event.body.data.organizationId === organization.id).map((event) => event.body.data.changeId);
      const recorded = await pipeline.database.db
        .select({ id: accessChanges.id })
        .from(accessChanges)
        .where(eq(accessChanges.organizationId, organization.id))
        .orderBy(accessChanges.id);
      // Everything recorded about the organization since it was created arrived, in the order it was recorded.
      expect(ids).toEqual(recorded.map((change) => change.id).slice(1));
      expect(ids.length).toBeGreaterThan(members.length);
    }
  }, 90_000);

  it('signs with both secrets for a day after a rotation', async () => {
    const old = subscription.secret;
    const rotated = await rotateSigningSecret(pipeline.database.db, subscription.id);
    subscription = { id: subscription.id, secret: rotated!.secret };
    const before = receiver.received.length;
    // The receiver insists that both the old and the new secret verify the message.
    const receiverSecrets = { current: [old, rotated!.secret] };
    const strict = await startEventReceiver(() => receiverSecrets.current);
    const second = await subscribe(strict.url);
    await pipeline.database.db
      .update(eventSubscriptions)
      .set({ secret: rotated!.secret, previousSecret: old, previousSecretExpiresAt: rotated!.previousSecretExpiresAt })
      .where(eq(eventSubscriptions.id, second.id));
    await pipeline.sim.api.patch(`/users/${pipeline.sim.state.listUsers()[2]!.id}`, { name: 'Signed twice' });
    await settle();
    expect(strict.received.length).toBe(1);
    expect(strict.received[0]!.signature.split(' ')).toHaveLength(2);
    expect(receiver.received.length).toBe(before + 1);
    expect(strict.rejected).toBe(0);
    // With its deliveries: nothing cascades them (see deleteEventSubscription).
    await deleteEventSubscription(pipeline.database.db, second.id);
    await strict.close();
  });

  it('disables a subscription whose every delivery failed for too long', async () => {
    const failing = await startEventReceiver(() => '');
    const dead = await subscribe(failing.url.replace(/\d+\/hooks/, '1/hooks'));
    await sender.stop();
    sender = startSender({ disableAfterMs: 0, retryScheduleMs: [0, 60_000] });
    await pipeline.sim.api.patch(`/users/${pipeline.sim.state.listUsers()[3]!.id}`, { name: 'Never delivered' });
    await settle();
    const [row] = await pipeline.database.db.select().from(eventOutbox).where(eq(eventOutbox.subscriptionId, dead.id));
    expect(row).toMatchObject({ status: 'pending', attempts: 1, lastStatus: null });
    const [stored] = await pipeline.database.db.select().from(eventSubscriptions).where(eq(eventSubscriptions.id, dead.id));
    expect(stored).toMatchObject({ enabled: false });
    expect(stored?.disabledReason).toMatch(/every delivery failed since/);
    await failing.close();
  });
});
