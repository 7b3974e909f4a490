import { describe, expect, it } from 'vitest';
import { logtoOrganizationMemberSchema, logtoUserSchema, parseLogtoUser } from '../../src/logto/index.js';
import { isParsedMember, isParsedUser } from '../../src/logto/parse-user.js';
import { parseEnvelope, envelopeSchema, PermanentDeliveryError } from '../../src/sync/events/common.js';

const fullUser = () => ({
  id: 'u1',
  username: 'ada',
  primaryEmail: 'ada@example.com',
  primaryPhone: null,
  name: 'Ada',
  avatar: null,
  customData: { plan: 'gold', nested: { a: 1 } },
  identities: {},
  profile: { nickname: 'A' },
  lastSignInAt: 1_700_000_000_000,
  createdAt: 1_600_000_000_000,
  updatedAt: 1_700_000_000_001,
  applicationId: null,
  isSuspended: false,
  hasPassword: true,
  extra: { kept: true },
});

/** Users as deliveries may carry them: whole, with a field missing, null or of the wrong type, or an own `__proto__` key. */
const variants = (): unknown[] => {
  const out: unknown[] = [fullUser(), null, 'user', [], {}];
  const fields = Object.keys(fullUser());
  for (const field of fields) {
    for (const value of [undefined, null, '', 'text', 0, 1.5, true, {}, [], { k: 1 }]) {
      const user: Record<string, unknown> = fullUser();
      if (value === undefined) delete user[field];
      else user[field] = value;
      out.push(user);
    }
  }
  out.push(JSON.parse(`{"__proto__":{"x":1},${JSON.stringify(fullUser()).slice(1)}`));
  for (const record of ['customData', 'identities', 'profile']) {
    const user: Record<string, unknown> = fullUser();
    user[record] = JSON.parse('{"__proto__":{"x":1},"k":1}');
    out.push(user);
  }
  return out;
};

describe('parseLogtoUser', () => {
  it('answers as logtoUserSchema.safeParse does, for every kind of user a delivery may carry', () => {
    const cases = variants();
    let unchanged = 0;
    for (const value of cases) {
      const zod = logtoUserSchema.safeParse(value);
      const parsed = parseLogtoUser(value);
      expect(parsed).toStrictEqual(zod.success ? zod.data : null);
      if (parsed === value) unchanged += 1;
    }
    // The whole users came back as they were, without a copy; the rest through zod.
    expect(unchanged).toBeGreaterThan(10);
  });
});

/** Member items as a page may carry them: a user variant with its roles, and roles missing, empty, sparse or of the wrong shape. */
const memberVariants = (): unknown[] => {
  const role = () => ({ id: 'r1', name: 'admin', extra: 1 });
  const out: unknown[] = variants().map((user) => (user !== null && typeof user === 'object' && !Array.isArray(user) ? { ...user, organizationRoles: [role()] } : user));
  const member = () => ({ ...fullUser(), organizationRoles: [role()] as unknown });
  for (const roles of [undefined, null, {}, 'r1', [], [role(), role()], [null], ['r1'], [{ id: 'r1' }], [{ id: '', name: 'x' }], [{ id: 1, name: 'x' }],
    [{ id: 'r1', name: null }], [[]], [JSON.parse('{"__proto__":{"x":1},"id":"r1","name":"admin"}')], new Array(2)]) {
    const item: Record<string, unknown> = member();
    if (roles === undefined) delete item.organizationRoles;
    else item.organizationRoles = roles;
    out.push(item);
  }
  return out;
};

describe('the crawl takes a whole user or member as it is', () => {
  it('only where zod would return it unchanged: every other value is left to zod', () => {
    for (const [schema, parsed, cases] of [
      [logtoUserSchema, isParsedUser, variants()],
      [logtoOrganizationMemberSchema, isParsedMember, memberVariants()],
    ] as const) {
      let taken = 0;
      for (const value of cases) {
        if (!parsed(value)) continue;
        taken += 1;
        const zod = schema.safeParse(value);
        expect(zod.success).toBe(true);
        expect(zod.data).toStrictEqual(value);
      }
      expect(taken).toBeGreaterThan(10);
    }
    // Not taken: what zod rejects, and what it would change (a default filled in).
    const rejected = memberVariants().filter((value) => !logtoOrganizationMemberSchema.safeParse(value).success);
    expect(rejected.length).toBeGreaterThan(20);
    for (const value of rejected) expect(isParsedMember(value)).toBe(false);
    const { customData: _customData, ...withoutCustomData } = { ...fullUser(), organizationRoles: [] };
    expect(logtoOrganizationMemberSchema.safeParse(withoutCustomData).success).toBe(true);
    expect(isParsedMember(withoutCustomData)).toBe(false);
  });
});

describe('parseEnvelope', () => {
  it('answers as parsing with envelopeSchema does, and fails alike', () => {
    const base = { event: 'User.Data.Updated', createdAt: '2026-01-01T00:00:00.000Z', userAgent: 'ua', matchedRoute: '/users/:userId', params: { userId: 'u1' }, data: fullUser(), hookId: 'h' };
    const cases: Record<string, unknown>[] = [base, { event: 'PostSignIn' }];
    for (const field of ['event', 'createdAt', 'userAgent', 'matchedRoute', 'params']) {
      for (const value of [undefined, null, '', 'text', 0, true, {}, [], { k: 1 }]) {
        const payload: Record<string, unknown> = { ...base };
        if (value === undefined) delete payload[field];
        else payload[field] = value;
        cases.push(payload);
      }
    }
    cases.push(JSON.parse(`{"__proto__":{"x":1},${JSON.stringify(base).slice(1)}`));
    cases.push({ ...base, params: JSON.parse('{"__proto__":{"x":1},"userId":"u1"}') });
    let unchanged = 0;
    for (const payload of cases) {
      const delivery = { id: 1, event: String(payload.event), payload };
      const zod = envelopeSchema.safeParse(payload);
      if (zod.success) {
        const parsed = parseEnvelope(delivery);
        expect(parsed).toStrictEqual(zod.data);
        if (parsed === payload) unchanged += 1;
      } else expect(() => parseEnvelope(delivery)).toThrow(PermanentDeliveryError);
    }
    expect(unchanged).toBeGreaterThan(10);
  });
});
