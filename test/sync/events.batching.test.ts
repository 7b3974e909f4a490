import { asc, eq, inArray } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { accessChanges, users, webhookDeliveries } from '../../db/schema.js';
import { insertDelivery } from '../../src/db/inbox.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';
import { testWorker, webhookConfig } from '../webhooks/harness.js';

type LogtoUserJson = Record<string, unknown> & { id: string; updatedAt: number };

/**
 * The inbox worker applies the deliveries in hand together: user snapshots in one transaction, user
 * reads from Logto coalesced per user and batched (100 per `GET /users?search.id=…`). Counted on the
 * simulated tenant's request statistics; the final state must equal the tenant's.
 */
describe('deliveries applied in batches', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let dedup = 0;

  const enqueue = async (payloads: Record<string, unknown>[]) => {
    const ids: number[] = [];
    for (const payload of payloads) {
      dedup += 1;
      ids.push((await insertDelivery(database.db, { dedupKey: `batch-${dedup}`, channel: 'logto', payload })).id);
    }
    return ids;
  };
  const drain = () => testWorker(database, clientFor(sim), webhookConfig({ sim })).drain({ includeDelayed: true });
  const routeCount = (route: string) => sim.stats().byRoute[route]?.total ?? 0;
  const logtoRoutes = () => Object.keys(sim.stats().byRoute).filter((route) => route.includes(' /api/'));
  const expectMirrorEqualsLogto = async () => expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  const statuses = async (ids: number[]) =>
    (await database.db.select({ status: webhookDeliveries.status }).from(webhookDeliveries).where(inArray(webhookDeliveries.id, ids))).map(
      (row) => row.status,
    );
  const partialUpdate = (userId: string, customData: Record<string, unknown>) => ({
    event: 'User.Data.Updated',
    createdAt: new Date().toISOString(),
    userAgent: 'batch-test',
    path: `/users/${userId}/custom-data`,
    method: 'PATCH',
    status: 200,
    params: { userId },
    matchedRoute: '/users/:userId/custom-data',
    data: customData,
  });
  const fullUpdate = (user: LogtoUserJson, event = 'User.Data.Updated') => ({
    event,
    createdAt: new Date().toISOString(),
    userAgent: 'batch-test',
    params: { userId: user.id },
    matchedRoute: '/users/:userId',
    data: user,
  });
  const signIn = (userId: string) => ({ event: 'PostSignIn', createdAt: new Date().toISOString(), interactionEvent: 'SignIn', userId });
  const logtoUser = async (userId: string) => (await sim.api.get(`/users/${userId}`)).body as LogtoUserJson;

  beforeAll(async () => {
    sim = await startTenant({ seed: 41, generate: { users: 330, organizations: 4, organizationRoles: 3 } });
    sim.setWebhookEndpoints([{ url: 'http://127.0.0.1:9/unused' }]);
  });
  afterAll(async () => {
    await sim.close();
  });
  beforeEach(async () => {
    database = await createTestDatabase();
    await runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
    sim.faults.resetStats();
  });
  afterEach(async () => {
    await database.drop();
  });

  it('reads 300 users named by 300 partial deliveries in at most 3 requests, and stores what Logto has', async () => {
    const targets = sim.state.listUsers().slice(0, 300);
    for (const [index, user] of targets.entries()) sim.state.mergeUserCustomData(user.id, { plan: `p${index}` });
    const ids = await enqueue(targets.map((user, index) => partialUpdate(user.id, { plan: `p${index}` })));
    await drain();
    expect(await statuses(ids)).toEqual(ids.map(() => 'applied'));
    expect(routeCount('GET /api/users')).toBeGreaterThanOrEqual(1);
    expect(routeCount('GET /api/users')).toBeLessThanOrEqual(3);
    expect(logtoRoutes().filter((route) => route !== 'GET /api/users')).toEqual([]);
    await expectMirrorEqualsLogto();
    const [stored] = await database.db.select().from(users).where(eq(users.id, targets[299]!.id));
    expect(stored?.customData).toMatchObject({ plan: 'p299' });
    // Each change is recorded for the delivery that asked for the read.
    const changes = await database.db.select().from(accessChanges).where(eq(accessChanges.kind, 'user.updated'));
    expect(changes).toHaveLength(300);
    expect(new Set(changes.map((change) => change.deliveryId))).toEqual(new Set(ids));
  });

  it('reads a user once for the many deliveries about it that arrived before the read', async () => {
    const user = sim.state.listUsers()[5]!;
    sim.state.mergeUserCustomData(user.id, { seen: 40 });
    const ids = await enqueue(Array.from({ length: 40 }, (_, index) => partialUpdate(user.id, { seen: index + 1 })));
    await drain();
    expect(await statuses(ids)).toEqual(ids.map(() => 'applied'));
    expect(routeCount('GET /api/users')).toBe(1);
    await expectMirrorEqualsLogto();
  });

  it('applies a burst of sign-ins with batched user reads and no per-user organization reads', async () => {
    const targets = sim.state.listUsers().slice(0, 150);
    for (const user of targets) sim.state.updateUser(user.id, { lastSignInAt: Date.now() });
    const ids = await enqueue([...targets, ...targets.slice(0, 50)].map((user) => signIn(user.id)));
    await drain();
    expect(await statuses(ids)).toEqual(ids.map(() => 'applied'));
    expect(routeCount('GET /api/users')).toBeLessThanOrEqual(2);
    expect(logtoRoutes().filter((route) => route.includes('organizations'))).toEqual([]);
    await expectMirrorEqualsLogto();
  });

  it('applies full-data deliveries of many users in arrival order per user, with no read from Logto', async () => {
    const targets = sim.state.listUsers().slice(10, 60);
    const payloads: Record<string, unknown>[] = [];
    // Two renames per user, interleaved with the other users' deliveries; the second is the later one.
    for (const round of [1, 2]) {
      for (const user of targets) {
        sim.state.updateUser(user.id, { name: `${user.username ?? user.id} #${round}` });
        payloads.push(fullUpdate(await logtoUser(user.id)));
      }
    }
    // A user deleted after its update: the deletion comes last and wins.
    const doomed = targets[0]!;
    sim.state.deleteUser(doomed.id);
    payloads.push({ event: 'User.Deleted', createdAt: new Date().toISOString(), params: { userId: doomed.id }, data: { id: doomed.id } });
    sim.faults.resetStats();
    const ids = await enqueue(payloads);
    await drain();
    expect(await statuses(ids)).toEqual(ids.map(() => 'applied'));
    expect(sim.stats().total).toBe(0);
    await expectMirrorEqualsLogto();
    for (const user of targets.slice(1, 6)) {
      const changes = await database.db
        .select({ kind: accessChanges.kind, deliveryId: accessChanges.deliveryId })
        .from(accessChanges)
        .where(eq(accessChanges.userId, user.id))
        .orderBy(asc(accessChanges.id));
      const updates = changes.filter((change) => change.kind === 'user.updated').map((change) => change.deliveryId!);
      expect(updates).toHaveLength(2);
      expect(updates[0]!).toBeLessThan(updates[1]!);
    }
    const doomedChanges = await database.db.select({ kind: accessChanges.kind }).from(accessChanges).where(eq(accessChanges.userId, doomed.id)).orderBy(asc(accessChanges.id));
    expect(doomedChanges.map((change) => change.kind).filter((kind) => kind.startsWith('user.'))).toEqual(['user.created', 'user.updated', 'user.updated', 'user.deleted']);
  });
});
