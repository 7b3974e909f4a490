import { createHmac, timingSafeEqual } from 'node:crypto';

export const logtoSignatureHeader = 'logto-signature-sha-256';

/** Logto's signature: lowercase hex HMAC-SHA256 of the raw body, keyed with the hook's signing key as UTF-8. */
export const signLogtoBody = (signingKey: string, rawBody: Buffer | string): string =>
  createHmac('sha256', signingKey).update(rawBody).digest('hex');

/**
 * True when any of the keys produced `signature` over these exact bytes. Several keys let an operator
 * rotate: configure old and new, switch Logto over, then drop the old one. Comparison is constant time.
 */
export const verifyLogtoSignature = (signingKeys: readonly string[], rawBody: Buffer, signature: string | undefined): boolean => {
  if (!signature || !/^[0-9a-f]{64}$/i.test(signature)) return false;
  const presented = Buffer.from(signature.toLowerCase(), 'hex');
  let valid = false;
  for (const key of signingKeys) {
    const expected = Buffer.from(signLogtoBody(key, rawBody), 'hex');
    // Every key is checked, so the time taken does not tell which one matched.
    if (timingSafeEqual(expected, presented)) valid = true;
  }
  return valid;
};
