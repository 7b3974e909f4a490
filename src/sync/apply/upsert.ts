import { getTableColumns, sql, type SQL } from 'drizzle-orm';
import type { PgTable } from 'drizzle-orm/pg-core';

/** The `set` of an upsert that takes every listed column from the proposed row (`excluded`). */
export const fromExcluded = <T extends PgTable>(table: T, keys: string[]): Record<string, SQL> => {
  const columns = getTableColumns(table) as Record<string, { name: string }>;
  return Object.fromEntries(
    keys.map((key) => {
      const column = columns[key];
      if (!column) throw new Error(`unknown column ${key}`);
      return [key, sql.raw(`excluded."${column.name}"`)];
    }),
  );
};
