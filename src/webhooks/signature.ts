import { createHmac, timingSafeEqual } from 'node:crypto';

export const logtoSignatureHeader = 'logto-signature-sha-256';

/** Logto's signature: lowercase hex HMAC-SHA256 of the raw body, keyed with the hook's signing key as UTF-8. */
export const signLogtoBody = (signingKey: string, rawBody: Buffer | string): string =>
  createHmac('sha256', signingKey).update(rawBody).digest('hex');

const hexSha256 = /^[0-9a-f]{64}$/;

/**
 * True when any of the keys produced `signature` over these exact bytes. Several keys let an operator
 * rotate without downtime: configure old and new, switch Logto over, then drop the old one. Buffers of
 * equal length are compared with `timingSafeEqual`, and every key is tried whichever matched.
 */
export const verifyLogtoSignature = (signingKeys: readonly string[], rawBody: Buffer, signature: string | undefined): boolean => {
  if (!signature || !hexSha256.test(signature)) return false;
  const presented = Buffer.from(signature, 'hex');
  let valid = false;
  for (const key of signingKeys) {
    const expected = createHmac('sha256', key).update(rawBody).digest();
    if (expected.length === presented.length && timingSafeEqual(expected, presented)) valid = true;
  }
  return valid;
};
