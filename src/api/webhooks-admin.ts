import { z } from 'zod';
import { encodeCursor } from '../db/queries/pagination.js';
import { listDeadLetters } from '../db/queries/webhook-deliveries.js';
import { notFound } from '../errors.js';
import { defineRoute } from './route.js';
import { isoDateTime, isoOrNull, listOf, numberKey, pageQuery, serialParam } from './schemas.js';

const deadLetterSchema = z.object({
  id: z.number().int(),
  event: z.string(),
  channel: z.string().describe('How it arrived: logto, svix or recent_logs'),
  receivedAt: isoDateTime,
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  processedAt: isoDateTime.nullable().describe('When it was given up on'),
  payload: z.record(z.string(), z.unknown()),
});

export const webhookAdminRoutes = [
  defineRoute({
    method: 'get',
    path: '/v1/webhooks/dead-letters',
    operationId: 'listDeadLetters',
    summary: 'Webhook deliveries that exhausted their attempts, newest first',
    tags: ['webhooks'],
    auth: 'read',
    query: z.strictObject(pageQuery(numberKey)),
    success: { status: 200, description: 'A page of dead deliveries', schema: listOf(deadLetterSchema) },
    handler: async ({ deps, query }) => {
      const page = await listDeadLetters(deps.db, { limit: query.limit, after: query.cursor });
      return {
        data: page.rows.map((row) => ({
          ...row,
          receivedAt: row.receivedAt.toISOString(),
          processedAt: isoOrNull(row.processedAt),
        })),
        nextCursor: page.next && encodeCursor(page.next),
      };
    },
  }),
  defineRoute({
    method: 'post',
    path: '/v1/webhooks/dead-letters/:id/retry',
    operationId: 'retryDeadLetter',
    summary: 'Put a dead delivery back in the inbox',
    tags: ['webhooks'],
    auth: 'write',
    params: z.object({ id: serialParam('delivery') }),
    success: {
      status: 202,
      description: 'The delivery is pending again',
      schema: z.object({ id: z.number().int(), status: z.literal('pending') }),
    },
    errors: [404],
    handler: async ({ deps, params }) => {
      if (!(await deps.actions.retryDeadLetter(params.id))) throw notFound('Dead letter', String(params.id));
      return { id: params.id, status: 'pending' as const };
    },
  }),
];

/** Documentation of the webhook receiver, which another module serves (mounted at /webhooks). */
export const webhookReceiverOperation: Record<string, unknown> = {
  operationId: 'receiveLogtoWebhook',
  summary: 'Logto webhook receiver',
  description:
    'Configure this URL as a Logto webhook. The signature (logto-signature-sha-256, or Standard Webhooks headers when relayed) ' +
    'is verified over the raw body; the delivery is stored durably and acknowledged at once, then applied from the inbox.',
  tags: ['webhooks'],
  security: [],
  parameters: [
    {
      name: 'logto-signature-sha-256',
      in: 'header',
      required: false,
      description: 'HMAC-SHA256 of the raw body with the webhook signing key (hex)',
      schema: { type: 'string' },
    },
  ],
  requestBody: {
    required: true,
    content: { 'application/json': { schema: { type: 'object', description: 'A Logto webhook event' } } },
  },
  responses: {
    '2XX': { description: 'Stored (or recognised as a duplicate)' },
    '401': { $ref: '#/components/responses/Unauthorized' },
    '503': { $ref: '#/components/responses/ServiceUnavailable' },
  },
};
