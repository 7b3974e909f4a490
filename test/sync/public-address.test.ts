import { describe, expect, it } from 'vitest';
import { checkSubscriberUrl, isPrivateAddress } from '../../src/sync/public-address.js';

describe('the subscriber address guard', () => {
  it('tells private, loopback, link-local and reserved addresses from public ones, IPv4 and IPv6', () => {
    for (const address of [
      '127.0.0.1',
      '10.0.0.1',
      '172.16.5.4',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fd12:3456::1',
      'fc00::1',
      'ff02::1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '::ffff:10.0.0.1',
      '64:ff9b::a9fe:a9fe',
      '2002:c0a8:0101::1',
    ]) {
      expect(isPrivateAddress(address), address).toBe(true);
    }
    for (const address of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', '172.32.0.1', '100.128.0.1']) {
      expect(isPrivateAddress(address), address).toBe(false);
    }
  });

  it('accepts only http(s) URLs without credentials, and private hosts only when allowed', async () => {
    expect(await checkSubscriberUrl('https://8.8.8.8/hook', false)).toEqual({ ok: true });
    expect(await checkSubscriberUrl('ftp://8.8.8.8/hook', true)).toMatchObject({ ok: false });
    expect(await checkSubscriberUrl('https://user:pass@8.8.8.8/hook', true)).toMatchObject({ ok: false });
    expect(await checkSubscriberUrl('http://localhost:3000/hook', false)).toMatchObject({ ok: false });
    expect(await checkSubscriberUrl('http://[::ffff:169.254.169.254]/', false)).toMatchObject({ ok: false });
    expect(await checkSubscriberUrl('http://localhost:3000/hook', true)).toEqual({ ok: true });
  });
});
