import type { z } from 'zod';
import { parseTotalNumber } from './backoff.js';
import { LogtoError } from './errors.js';
import { apiPath, apiRequest, type HttpContext } from './http.js';
import { header } from './transport.js';
import type { Page } from './types.js';

/** Logto's maximum `page_size`; 101 gives 400 `guard.invalid_pagination`. */
export const maxPageSize = 100;

export type CrawlOptions<T> = {
  /** Path segments below `/api`, e.g. `['organizations', id, 'users']`. */
  segments: readonly string[];
  /** Extra query parameters (page and page_size are added here). */
  query?: ReadonlyArray<readonly [string, string | number | boolean]>;
  item: z.ZodType<T>;
  /** Keeps only matching items in the yielded pages (deduplication and stopping still see every item). */
  filter?: (item: T) => boolean;
  pageSize?: number;
};

/**
 * Crawls a paginated collection with `?page=N&page_size=100` built here. `Link` is never followed:
 * Logto builds it without the `/api` prefix.
 *
 * Offset pages over a changing collection repeat or skip items (`/users` is newest-first and
 * `/organizations` has no ORDER BY), so items are deduplicated by id within the crawl. It stops at an
 * empty page or once the offset reaches that page's `Total-Number`; without the header, at a short
 * page. Each page's total is yielded so callers can tell the collection moved during the crawl.
 */
export async function* paginate<T extends { id: string }>(
  context: HttpContext,
  options: CrawlOptions<T>,
): AsyncGenerator<Page<T>, void, undefined> {
  const pageSize = options.pageSize ?? maxPageSize;
  const seen = new Set<string>();
  for (let page = 1; ; page += 1) {
    const path = apiPath(options.segments, [...(options.query ?? []), ['page', page], ['page_size', pageSize]]);
    const response = await apiRequest(context, { method: 'GET', path });
    if (response === null) return;
    const raw = response.data;
    if (!Array.isArray(raw)) {
      throw new LogtoError('invalid_response', `Logto answered GET /api${path} with something other than a JSON array`, {
        status: response.status,
        path,
      });
    }
    const total = parseTotalNumber(header(response.headers, 'total-number'));
    if (raw.length === 0) return;

    const fresh: T[] = [];
    let added = 0;
    for (const [index, value] of raw.entries()) {
      const item = validateItem(options.item, value, { method: 'GET', path }, index);
      if (seen.has(item.id)) continue;
      seen.add(item.id);
      added += 1;
      if (!options.filter || options.filter(item)) fresh.push(item);
    }
    yield { items: fresh, page, total };

    const reached = (page - 1) * pageSize + raw.length;
    if (total !== null ? reached >= total : raw.length < pageSize) return;
    // Without a total, a full page that brought nothing new means the server ignores `page`.
    if (total === null && added === 0) return;
  }
}

/** Validates one item; the error names the path and the field, never the value. */
export const validateItem = <T>(
  schema: z.ZodType<T>,
  value: unknown,
  request: { method: string; path: string },
  index?: number,
): T => {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = [...(index === undefined ? [] : [index]), ...(issue?.path ?? [])].map(String).join('.');
  throw new LogtoError(
    'invalid_response',
    `Logto's answer to ${request.method} /api${request.path.split('?')[0] ?? request.path} does not have the expected shape` +
      `${field ? ` at ${field}` : ''}: ${issue?.message ?? 'invalid'}`,
    { path: request.path },
  );
};
