import type { IncomingHttpHeaders } from 'node:http';
import { Webhook, WebhookVerificationError } from 'svix';

/** The message id of a Svix / Standard Webhooks delivery, if the request carries one. */
export const standardWebhookId = (headers: IncomingHttpHeaders): string | undefined => {
  const id = headers['svix-id'] ?? headers['webhook-id'];
  return typeof id === 'string' && id.length > 0 ? id : undefined;
};

/**
 * Verifies a delivery relayed through Svix or another Standard Webhooks sender with the svix library,
 * which also enforces its timestamp tolerance (replays of old messages fail). The `webhook-*` header
 * names of the standard are mapped onto the `svix-*` ones the library reads.
 */
export const verifyStandardWebhook = (secret: string, rawBody: Buffer, headers: IncomingHttpHeaders): boolean => {
  const pick = (name: string) => {
    const value = headers[`svix-${name}`] ?? headers[`webhook-${name}`];
    return typeof value === 'string' ? value : '';
  };
  try {
    new Webhook(secret).verify(rawBody.toString('utf8'), {
      'svix-id': pick('id'),
      'svix-timestamp': pick('timestamp'),
      'svix-signature': pick('signature'),
    });
    return true;
  } catch (error) {
    if (error instanceof WebhookVerificationError) return false;
    throw error;
  }
};
