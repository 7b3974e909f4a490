import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { isLogtoOrganizationMember, isLogtoUser, logtoOrganizationMemberSchema, logtoUserSchema } from '../../src/logto/index.js';
import { recorded } from '../helpers/recordings.js';

/** A body recorded from a real Logto 1.42 (test/fixtures/logto/management-api). */
const body = (name: string): unknown => recorded(`${name}.json`);
const copy = <T>(value: T): T => structuredClone(value);

const [user] = z.array(z.unknown()).parse(body('api-users-list')) as Record<string, unknown>[];
const [member] = z.array(z.unknown()).parse(body('api-organization-users-list')) as Record<string, unknown>[];

/** Variants of a recorded item: fields absent, null, of the wrong type, and keys the schema does not model. */
const variants = (base: Record<string, unknown>): Record<string, unknown>[] => {
  const out: Record<string, unknown>[] = [copy(base)];
  for (const key of Object.keys(base)) {
    const { [key]: _dropped, ...without } = copy(base);
    out.push(without);
    for (const value of [null, 7, 'text', '', true, [], {}, { nested: 1 }, [{ id: 'r', name: 'n' }], [{ id: '', name: 'n' }], [{ id: 'r' }]]) {
      out.push({ ...copy(base), [key]: value });
    }
  }
  out.push({ ...copy(base), unmodelled: { kept: true } }, [] as unknown as Record<string, unknown>, null as unknown as Record<string, unknown>);
  return out;
};

describe('the crawl checks of page items decide as the schemas do', () => {
  it.each([
    ['user', user!, isLogtoUser, logtoUserSchema],
    ['member', member!, isLogtoOrganizationMember, logtoOrganizationMemberSchema],
  ] as const)('%s: every item the check accepts, the schema accepts with the same data (defaults filled in place)', (_name, base, check, schema) => {
    let accepted = 0;
    for (const variant of variants(base)) {
      const parsed = (schema as z.ZodType).safeParse(copy(variant));
      const checked = copy(variant);
      if (check(checked)) {
        accepted += 1;
        expect(parsed.success).toBe(true);
        expect(checked).toEqual(parsed.data);
      }
    }
    // Absent optional fields and unmodelled keys pass the check itself, not only the schema.
    expect(accepted).toBeGreaterThan(10);
  });

  it('accepts the recorded items as they are, filling absent defaults', () => {
    const items = copy(body('api-organization-users-list')) as unknown[];
    expect(items.every((item) => isLogtoOrganizationMember(item))).toBe(true);
    const bare = { id: 'u1', createdAt: 1, updatedAt: 2, isSuspended: false };
    expect(isLogtoUser(bare)).toBe(true);
    expect(bare).toEqual(logtoUserSchema.parse({ id: 'u1', createdAt: 1, updatedAt: 2, isSuspended: false }));
  });
});
