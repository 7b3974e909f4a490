import { createHash } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { eventName, type DeliveryChannel } from '../db/inbox.js';
import type { InboxIntake } from '../jobs/inbox-worker.js';
import type { Logger } from '../logger.js';
import { metrics } from '../metrics.js';
import { sendProblem } from '../problem.js';
import { coalescedWake } from './coalesced-wake.js';
import { createDeliveryStore, type DeliveryStoreOptions, type StoredDelivery } from './delivery-store.js';
import { logtoSignatureHeader, verifyLogtoSignature } from './signature.js';
import { createStandardWebhookVerifier, standardWebhookId } from './standard-webhooks.js';
import { maxPayloadDepth, mayNeedStorableCheck, toStorableJson } from './storable-json.js';

export type WebhookRouterDeps = {
  db: Database;
  config: Config;
  logger: Logger;
  /** Called after a delivery is committed pending, so the worker in this process picks it up at once. */
  onDelivery?: () => void;
  /**
   * This process's inbox worker: while it has room, a delivery is stored already claimed by it and handed
   * over in memory once committed, instead of the worker claiming it back and parsing its payload again.
   */
  intake?: InboxIntake;
  /**
   * Under a stream of deliveries `onDelivery` is called at most once per this many milliseconds (default
   * 10): a wake after every commit had the worker claim and apply deliveries one or two at a time, each
   * claim, transaction and settle costing the cores the receiver needs more than the delivery itself.
   */
  wakeIntervalMs?: number;
  /** How deliveries arriving together share an insert (see `createDeliveryStore`). */
  store?: DeliveryStoreOptions;
};

export const maxWebhookBodyBytes = 1024 * 1024;

/** Seconds a sender is asked to wait when the inbox cannot take a delivery. */
export const inboxRetryAfterSeconds = 5;

type Outcome = 'accepted' | 'duplicate' | 'unauthorized' | 'invalid' | 'too_large' | 'unavailable';

/**
 * `POST /logto` (mounted at `/webhooks`). Logto sends each webhook once and waits at most 10 s, so the
 * only work here is to verify the signature over the raw bytes, commit the delivery to the inbox and
 * answer 202; applying it is the inbox worker's job. Every refusal is answered here as problem+json,
 * so the router needs nothing from the app it is mounted in (no body parser may run in front of it).
 */
