import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/db/canonical-json.js';
import { mayNeedStorableCheck, toStorableJson } from '../../src/webhooks/storable-json.js';

/** How content hashes were computed before canonicalJson: the value rebuilt with sorted keys, then JSON.stringify. */
const rebuiltWithSortedKeys = (value: unknown): unknown =>
  Array.isArray(value)
    ? value.map(rebuiltWithSortedKeys)
    : value && typeof value === 'object'
      ? Object.fromEntries(
          Object.entries(value as Record<string, unknown>)
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([key, inner]) => [key, rebuiltWithSortedKeys(inner)]),
        )
      : value;

/** A small deterministic generator, so a failure names a case that can be rerun. */
const random = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
};

const keyLike = (next: () => number): string => {
  const kinds = [
    () => String(Math.floor(next() ** 3 * 5e9)), // array indices, and numbers just past the largest one
    () => `0${Math.floor(next() * 10)}`,
    () => `-${Math.floor(next() * 10)}`,
    () => (next() * 10).toFixed(1),
    () => ['', '__proto__', 'é', 'e', 'Z', '😀', '\uffff', 'a b', 'line\nbreak', '"'][Math.floor(next() * 10)]!,
    () => next().toString(36).slice(2, 2 + Math.floor(next() * 5)),
  ];
  return kinds[Math.floor(next() * kinds.length)]!();
};

const valueLike = (next: () => number, depth: number): unknown => {
  const pick = next();
  if (depth > 3 || pick < 0.35) {
    return [null, true, false, 0, -0.25, 1e21, 12345678901234567890, 'text', 'é\u2028"\\', ''][Math.floor(next() * 10)];
  }
  if (pick < 0.55) return Array.from({ length: Math.floor(next() * 4) }, () => valueLike(next, depth + 1));
  const object: Record<string, unknown> = {};
  for (let count = Math.floor(next() * 7); count > 0; count -= 1) object[keyLike(next)] = valueLike(next, depth + 1);
  return object;
};

describe('canonical JSON of a delivery', () => {
  it('writes what JSON.stringify writes for the value rebuilt with sorted keys (the stored content hashes)', () => {
    const next = random(2026);
    const cases: unknown[] = [
      JSON.parse(
        '{"b":1,"a":[1,{"z":null,"y":"\\u2028"}],"10":1,"9":2,"01":3,"4294967294":4,"4294967295":5,"-1":6,"1.5":7,"__proto__":{"x":1},"":0}',
      ),
      { skipped: undefined, fn: () => 1, list: [undefined, () => 1], date: new Date(0) },
      [],
      {},
      'text',
      1.5,
      true,
      null,
      [[[{}]]],
      ...Array.from({ length: 3000 }, () => JSON.parse(JSON.stringify(valueLike(next, 0))) as unknown),
    ];
    for (const value of cases) expect(canonicalJson(value)).toBe(JSON.stringify(rebuiltWithSortedKeys(value)));
  });
});

describe('canonical JSON written into a reused list', () => {
  it('quotes every kind of string as JSON.stringify does', () => {
    const strings = ['', 'plain', '"', '\\', '\u0000', '\u001f', ' ', '\u007f', '\u2028', '\ud83d', '\ude00', '😀', 'a\ud83d\ude00b', 'é', '\ufffe'];
    for (const text of strings) {
      expect(canonicalJson(text)).toBe(JSON.stringify(text));
      expect(canonicalJson({ [text]: text, list: [text] })).toBe(JSON.stringify(rebuiltWithSortedKeys({ [text]: text, list: [text] })));
    }
  });

  it('writes a payload of any size, and a small one after a huge one, whole', () => {
    const huge = Object.fromEntries(Array.from({ length: 3000 }, (_, index) => [`k${index}`, [index, `v${index}`]]));
    const small = { b: 'x', a: [1, { d: null, c: true }] };
    expect(canonicalJson(huge)).toBe(JSON.stringify(rebuiltWithSortedKeys(huge)));
    expect(canonicalJson(small)).toBe('{"a":[1,{"c":true,"d":null}],"b":"x"}');
    expect(canonicalJson(huge)).toBe(JSON.stringify(rebuiltWithSortedKeys(huge)));
  });

  it('is not confused by a value whose getter writes canonical JSON itself', () => {
    const inner = { z: 1, y: [2] };
    const value = {
      b: 'outer',
      get a() {
        return canonicalJson(inner);
      },
    };
    expect(canonicalJson(value)).toBe(JSON.stringify({ a: '{"y":[2],"z":1}', b: 'outer' }));
    expect(canonicalJson(inner)).toBe('{"y":[2],"z":1}');
  });
});

describe('the receiver skipping the storable walk', () => {
  it('skips it only for payloads the walk would leave as they are', () => {
    const texts = [
      '{"event":"User.Created","data":{"id":"u1","customData":{"a":[1,2,{"b":null}]},"name":"\\u00e9 \\u2028"}}',
      '{"a":"\\u0000"}',
      '{"a":"\\ud83d"}',
      '{"a":"\\uD83D\\uDE00"}',
      '{"a":"\\\\u0000 is only text"}',
      `{"a":${'['.repeat(62)}${']'.repeat(62)}}`,
      `{"a":${'['.repeat(63)}${']'.repeat(63)}}`,
      `{"a":${'['.repeat(70)}${']'.repeat(70)}}`,
      `{"a":"${'{'.repeat(80)}"}`,
    ];
    for (const text of texts) {
      const parsed = JSON.parse(text) as unknown;
      if (!mayNeedStorableCheck(text)) expect(toStorableJson(parsed)).toBe(parsed);
    }
    expect(mayNeedStorableCheck(texts[0]!)).toBe(false);
    expect(mayNeedStorableCheck(texts[1]!)).toBe(true);
    expect(mayNeedStorableCheck(texts[2]!)).toBe(true);
    expect(mayNeedStorableCheck(texts[7]!)).toBe(true);
  });
});

describe('canonical JSON of objects whose shapes repeat (key orders kept per shape)', () => {
  it('writes the same as for a shape seen for the first time, whichever shapes share a first key', () => {
    const next = random(27);
    const pool = ['id', 'b', 'a', '10', '2', 'name', 'é', '__proto__', 'z', 'A'];
    for (let round = 0; round < 3000; round += 1) {
      const object: Record<string, unknown> = {};
      // Mostly "id" first, as a user's or an envelope's keys are: many shapes share that first key.
      if (next() < 0.8) object.id = round;
      for (let count = Math.floor(next() * 6); count > 0; count -= 1) {
        Object.defineProperty(object, pool[Math.floor(next() * pool.length)]!, { value: valueLike(next, 2), enumerable: true, writable: true, configurable: true });
      }
      const value = next() < 0.5 ? object : { outer: object, list: [object, { ...object }] };
      expect(canonicalJson(value)).toBe(JSON.stringify(rebuiltWithSortedKeys(value)));
    }
  });
});
