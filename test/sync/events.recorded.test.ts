import { and, eq } from 'drizzle-orm';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { accessChanges, users, webhookDeliveries } from '../../db/schema.js';
import { insertDelivery } from '../../src/db/inbox.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { recordedDeliveries, recordedSigningKey, type RecordedDelivery } from '../helpers/recordings.js';
import { clientFor, startTenant } from '../helpers/tenant.js';
import { changesFrom, deliveries, receiverApp, testWorker, webhookConfig } from '../webhooks/harness.js';

/**
 * The 36 deliveries a real Logto sent (test/fixtures/logto/deliveries), replayed byte for byte through the
 * receiver and applied against a simulated tenant holding what that Logto held at the end of the
 * recording, so that every re-read sees Logto's state.
 */
const recorded = recordedDeliveries();
const bySeq = (seq: number): RecordedDelivery => recorded.find((delivery) => delivery.seq === seq)!;
const bodyOf = (seq: number) => JSON.parse(bySeq(seq).rawBody) as Record<string, any>;

const alice = '18b77e0c895z';
const bob = 'iyxyfg3oad4e';
const dave = 'cyp1btasemx8';
const acme = 'ketf3oc4zm1o';
const initech = 'ueylyty3yz4g';
const admin = 'pb2vrsz50n2lzre3xt03s';
const viewer = 'niq17a30cimmjlj8okyqv';

/** Logto's state after the recorded session (actions-timeline.jsonl plus deliveries 018–022 and 033–036). */
const seedFinalState = (sim: SimulatedTenant) => {
  for (const seq of [22, 14]) {
    const { id, createdAt, updatedAt, ...user } = bodyOf(seq).data;
    sim.state.createUser(
      { username: user.username, primaryEmail: user.primaryEmail, name: user.name, customData: user.customData },
      { id, createdAt, updatedAt },
    );
  }
  sim.state.createOrganization({ name: 'Acme', description: 'org one updated' }, { id: acme, createdAt: bodyOf(15).data.createdAt });
  sim.state.createOrganization({ name: 'Initech', description: null }, { id: initech, createdAt: bodyOf(35).data.createdAt });
  sim.state.createOrganizationRole({ name: 'admin', description: 'org admin' }, { id: admin });
  sim.state.createOrganizationRole({ name: 'viewer', description: 'read only' }, { id: viewer });
  sim.state.addMembers(acme, [alice, bob]);
  sim.state.addMemberRoles(acme, alice, [admin]);
  sim.state.addMembers(initech, [alice]);
};

