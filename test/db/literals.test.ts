import { sql } from 'drizzle-orm';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { arrayLiteral, quotedLiteral, textArray } from '../../src/db/prepared.js';
import { rows } from '../../src/db/client.js';
import { createTestDatabase } from '../helpers/database.js';

/** The literals written into statements sent as text: the driver's own quoting, and PostgreSQL reads them back exactly. */
describe('quotedLiteral', () => {
  const samples = [
    '',
    'plain',
    "it's",
    'back\\slash',
    "\\'",
    "''\\\\''",
    'Zoë 山田 🚀 "quoted"',
    arrayLiteral(['sub_a', null, 'a"b', 'c\\d', "e'f", 7, true]),
  ];

  it('returns what pg.escapeLiteral returns', () => {
    const random = Array.from({ length: 200 }, (_, i) =>
      Array.from({ length: i % 40 }, () => "ab'\\\"{},é"[Math.floor(Math.random() * 10)]).join(''),
    );
    for (const value of [...samples, ...random]) expect(quotedLiteral(value)).toBe(pg.escapeLiteral(value));
  });

  it('is read back by PostgreSQL as the same text', async () => {
    const database = await createTestDatabase();
    try {
      for (const value of samples) {
        const [row] = await rows<{ value: string }>(database.db, sql.raw(`select ${quotedLiteral(value)}::text as value`));
        expect(row!.value).toBe(value);
      }
    } finally {
      await database.drop();
    }
  });
});

/** Text arrays bound as one literal: what node-postgres would have sent for the array, read back exactly. */
describe('textArray', () => {
  const samples: string[][] = [
    [],
    [''],
    ['sub_a', 'sub_b'],
    ['NULL', 'null', ' spaced ', 'a,b', '{braced}', "it's"],
    ['a"b', 'plain'],
    ['c\\d', 'plain'],
    ['Zoë 山田 🚀'],
  ];

  it('is the literal node-postgres builds for the same array', () => {
    const { prepareValue } = (pg as unknown as { utils: { prepareValue(value: unknown): unknown } }).utils;
    for (const values of samples) expect(textArray(values)).toBe(prepareValue(values));
  });

  it('is read back by PostgreSQL as the same array', async () => {
    const database = await createTestDatabase();
    try {
      for (const values of samples) {
        const [row] = await rows<{ value: string[] }>(database.db, sql`select ${textArray(values)}::text[] as value`);
        expect(row!.value).toEqual(values);
      }
    } finally {
      await database.drop();
    }
  });
});
