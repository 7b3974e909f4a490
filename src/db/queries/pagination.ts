/**
 * Keyset pagination. A page asks for the rows after a sort key (never an offset, so inserts and
 * deletes between pages neither repeat nor skip rows) and answers with the key of its last row
 * when more rows follow. The API turns keys into opaque cursors; queries only see typed keys.
 */
export type Page<K> = { limit: number; after?: K | undefined };
export type Paged<T, K> = { rows: T[]; next: K | null };

/** Queries fetch `limit + 1` rows: the extra row only says whether another page exists. */
export const fetchSize = (page: Page<unknown>): number => page.limit + 1;

export const toPaged = <T, K>(rows: T[], page: Page<K>, keyOf: (row: T) => K): Paged<T, K> => {
  if (rows.length <= page.limit) return { rows, next: null };
  const kept = rows.slice(0, page.limit);
  const last = kept[kept.length - 1];
  return { rows: kept, next: last === undefined ? null : keyOf(last) };
};

/** A cursor is the base64url JSON of a sort key. */
export const encodeCursor = (key: readonly unknown[]): string => Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');

/** The parsed JSON of a cursor, or `undefined` when it is not one (the caller checks its shape). */
export const decodeCursor = (cursor: string): unknown => {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined;
  try {
    return JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
};