describe('the recorded Logto deliveries, applied', () => {
  let sim: SimulatedTenant;
  let database: TestDatabase;
  const config = webhookConfig({ signingKeys: [recordedSigningKey] });

  const replay = async (seqs: number[]) => {
    const app = receiverApp(database.db, config);
    const answers = [];
    for (const seq of seqs) {
      const delivery = bySeq(seq);
      const headers = Object.fromEntries(
        Object.entries(delivery.headers).filter(([name]) => !['host', 'content-length', 'connection'].includes(name)),
      );
      const response = await request(app).post('/webhooks/logto').set(headers).send(delivery.rawBody);
      expect(response.status).toBe(202);
      answers.push(response.body as { id: number; duplicate: boolean });
    }
    return answers;
  };
  const apply = (concurrency?: number) =>
    testWorker(database, clientFor(sim), config, concurrency === undefined ? {} : { concurrency }).drain();
  const statusOf = async (seq: number) =>
    (await deliveries(database.db)).find((row) => row.payload.createdAt === bodyOf(seq).createdAt)?.status;

  beforeAll(async () => {
    sim = await startTenant();
    seedFinalState(sim);
  });
  afterAll(async () => {
    await sim.close();
  });
  afterEach(async () => {
    await database?.drop();
  });

  it('all 36, in the order Logto sent them, leave the database equal to Logto', async () => {
    database = await createTestDatabase();
    await replay(recorded.map((delivery) => delivery.seq));
    await apply();
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
    const rows = await deliveries(database.db);
    expect(rows).toHaveLength(36);
    // The application membership (029) is nothing this service keeps; everything else was applied.
    expect(rows.filter((row) => row.status !== 'applied').map((row) => [row.event, row.status])).toEqual([
      ['Organization.Membership.Updated', 'ignored'],
    ]);
    expect(await statusOf(29)).toBe('ignored');

    // Changes carry the delivery that caused them and the caller Logto recorded.
    const webhook = await changesFrom(database.db, 'webhook');
    const added = webhook.find((change) => change.kind === 'member.added' && change.userId === alice && change.organizationId === acme);
    expect(added).toMatchObject({ actor: 'curl/7.88.1', deliveryId: rows[7]!.id, observedAt: new Date(bodyOf(8).createdAt) });
    expect(webhook.filter((change) => change.kind === 'user.deleted').map((change) => change.userId).sort()).toEqual(
      ['jwe7ofxk08c9', dave].sort(),
    );
    expect(webhook.find((change) => change.kind === 'organization_role.deleted')?.organizationRoleId).toBe('5q5yey7lq5w4v010fqxai');
    // The role no event announced came with the re-read that followed a membership event.
    expect(webhook.some((change) => change.kind === 'member_role.granted' && change.userId === alice && change.organizationRoleId === admin)).toBe(true);
  });

  it('all 36 again, and the same payloads arriving a second way, change nothing the second time', async () => {
    database = await createTestDatabase();
    await replay(recorded.map((delivery) => delivery.seq));
    await apply();
    const changes = await database.db.$count(accessChanges);
    const again = await replay(recorded.map((delivery) => delivery.seq));
    expect(again.every((answer) => answer.duplicate)).toBe(true);
    expect(await database.db.$count(webhookDeliveries)).toBe(36);
    // The same events under other dedup keys (as if recovered from the hook logs, or relayed).
    for (const delivery of recorded) {
      await insertDelivery(database.db, { dedupKey: `again:${delivery.seq}`, channel: 'logto', payload: JSON.parse(delivery.rawBody) });
    }
    await apply();
    expect(await database.db.$count(accessChanges)).toBe(changes);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('two updates of one user applied in reverse order leave the newer', async () => {
    database = await createTestDatabase();
    await replay([1]);
    await apply();
    await replay([22]);
    await apply();
    await replay([18]);
    await apply();
    const [stored] = await database.db.select().from(users).where(eq(users.id, alice));
    expect(stored).toMatchObject({ name: 'Alice slow 8s', updatedAt: new Date(bodyOf(22).data.updatedAt) });
    expect(await statusOf(18)).toBe('applied');
    const updates = await database.db
      .select()
      .from(accessChanges)
      .where(and(eq(accessChanges.kind, 'user.updated'), eq(accessChanges.userId, alice)));
    expect(updates).toHaveLength(1);
  });

  it('a membership sent before its user and organization were announced fetches both', async () => {
    database = await createTestDatabase();
    // Alice into Initech (036) before Alice's User.Created (001) and Initech's Organization.Created (035).
    await replay([36]);
    await apply();
    const state = await mirrorState(database.db);
    expect(state.memberships[initech]).toEqual({ [alice]: [] });
    expect(state.users[alice]).toMatchObject({ name: 'Alice slow 8s' });
    expect(state.organizations[initech]).toEqual({ name: 'Initech', description: null });
    // The late User.Created carries an older copy: it does not replace the newer one.
    await replay([1, 35]);
    await apply();
    expect((await mirrorState(database.db)).users[alice]).toMatchObject({ name: 'Alice slow 8s', updatedAt: bodyOf(22).data.updatedAt });
  });

  it('a custom-data update (partial data) re-reads the user; a user gone from Logto is removed', async () => {
    database = await createTestDatabase();
    sim.state.createUser({ username: 'dave', primaryEmail: 'dave@example.com', name: 'Dave D', customData: { k: 'v' } }, { id: dave });
    try {
      await replay([23, 26]);
      await apply();
      const [stored] = await database.db.select().from(users).where(eq(users.id, dave));
      expect(stored?.customData).toEqual({ k: 'v' });
      expect(stored?.name).toBe('Dave D');
    } finally {
      sim.state.deleteUser(dave);
    }
    // Dave is gone from Logto now: the next partial update finds a 404 and removes him.
    await insertDelivery(database.db, { dedupKey: 'custom-data-again', channel: 'logto', payload: { ...bodyOf(26), createdAt: new Date().toISOString() } });
    await apply();
    expect(await database.db.select().from(users).where(eq(users.id, dave))).toEqual([]);
    // A late suspension update with full data does not bring him back.
    await replay([27, 28]);
    await apply();
    expect(await database.db.select().from(users).where(eq(users.id, dave))).toEqual([]);
  });

  it('a membership event without a delta re-reads the organization', async () => {
    database = await createTestDatabase();
    await replay([25]);
    await apply();
    expect((await mirrorState(database.db)).memberships[acme]).toEqual({ [alice]: [admin], [bob]: [] });
  });
});
