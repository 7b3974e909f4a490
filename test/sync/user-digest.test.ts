import { describe, expect, it } from 'vitest';
import type { LogtoUser } from '../../src/logto/index.js';
import { comparedDigest, toUserRow, userDigest } from '../../src/sync/apply/users.js';

const user = (overrides: Partial<LogtoUser> = {}): LogtoUser =>
  ({
    id: 'u1',
    username: 'ada',
    primaryEmail: 'ada@example.com',
    primaryPhone: null,
    name: 'Ada',
    avatar: null,
    customData: {},
    profile: {},
    applicationId: null,
    lastSignInAt: null,
    createdAt: 1_700_000_000_000,
    updatedAt: 1_700_000_000_500,
    isSuspended: false,
    ...overrides,
  }) as LogtoUser;

describe('user digest', () => {
  const cases: [string, Partial<LogtoUser>][] = [
    ['a plain user', {}],
    ['absent optional fields', { username: undefined, name: undefined, primaryEmail: undefined } as Partial<LogtoUser>],
    ['a sign-in at the epoch', { lastSignInAt: 0 }],
    ['fractional instants', { createdAt: 1_700_000_000_000.7, updatedAt: -0.5, lastSignInAt: 12.9 }],
    ['nested custom data and profile', { customData: { b: [1, { y: 2, x: null }], a: 'é' }, profile: { givenName: 'Ada', address: { locality: 'London' } } }],
    ['a suspended user', { isSuspended: true }],
  ];
  it.each(cases)('is the same from Logto\'s user as from the row written: %s', (_name, overrides) => {
    const incoming = user(overrides);
    expect(userDigest(incoming)).toBe(comparedDigest(toUserRow(incoming, new Date())));
    expect(toUserRow(incoming, new Date()).comparedDigest).toBe(userDigest(incoming));
  });

  it('ignores key order in custom data, as jsonb equality does, and tells every compared field apart', () => {
    const base = userDigest(user({ customData: { a: 1, b: { c: 2, d: 3 } } }));
    expect(userDigest(user({ customData: { b: { d: 3, c: 2 }, a: 1 } }))).toBe(base);
    const changed: Partial<LogtoUser>[] = [
      { customData: { a: 1, b: { c: 2, d: 4 } } },
      { username: 'ada2' },
      { primaryEmail: null },
      { primaryPhone: '+1' },
      { name: 'Ada L' },
      { avatar: 'https://a' },
      { applicationId: 'app' },
      { lastSignInAt: 1 },
      { createdAt: 1_700_000_000_001 },
      { updatedAt: 1_700_000_000_501 },
      { isSuspended: true },
      { profile: { givenName: 'Ada' } },
      // A value moved between two text fields is a change.
      { username: null, name: 'ada' },
    ];
    const digests = changed.map((overrides) => userDigest(user({ customData: { a: 1, b: { c: 2, d: 3 } }, ...overrides })));
    expect(new Set([base, ...digests]).size).toBe(changed.length + 1);
  });
});
