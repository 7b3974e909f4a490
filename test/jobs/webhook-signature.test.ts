import { randomBytes } from 'node:crypto';
import { Webhook } from 'svix';
import { describe, expect, it } from 'vitest';
import { createWebhookSigner } from '../../src/jobs/webhook-signature.js';
import { newSigningSecret } from '../../src/sync/event-subscriptions.js';

/** The sender's signatures are svix's, byte for byte, and svix's `verify` accepts them. */
describe('the webhook signer', () => {
  const payloads = [
    '{}',
    JSON.stringify({ type: 'user.updated', data: { userId: 'u1', name: 'Zoë 山田 🚀', note: 'quote " and \\ backslash' } }),
    JSON.stringify({ type: 'organization.updated', data: { description: 'x'.repeat(70_000) } }),
  ];

  it('gives the signature svix gives for the same secret, id, time and body', () => {
    const sign = createWebhookSigner();
    const secrets = [newSigningSecret(), newSigningSecret(), `whsec_${randomBytes(32).toString('base64')}`];
    const at = new Date('2026-12-02T20:00:00.750Z');
    for (const secret of secrets) {
      for (const payload of payloads) {
        const expected = new Webhook(secret).sign('evt_42', at, payload);
        expect(sign(secret, 'evt_42', Math.floor(at.getTime() / 1000), payload)).toBe(expected);
      }
    }
  });

  it('signs what svix verifies, and a changed body or id fails', () => {
    const sign = createWebhookSigner();
    const secret = newSigningSecret();
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = (id: string, signature: string) => ({ 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature });
    const signature = sign(secret, 'evt_7', timestamp, payloads[1]!);
    expect(new Webhook(secret).verify(payloads[1]!, headers('evt_7', signature))).toMatchObject({ type: 'user.updated' });
    expect(() => new Webhook(secret).verify(payloads[0]!, headers('evt_7', signature))).toThrow();
    expect(() => new Webhook(secret).verify(payloads[1]!, headers('evt_8', signature))).toThrow();
  });

  it('refuses a secret that is not base64, as svix does', () => {
    const sign = createWebhookSigner();
    expect(() => new Webhook('whsec_not*base64!')).toThrow();
    expect(() => sign('whsec_not*base64!', 'evt_1', 0, '{}')).toThrow(/base64/);
  });
});
