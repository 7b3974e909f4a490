import { gt, max } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, webhookDeliveries } from '../../db/schema.js';
import type { SentWebhook } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { startPipeline, type Pipeline } from '../webhooks/harness.js';
import { fingerprint, rawClient } from './hostile.js';

/**
 * Anyone who captured a signed delivery can send it again, any number of times, at any later moment.
 * Whether the inbox still holds the original (deduplicated by its raw bytes) or has long purged it
 * (applied as an old observation, which the newer state outranks), a replay must change nothing.
 */
describe('replayed deliveries', () => {
  let pipeline: Pipeline;
  let client: ReturnType<typeof rawClient>;
  let history: SentWebhook[];

  const replay = async (deliveries: SentWebhook[]) => {
    const answers: { status: number; duplicate?: boolean }[] = [];
    for (const delivery of deliveries) {
      const response = await client.send('POST', '/webhooks/logto', {
        headers: { 'content-type': 'application/json', 'logto-signature-sha-256': delivery.signature! },
        body: delivery.rawBody,
      });
      answers.push({ status: response.status, ...(JSON.parse(response.text) as { duplicate?: boolean }) });
    }
    return answers;
  };
  const lastChangeId = async () => (await pipeline.database.db.select({ last: max(accessChanges.id) }).from(accessChanges))[0]?.last ?? 0;

  beforeAll(async () => {
    pipeline = await startPipeline({ seed: 23, generate: { users: 20, organizations: 4, organizationRoles: 3 } });
    client = rawClient(pipeline.receiver.url.replace('/webhooks/logto', ''));
    const { sim } = pipeline;
    const [first, second, third] = sim.state.listUsers();
    const [organization, other] = sim.state.listOrganizations();
    const role = sim.state.listOrganizationRoles()[0]!;
    // A history in which later deliveries undo earlier ones, so replaying an early one would show.
    await sim.api.patch(`/users/${first!.id}`, { name: 'First name' });
    await sim.api.patch(`/users/${first!.id}`, { name: 'Second name' });
    await sim.api.patch(`/users/${second!.id}/is-suspended`, { isSuspended: true });
    await sim.api.patch(`/users/${second!.id}/is-suspended`, { isSuspended: false });
    await sim.api.post(`/organizations/${other!.id}/users`, { userIds: [third!.id] });
    await sim.api.delete(`/organizations/${other!.id}/users/${third!.id}`);
    await sim.api.post(`/organizations/${organization!.id}/users`, { userIds: [third!.id] });
    await sim.api.patch(`/organizations/${organization!.id}`, { name: 'Renamed organization' });
    const created = await sim.api.post('/users', { username: 'short_lived' });
    await sim.api.delete(`/users/${created.body.id}`);
    await sim.api.delete(`/organization-roles/${role.id}`);
    await sim.webhooks.idle();
    await pipeline.worker.drain();
    history = sim.webhooks.sent.filter((sent) => sent.status === 202);
    expect(history.length).toBeGreaterThanOrEqual(10);
    expect(await mirrorState(pipeline.database.db)).toEqual(tenantState(sim.state.snapshot()));
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await pipeline?.close();
  });

  it('answers a replay of a stored delivery as a duplicate and stores nothing', async () => {
    const before = await fingerprint(pipeline.database.db);
    const answers = await replay([...history, ...[...history].reverse()]);
    expect(answers.every((answer) => answer.status === 202 && answer.duplicate === true)).toBe(true);
    await pipeline.worker.drain();
    expect(await fingerprint(pipeline.database.db)).toEqual(before);
  });

  it('applies a replay the inbox has forgotten as the old news it is: the copy and the change log stay as they are', async () => {
    const stateBefore = await mirrorState(pipeline.database.db);
    const changesBefore = await lastChangeId();
    // Retention purged the inbox long ago; the captured deliveries come back, oldest first, then shuffled.
    await pipeline.database.db.delete(webhookDeliveries);
    const shuffled = [...history].sort((a, b) => (a.rawBody.length % 7) - (b.rawBody.length % 7));
    const answers = await replay([...history, ...shuffled]);
    expect(answers.filter((answer) => answer.status !== 202)).toEqual([]);
    await pipeline.worker.drain();
    expect(await mirrorState(pipeline.database.db)).toEqual(stateBefore);
    expect(await mirrorState(pipeline.database.db)).toEqual(tenantState(pipeline.sim.state.snapshot()));
    const logged = await pipeline.database.db.select().from(accessChanges).where(gt(accessChanges.id, changesBefore));
    expect(logged).toEqual([]);
  });
});
