import type { IncomingHttpHeaders } from 'node:http';
import { Webhook, WebhookVerificationError } from 'svix';

const single = (value: string | string[] | undefined): string | undefined =>
  typeof value === 'string' && value.length > 0 ? value : undefined;

/** The message id of a Svix / Standard Webhooks delivery (`svix-id` or `webhook-id`), if the request carries one. */
export const standardWebhookId = (headers: IncomingHttpHeaders): string | undefined =>
  single(headers['svix-id']) ?? single(headers['webhook-id']);

export type StandardWebhookVerifier = (rawBody: Buffer, headers: IncomingHttpHeaders) => boolean;

/**
 * Verifies deliveries relayed through Svix or another Standard Webhooks sender with the svix library,
 * which also enforces its timestamp tolerance (five minutes: a replayed old message fails). The
 * standard's `webhook-*` header names are mapped onto the `svix-*` ones the library reads. The secret
 * (`whsec_…`) is decoded once, here.
 */
export const createStandardWebhookVerifier = (secret: string): StandardWebhookVerifier => {
  let webhook: Webhook;
  try {
    webhook = new Webhook(secret);
  } catch {
    throw new Error('SVIX_WEBHOOK_SECRET is not a valid Standard Webhooks secret (expected whsec_ followed by base64)');
  }
  return (rawBody, headers) => {
    const pick = (name: 'id' | 'timestamp' | 'signature') =>
      single(headers[`svix-${name}`]) ?? single(headers[`webhook-${name}`]) ?? '';
    try {
      webhook.verify(rawBody, { 'svix-id': pick('id'), 'svix-timestamp': pick('timestamp'), 'svix-signature': pick('signature') });
      return true;
    } catch (error) {
      if (error instanceof WebhookVerificationError) return false;
      // The library parses the body as JSON once the signature matched: a verified body that is not
      // JSON lands here, and the receiver answers it with its own 400.
      if (error instanceof SyntaxError) return true;
      throw error;
    }
  };
};

/** One-off verification (tests, tools); the receiver keeps a verifier per secret. */
export const verifyStandardWebhook = (secret: string, rawBody: Buffer, headers: IncomingHttpHeaders): boolean =>
  createStandardWebhookVerifier(secret)(rawBody, headers);
