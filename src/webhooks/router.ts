import { createHash } from 'node:crypto';
import express, { type Request, type Response } from 'express';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { insertDelivery, type DeliveryChannel } from '../db/inbox.js';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';
import { metrics } from '../metrics.js';
import { logtoSignatureHeader, verifyLogtoSignature } from './signature.js';
import { standardWebhookId, verifyStandardWebhook } from './standard-webhooks.js';

export type WebhookRouterDeps = {
  db: Database;
  config: Config;
  logger: Logger;
  /** Called after a delivery is committed, so the worker in this process picks it up at once. */
  onDelivery?: () => void;
};

export const maxWebhookBodyBytes = 1024 * 1024;

/**
 * `POST /webhooks/logto`. Logto sends each webhook once and waits at most 10 s, so the only job here is
 * to verify the signature over the raw bytes, commit the delivery to the inbox and answer. Applying it
 * is the worker's job. Errors are thrown as AppErrors and rendered as problem+json by the app.
 */
export const createWebhookRouter = (deps: WebhookRouterDeps): express.Router => {
  const router = express.Router();
  router.post('/logto', express.raw({ type: () => true, limit: maxWebhookBodyBytes }), async (req: Request, res: Response) => {
    const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const refuse = (outcome: string, error: AppError): never => {
      metrics.webhookDeliveries.inc({ outcome });
      throw error;
    };
    if (raw.length === 0) refuse('invalid', new AppError(400, 'empty_body', 'The delivery has no body'));

    const relayedId = standardWebhookId(req.headers);
    const channel: DeliveryChannel = relayedId ? 'svix' : 'logto';
    const verified = relayedId
      ? deps.config.webhooks.svixSecret !== undefined && verifyStandardWebhook(deps.config.webhooks.svixSecret, raw, req.headers)
      : verifyLogtoSignature(deps.config.webhooks.signingKeys, raw, headerValue(req, logtoSignatureHeader));
    if (!verified) {
      deps.logger.warn(
        { channel, ip: req.ip, userAgent: req.headers['user-agent'], bytes: raw.length },
        'webhook refused: missing or wrong signature',
      );
      refuse(
        'unauthorized',
        new AppError(401, 'invalid_signature', `The delivery's ${channel === 'svix' ? 'Standard Webhooks' : 'Logto'} signature is missing or does not verify`),
      );
    }

    let payload: unknown;
    try {
      payload = JSON.parse(raw.toString('utf8'));
    } catch {
      refuse('invalid', new AppError(400, 'invalid_json', 'The delivery body is not valid JSON'));
    }
    if (!payload || typeof payload !== 'object' || Array.isArray(payload)) {
      refuse('invalid', new AppError(400, 'invalid_payload', 'The delivery body must be a JSON object'));
    }

    // Logto sends no delivery id: the raw bytes identify a delivery (its createdAt makes each one distinct).
    const dedupKey = relayedId ? `svix:${relayedId}` : `sha256:${createHash('sha256').update(raw).digest('hex')}`;
    let stored: { id: number; duplicate: boolean };
    try {
      stored = await insertDelivery(deps.db, { dedupKey, channel, payload: payload as Record<string, unknown> });
    } catch (error) {
      deps.logger.error({ err: error }, 'webhook not stored: the database did not take it');
      res.set('Retry-After', '5');
      return refuse('unavailable', new AppError(503, 'inbox_unavailable', 'The delivery could not be stored; try again'));
    }
    metrics.webhookDeliveries.inc({ outcome: stored.duplicate ? 'duplicate' : 'accepted' });
    if (!stored.duplicate) deps.onDelivery?.();
    res.status(202).json(stored);
  });
  // body-parser refuses an oversized body before the handler runs; count it, then let the app answer 413.
  router.use((error: { type?: string }, _req: Request, _res: Response, next: (error: unknown) => void) => {
    if (error?.type === 'entity.too.large') metrics.webhookDeliveries.inc({ outcome: 'too_large' });
    next(error);
  });
  return router;
};

const headerValue = (req: Request, name: string): string | undefined => {
  const value = req.headers[name];
  return typeof value === 'string' ? value : undefined;
};