export const createWebhookRouter = (deps: WebhookRouterDeps): express.Router => {
  const router = express.Router();
  const log = deps.logger.child({ component: 'webhook-receiver' });
  const { signingKeys, svixSecret } = deps.config.webhooks;
  const verifyRelayed = svixSecret ? createStandardWebhookVerifier(svixSecret) : null;
  const count = (outcome: Outcome) => metrics.webhookDeliveries.inc({ outcome });
  const deliveries = createDeliveryStore(deps.db, deps.store);
  const wake = deps.onDelivery
    ? coalescedWake(deps.onDelivery, deps.wakeIntervalMs ?? 10, (error) =>
        log.warn({ err: error }, 'onDelivery failed; the worker finds the delivery on its next poll'),
      )
    : () => {};
  // What is logged about a refused delivery: never its body, never its signature.
  const describe = (req: Request, raw: Buffer | null, channel?: DeliveryChannel) => ({
    channel,
    ip: req.ip,
    userAgent: req.get('user-agent'),
    bytes: raw?.length ?? Number(req.get('content-length') ?? 0),
  });

  router.post('/logto', express.raw({ type: () => true, limit: maxWebhookBodyBytes }), async (req: Request, res: Response) => {
    const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (raw.length === 0) {
      count('invalid');
      sendProblem(req, 400, 'empty_body', 'The delivery has no body');
      return;
    }

    const relayedId = standardWebhookId(req.headers);
    const channel: DeliveryChannel = relayedId ? 'svix' : 'logto';
    const signature = req.headers[logtoSignatureHeader];
    const verified = relayedId
      ? verifyRelayed !== null && verifyRelayed(raw, req.headers)
      : verifyLogtoSignature(signingKeys, raw, typeof signature === 'string' ? signature : undefined);
    if (!verified) {
      count('unauthorized');
      log.warn(describe(req, raw, channel), 'webhook refused: missing or wrong signature');
      sendProblem(
        req,
        401,
        'invalid_signature',
        channel === 'svix'
          ? 'The Standard Webhooks signature is missing, does not verify, or its timestamp is outside the tolerance'
          : `The ${logtoSignatureHeader} signature is missing or does not verify`,
      );
      return;
    }

    let payload: unknown;
    const payloadText = raw.toString('utf8');
    try {
      payload = JSON.parse(payloadText);
    } catch {
      count('invalid');
      log.warn(describe(req, raw, channel), 'webhook refused: signed body is not JSON');
      sendProblem(req, 400, 'invalid_json', 'The delivery body is not valid JSON');
      return;
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
      count('invalid');
      log.warn(describe(req, raw, channel), 'webhook refused: signed body is not a JSON object');
      sendProblem(req, 400, 'invalid_payload', 'The delivery body must be a JSON object');
      return;
    }
    const parsed = payload;
    if (mayNeedStorableCheck(payloadText)) payload = toStorableJson(payload);
    // The received text is stored as is only when it needed no repair: otherwise PostgreSQL would refuse it.
    const storedText = payload === parsed ? payloadText : undefined;
    if (payload === null) {
      count('invalid');
      log.warn(describe(req, raw, channel), 'webhook refused: signed body nests too deep');
      sendProblem(req, 400, 'payload_too_deep', `The delivery body nests deeper than ${maxPayloadDepth} levels`);
      return;
    }

    // Logto sends no delivery id: the raw bytes identify a delivery (its createdAt makes each one distinct).
    const dedupKey = relayedId ? `svix:${relayedId}` : `sha256:${createHash('sha256').update(raw).digest('hex')}`;
    const input = { dedupKey, channel, payload: payload as Record<string, unknown>, payloadText: storedText };
    const ticket = deps.intake?.begin({ event: eventName(input.payload), payload: input.payload });
    let stored: StoredDelivery;
    try {
      stored = await deliveries.store(input, ticket?.claim ? ticket.leaseMs : null);
    } catch (error) {
      ticket?.finish(null);
      count('unavailable');
      log.error({ ...describe(req, raw, channel), err: error }, 'webhook not stored: the database did not take it');
      res.set('Retry-After', String(inboxRetryAfterSeconds));
      sendProblem(req, 503, 'inbox_unavailable', 'The delivery could not be stored; send it again later');
      return;
    }
    count(stored.duplicate ? 'duplicate' : 'accepted');
    if (log.isLevelEnabled('debug')) {
      log.debug({ deliveryId: stored.id, duplicate: stored.duplicate, channel, event: (payload as { event?: unknown }).event }, 'webhook stored');
    }
    const body = `{"id":${stored.id},"duplicate":${stored.duplicate}}`;
    res.statusCode = 202;
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
    if (ticket) ticket.finish(stored.delivery ?? null);
    if (!stored.duplicate && !stored.delivery) wake();
  });

  // Errors of the body parser (body too large, aborted request, unsupported encoding) as problem+json.
  router.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    const httpError = error as { status?: number; statusCode?: number; type?: string; expose?: boolean; message?: string };
    const status = httpError?.status ?? httpError?.statusCode;
    if (res.headersSent || typeof status !== 'number' || status < 400 || status >= 500) {
      next(error);
      return;
    }
    if (httpError.type === 'entity.too.large') {
      count('too_large');
      log.warn(describe(req, null), 'webhook refused: body over 1 MiB');
      sendProblem(req, 413, 'body_too_large', `The delivery body exceeds ${maxWebhookBodyBytes} bytes`);
      return;
    }
    count('invalid');
    const code = status === 415 ? 'unsupported_media_type' : 'bad_request';
    sendProblem(req, status, code, httpError.expose && httpError.message ? httpError.message : 'The delivery could not be read');
  });
  return router;
};
