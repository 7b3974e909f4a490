import http from 'node:http';
import request from 'supertest';
import { syncRuns } from '../../db/schema.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/logger.js';
import { startService, type Service } from '../../src/service.js';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startEventReceiver, type EventReceiver } from '../helpers/event-receiver.js';
import { startTenant, tenantEnvironment } from '../helpers/tenant.js';

const apiKey = 'e2e-events-secret-0123456789abcdef';

/** Events out as the service runs them: subscribe through the API, change Logto, receive the webhook and the stream event. */
describe('access events from the running service', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;
  let service: Service;
  let receiver: EventReceiver;
  let secret = '';
  const auth = { authorization: `Bearer ${apiKey}` };

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 6, generate: { users: 30, organizations: 4, organizationRoles: 2 } });
    const config = loadConfig({
      ...tenantEnvironment(sim),
      PORT: '0',
      HOST: '127.0.0.1',
      API_KEYS: `e2e:write:${apiKey}`,
      LOG_LEVEL: 'silent',
      EVENT_SUBSCRIPTIONS_ALLOW_PRIVATE_URLS: 'true',
    });
    service = await startService(config, { logger: silentLogger, jobs: false, database, eventSender: { pollIntervalMs: 50 } });
    sim.setWebhookEndpoints([{ url: `${service.url}/webhooks/logto` }]);
    receiver = await startEventReceiver(() => secret);
    for (let waited = 0; waited < 400; waited += 1) {
      const [run] = await database.db.select().from(syncRuns);
      if (run && run.status !== 'running') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
  afterAll(async () => {
    await service?.close();
    await receiver.close();
    await sim.close();
    await database.drop();
  });

  it('delivers a Logto change made after the baseline as a signed webhook and as a stream event', async () => {
    const created = await request(service.url).post('/v1/event-subscriptions').set(auth).send({ url: receiver.url });
    expect(created.status).toBe(201);
    secret = created.body.secret as string;

    const streamed: string[] = [];
    const stream = http.get(`${service.url}/v1/changes/stream`, { headers: auth }, (response) => {
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => streamed.push(chunk));
      response.on('error', () => {});
    });
    stream.on('error', () => {});
    await new Promise((resolve) => setTimeout(resolve, 300));

    const user = sim.state.listUsers()[0]!;
    await sim.api.patch(`/users/${user.id}`, { name: 'Announced everywhere' });
    await receiver.waitFor((received) => received.some((event) => event.body.type === 'user.updated'));
    // The baseline came before the subscription: it was not sent.
    expect(receiver.received.map((entry) => entry.body.type)).toEqual(['user.updated']);
    const event = receiver.delivered().find((entry) => entry.body.type === 'user.updated')!;
    expect(event.body.data).toMatchObject({ userId: user.id, source: 'webhook', user: { name: 'Announced everywhere' } });
    for (let waited = 0; !streamed.join('').includes(`id: ${event.body.data.changeId}\nevent: user.updated\n`); waited += 1) {
      if (waited > 200) throw new Error(`the stream did not carry the change: ${streamed.join('')}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    // The sender records the answer after the receiver has sent it: wait for the record, not for the clock.
    let deliveries = await request(service.url).get(`/v1/event-subscriptions/${created.body.id}/deliveries`).set(auth);
    for (let waited = 0; deliveries.body.data[0]?.status === 'processing'; waited += 1) {
      if (waited > 200) throw new Error('the delivery was never recorded');
      await new Promise((resolve) => setTimeout(resolve, 25));
      deliveries = await request(service.url).get(`/v1/event-subscriptions/${created.body.id}/deliveries`).set(auth);
    }
    expect(deliveries.body.data[0]).toMatchObject({ status: 'delivered', attempts: 1, lastResponseStatus: 204, eventType: 'user.updated' });
    // The stream ends with the service, so shutdown does not wait for the client.
    await service.close();
    stream.destroy();
  });
});
