import { z } from 'zod';
import { accessEventTypes, eventTypeOfKind, webhookIdOf } from '../db/access-events.js';
import {
  deleteEventSubscription,
  findEventSubscription,
  listEventSubscriptions,
  type EventSubscription,
} from '../db/event-subscriptions.js';
import { findOutboxRow, listOutboxRows, replayChanges, retryOutboxRow, type OutboxDelivery } from '../db/outbox.js';
import { encodeCursor } from '../db/queries/pagination.js';
import { notFound } from '../errors.js';
import { changeEventSubscription, createEventSubscription, rotateSigningSecret } from '../sync/event-subscriptions.js';
import { defineRoute } from './route.js';
import { cursorParam, idParam, isoDateTime, isoOrNull, limitParam, listOf, numberKey, pageQuery, serialParam } from './schemas.js';

const eventType = z.enum(accessEventTypes, { error: `must be one of ${accessEventTypes.join(', ')}` });
const eventTypes = z.array(eventType).min(1, 'must name at least one event type').max(accessEventTypes.length * 2);
const subscriberUrl = z
  .string({ error: 'must be an http(s) URL' })
  .max(2000, 'must be at most 2000 characters')
  .refine((value) => /^https?:\/\//i.test(value) && URL.canParse(value), 'must be an http(s) URL');
const description = z.string().max(500, 'must be at most 500 characters');

const subscriptionSchema = z.object({
  id: z.string(),
  url: z.string(),
  description: z.string().nullable(),
  eventTypes: z.array(eventType).nullable().describe('Null: every event type, including types added later'),
  enabled: z.boolean(),
  disabledReason: z.string().nullable().describe('Why the subscription stopped receiving events'),
  previousSecretExpiresAt: isoDateTime.nullable().describe('Until when the rotated-out secret still signs beside the current one'),
  createdAt: isoDateTime,
  updatedAt: isoDateTime,
});

const withSecret = subscriptionSchema.extend({
  secret: z.string().describe('The Standard Webhooks signing secret (whsec_…); shown only in this answer'),
});

const deliverySchema = z.object({
  id: z.number().int(),
  changeId: z.number().int(),
  webhookId: z.string().describe('The webhook-id header: the same for every attempt'),
  eventType: z.string().nullable().describe('Null until the first attempt'),
  status: z.enum(['pending', 'processing', 'delivered', 'failed']),
  attempts: z.number().int(),
  lastResponseStatus: z.number().int().nullable().describe('HTTP status of the last answer; null when none came'),
  lastError: z.string().nullable(),
  lastAttemptAt: isoDateTime.nullable(),
  nextAttemptAt: isoDateTime.nullable().describe('For pending deliveries'),
  deliveredAt: isoDateTime.nullable(),
  replay: z.boolean(),
  createdAt: isoDateTime,
});

const toSubscription = (subscription: EventSubscription): z.infer<typeof subscriptionSchema> => ({
  id: subscription.id,
  url: subscription.url,
  description: subscription.description,
  eventTypes: (subscription.eventTypes as z.infer<typeof eventType>[] | null) ?? null,
  enabled: subscription.enabled,
  disabledReason: subscription.disabledReason,
  previousSecretExpiresAt:
    subscription.previousSecret && subscription.previousSecretExpiresAt && subscription.previousSecretExpiresAt > new Date()
      ? subscription.previousSecretExpiresAt.toISOString()
      : null,
  createdAt: subscription.createdAt.toISOString(),
  updatedAt: subscription.updatedAt.toISOString(),
});

const toDelivery = (row: OutboxDelivery): z.infer<typeof deliverySchema> => ({
  id: row.id,
  changeId: row.changeId,
  webhookId: webhookIdOf(row.changeId),
  eventType: row.kind === null ? null : eventTypeOfKind(row.kind),
  status: row.status,
  attempts: row.attempts,
  lastResponseStatus: row.lastStatus,
  lastError: row.lastError,
  lastAttemptAt: isoOrNull(row.lastAttemptAt),
  nextAttemptAt: row.status === 'pending' ? row.nextAttemptAt.toISOString() : null,
  deliveredAt: isoOrNull(row.deliveredAt),
  replay: row.replay,
  createdAt: row.createdAt.toISOString(),
});

const subscriptionParams = z.object({ id: idParam('event subscription') });

const mustExist = async (db: Parameters<typeof findEventSubscription>[0], id: string): Promise<EventSubscription> => {
  const subscription = await findEventSubscription(db, id);
  if (!subscription) throw notFound('Event subscription', id);
  return subscription;
};

export const eventSubscriptionRoutes = [
  defineRoute({
    method: 'post',
    path: '/v1/event-subscriptions',
    operationId: 'createEventSubscription',
    summary: 'Subscribe a URL to access events (Standard Webhooks)',
    description:
      'The subscription receives an event for every change recorded from now on (use replay for earlier ones). ' +
      'Private, loopback and link-local addresses are refused unless EVENT_SUBSCRIPTIONS_ALLOW_PRIVATE_URLS=true.',
    tags: ['events'],
    auth: 'write',
    body: z.strictObject({
      url: subscriberUrl,
      eventTypes: eventTypes.optional().describe('Only these event types; every type when absent'),
      description: description.optional(),
    }),
    success: { status: 201, description: 'The subscription, with its signing secret', schema: withSecret },
    handler: async ({ deps, body, res }) => {
      const created = await createEventSubscription(deps.db, body, { allowPrivateUrls: deps.config.events.allowPrivateUrls });
      res.setHeader('Location', `/v1/event-subscriptions/${created.id}`);
      return { ...toSubscription(created), secret: created.secret };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/event-subscriptions',
    operationId: 'listEventSubscriptions',
    summary: 'Event subscriptions, newest first',
    tags: ['events'],
    auth: 'read',
    query: z.strictObject({ limit: limitParam, cursor: cursorParam(z.tuple([z.iso.datetime(), z.string().min(1)])) }),
    success: { status: 200, description: 'A page of subscriptions', schema: listOf(subscriptionSchema) },
    handler: async ({ deps, query }) => {
      const found = await listEventSubscriptions(deps.db, {
        limit: query.limit + 1,
        beforeCreatedAt: query.cursor ? { createdAt: new Date(query.cursor[0]), id: query.cursor[1] } : undefined,
      });
      const page = found.slice(0, query.limit);
      const last = page[page.length - 1];
      return {
        data: page.map(toSubscription),
        nextCursor: found.length > query.limit && last ? encodeCursor([last.createdAt.toISOString(), last.id]) : null,
      };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/event-subscriptions/:id',
    operationId: 'getEventSubscription',
    summary: 'One event subscription',
    tags: ['events'],
    auth: 'read',
    params: subscriptionParams,
    success: { status: 200, description: 'The subscription', schema: subscriptionSchema },
    errors: [404],
    handler: async ({ deps, params }) => toSubscription(await mustExist(deps.db, params.id)),
  }),
  defineRoute({
    method: 'patch',
    path: '/v1/event-subscriptions/:id',
    operationId: 'updateEventSubscription',
    summary: 'Change the URL, event types, description, or enable/disable',
    description: 'Enabling a disabled subscription clears its reason and resumes its pending deliveries.',
    tags: ['events'],
    auth: 'write',
    params: subscriptionParams,
    body: z.strictObject({
      url: subscriberUrl.optional(),
      eventTypes: eventTypes.nullable().optional().describe('Null: every event type'),
      description: description.nullable().optional(),
      enabled: z.boolean({ error: 'must be true or false' }).optional(),
    }),
    success: { status: 200, description: 'The subscription', schema: subscriptionSchema },
    errors: [404],
    handler: async ({ deps, params, body }) => {
      const updated = await changeEventSubscription(deps.db, params.id, body, { allowPrivateUrls: deps.config.events.allowPrivateUrls });
      if (!updated) throw notFound('Event subscription', params.id);
      if (body.enabled) deps.events?.wake();
      return toSubscription(updated);
    },
  }),
  defineRoute({
    method: 'delete',
    path: '/v1/event-subscriptions/:id',
    operationId: 'deleteEventSubscription',
    summary: 'Delete a subscription and its undelivered events',
    tags: ['events'],
    auth: 'write',
    params: subscriptionParams,
    success: { status: 204, description: 'Deleted' },
    errors: [404],
    handler: async ({ deps, params }) => {
      if (!(await deleteEventSubscription(deps.db, params.id))) throw notFound('Event subscription', params.id);
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/event-subscriptions/:id/rotate-secret',
    operationId: 'rotateEventSubscriptionSecret',
    summary: 'Replace the signing secret; the previous one keeps signing beside it for 24 hours',
    tags: ['events'],
    auth: 'write',
    params: subscriptionParams,
    success: { status: 200, description: 'The subscription, with its new signing secret', schema: withSecret },
    errors: [404],
    handler: async ({ deps, params }) => {
      const rotated = await rotateSigningSecret(deps.db, params.id);
      if (!rotated) throw notFound('Event subscription', params.id);
      return { ...toSubscription(rotated), secret: rotated.secret };
    },
  }),
  defineRoute({
    method: 'get',
    path: '/v1/event-subscriptions/:id/deliveries',
    operationId: 'listEventDeliveries',
    summary: "A subscription's deliveries, newest first",
    tags: ['events'],
    auth: 'read',
    params: subscriptionParams,
    query: z.strictObject({
      status: z
        .enum(['pending', 'processing', 'delivered', 'failed'], { error: 'must be pending, processing, delivered or failed' })
        .optional()
        .describe('Only deliveries in this state'),
      ...pageQuery(numberKey),
    }),
    success: { status: 200, description: 'A page of deliveries', schema: listOf(deliverySchema) },
    errors: [404],
    handler: async ({ deps, params, query }) => {
      await mustExist(deps.db, params.id);
      const found = await listOutboxRows(deps.db, params.id, { limit: query.limit + 1, beforeId: query.cursor?.[0], status: query.status });
      const page = found.slice(0, query.limit);
      const last = page[page.length - 1];
      return { data: page.map(toDelivery), nextCursor: found.length > query.limit && last ? encodeCursor([last.id]) : null };
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/event-subscriptions/:id/deliveries/:deliveryId/retry',
    operationId: 'retryEventDelivery',
    summary: 'Send a delivery again now, with a fresh attempt budget',
    tags: ['events'],
    auth: 'write',
    params: z.object({ id: idParam('event subscription'), deliveryId: serialParam('delivery') }),
    success: { status: 202, description: 'The delivery, pending again (unchanged while it is being sent)', schema: deliverySchema },
    errors: [404],
    handler: async ({ deps, params }) => {
      if (!(await findOutboxRow(deps.db, params.id, params.deliveryId))) throw notFound('Delivery', String(params.deliveryId));
      const retried = await retryOutboxRow(deps.db, params.id, params.deliveryId);
      deps.events?.wake();
      return toDelivery(retried!);
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/event-subscriptions/:id/replay',
    operationId: 'replayEvents',
    summary: 'Send again, from the change log, every matching event recorded since a time',
    description: 'Replayed events carry their original webhook-id, so receivers that keep ids drop those they already have.',
    tags: ['events'],
    auth: 'write',
    params: subscriptionParams,
    body: z.strictObject({
      since: z
        .string({ error: 'must be an ISO 8601 date-time with offset' })
        .refine((value) => !Number.isNaN(Date.parse(value)) && /(Z|[+-]\d{2}:\d{2})$/.test(value), 'must be an ISO 8601 date-time with offset')
        .transform((value) => new Date(value)),
    }),
    success: {
      status: 202,
      description: 'The events are queued',
      schema: z.object({ queued: z.number().int().describe('How many deliveries were queued') }),
    },
    errors: [404],
    handler: async ({ deps, params, body }) => {
      await mustExist(deps.db, params.id);
      const queued = await replayChanges(deps.db, params.id, body.since);
      deps.events?.wake();
      return { queued };
    },
  }),
];
