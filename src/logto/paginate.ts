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
  /**
   * True only for a value `item` would return unchanged (every field present with its type, no default
   * to fill in): such an item is taken as it is, without zod's copy of it. Anything else goes through `item`.
   */
  parsed?: (value: unknown) => value is T;
  /** Keeps only matching items in the yielded pages (deduplication and stopping still see every item). */
  filter?: (item: T) => boolean;
  pageSize?: number;
};

/** How a crawl fetches ahead: pages are requested before the caller asks for them, in page order. */
export type AheadOptions = {
  /** Pages requested or held but not yet handed to the caller, at most; 1 fetches one page at a time. */
  ahead?: number;
  /** Where to start (a resumed crawl); default 1. */
  startPage?: number;
  /** The list's size if known beforehand (`usersCount`): every page can then be requested at once. */
  expectedTotal?: number | null;
};

type Fetched = { raw: unknown[]; total: number | null; requestedAt: Date; path: string };

/**
 * Crawls a paginated collection with `?page=N&page_size=100` built here. `Link` is never followed:
 * Logto builds it without the `/api` prefix.
 *
 * The first page's `Total-Number` says how many pages there are, so the following ones are requested
 * ahead (up to `ahead` at a time, each through the shared budget) while the caller handles earlier ones;
 * pages are still yielded in order. Without the header it fetches one page at a time and stops at a
 * short page.
 *
 * Offset pages over a changing collection repeat or skip items (`/users` is newest-first and
 * `/organizations` has no ORDER BY), so items are deduplicated by id within the crawl. It stops at an
 * empty page or once it has yielded every page the largest `Total-Number` seen asks for. Each page's
 * total is yielded so callers can tell the collection moved during the crawl, and `requestedAt` says
 * when its request was made: the page is at least that fresh.
 */
export async function* paginate<T extends { id: string }>(
  context: HttpContext,
  options: CrawlOptions<T>,
  aheadOptions: AheadOptions = {},
): AsyncGenerator<Page<T>, void, undefined> {
  const pageSize = options.pageSize ?? maxPageSize;
  const ahead = Math.max(1, aheadOptions.ahead ?? 1);
  const startPage = Math.max(1, aheadOptions.startPage ?? 1);
  const seen = new Set<string>();
  const pagesFor = (total: number) => Math.max(1, Math.ceil(total / pageSize));

  const fetchPage = async (page: number): Promise<Fetched> => {
    const requestedAt = new Date();
    const path = apiPath(options.segments, [...(options.query ?? []), ['page', page], ['page_size', pageSize]]);
    const response = await apiRequest(context, { method: 'GET', path });
    if (response === null) return { raw: [], total: null, requestedAt, path };
    if (!Array.isArray(response.data)) {
      throw new LogtoError('invalid_response', `Logto answered GET /api${path} with something other than a JSON array`, {
        status: response.status,
        path,
      });
    }
    return { raw: response.data, total: parseTotalNumber(header(response.headers, 'total-number')), requestedAt, path };
  };

  const inFlight = new Map<number, Promise<Fetched>>();
  const request = (page: number) => {
    const pending = fetchPage(page);
    // A page fetched ahead that is never awaited (the crawl stopped first) must not surface as unhandled.
    pending.catch(() => {});
    inFlight.set(page, pending);
  };
  // The last page to request, once a total is known.
  let last: number | null =
    aheadOptions.expectedTotal === undefined || aheadOptions.expectedTotal === null ? null : Math.max(startPage, pagesFor(aheadOptions.expectedTotal));
  let next = startPage;
  const fill = () => {
    while (last !== null && next <= last && inFlight.size < ahead) request(next++);
  };
  fill();

  for (let page = startPage; ; page += 1) {
    if (!inFlight.has(page)) {
      if (last !== null && page > last) return;
      request(page);
      next = Math.max(next, page + 1);
    }
    const fetched = await inFlight.get(page)!;
    inFlight.delete(page);
    const { raw, total } = fetched;
    if (total !== null) last = Math.max(last ?? 0, pagesFor(total));
    if (raw.length === 0) return;
    fill();

    const fresh: T[] = [];
    let added = 0;
    for (const [index, value] of raw.entries()) {
      const item = options.parsed?.(value) ? value : validateItem(options.item, value, { method: 'GET', path: fetched.path }, index);
      if (seen.has(item.id)) continue;
      seen.add(item.id);
      added += 1;
      if (!options.filter || options.filter(item)) fresh.push(item);
    }
    yield { items: fresh, page, total, requestedAt: fetched.requestedAt };

    if (total === null) {
      if (raw.length < pageSize) return;
      // Without a total, a full page that brought nothing new means the server ignores `page`.
      if (added === 0) return;
    } else if (last !== null && page >= last) return;
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
