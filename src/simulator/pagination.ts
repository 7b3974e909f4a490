import type { Request, Response } from 'express';
import { invalidPagination } from './errors.js';

/** `koaPagination` defaults; no route of Logto overrides them. */
export const defaultPageSize = 20;
export const maxPageSize = 100;

export type Pagination = { disabled: false; page: number; pageSize: number; offset: number } | { disabled: true };

const parsePositive = (raw: string, max = Number.POSITIVE_INFINITY): number => {
  const value = Number(raw);
  // Logto parses with `number().positive()`; fractional values would only fail later in SQL, so we
  // refuse them up front with the same 400.
  if (!Number.isInteger(value) || value <= 0 || value > max) throw invalidPagination();
  return value;
};

/**
 * `page` (1-based) and `page_size` as Logto's `koaPagination`. Mandatory pagination falls back to
 * page 1 of 20; optional pagination is disabled when both are absent (or empty).
 */
export const parsePagination = (query: URLSearchParams, options: { optional?: boolean } = {}): Pagination => {
  const rawPage = query.get('page') ?? '';
  const rawPageSize = query.get('page_size') ?? '';
  if (options.optional && !rawPage && !rawPageSize) return { disabled: true };
  const page = rawPage ? parsePositive(rawPage) : 1;
  const pageSize = rawPageSize ? parsePositive(rawPageSize, maxPageSize) : defaultPageSize;
  return { disabled: false, page, pageSize, offset: (page - 1) * pageSize };
};

/** The request's query string as ordered pairs (repeated keys kept). */
export const queryOf = (request: Request): URLSearchParams => {
  const index = request.originalUrl.indexOf('?');
  return new URLSearchParams(index === -1 ? '' : request.originalUrl.slice(index + 1));
};

/** The request path as Logto's API sees it: inside the app mounted at `/api`, so without that prefix. */
export const apiPathOf = (request: Request): string => {
  const path = request.originalUrl.split('?')[0] ?? '/';
  return path.startsWith('/api/') ? path.slice('/api'.length) : path;
};

const buildLink = (request: Request, page: number, relation: 'first' | 'prev' | 'next' | 'last') => {
  // Like `new URLSearchParams({...query, page})`: an existing `page` keeps its place, else it goes last.
  const entries: Array<[string, string]> = [];
  let replaced = false;
  for (const [key, value] of queryOf(request).entries()) {
    if (key !== 'page') entries.push([key, value]);
    else if (!replaced) {
      entries.push([key, String(page)]);
      replaced = true;
    }
  }
  if (!replaced) entries.push(['page', String(page)]);
  // The missing `/api` prefix is Logto's bug (`request.path` inside the mounted app); we copy it.
  const base = `${request.protocol}://${request.get('host') ?? 'localhost'}${apiPathOf(request)}`;
  return `<${base}?${new URLSearchParams(entries).toString()}>; rel="${relation}"`;
};

/**
 * What a page is cut from: a list, or a view of one that builds only the items a page slices (an
 * array is one), so that a page costs its own items like Logto's `LIMIT`/`OFFSET`, not the whole list's.
 */
export type PageSource<T> = { readonly length: number; slice(start: number, end: number): readonly T[] };

/**
 * Sends one page of `items` with `Total-Number` and the `Link` headers. The header order is the one
 * in the captures: first, prev, last, next.
 */
export const sendPage = <T>(
  request: Request,
  response: Response,
  pagination: Pagination,
  items: PageSource<T>,
  serialize: (item: T) => unknown,
): void => {
  if (pagination.disabled) {
    response.json(items.slice(0, items.length).map(serialize));
    return;
  }
  const { page, pageSize, offset } = pagination;
  const total = items.length;
  const lastPage = Math.ceil(total / pageSize) || 1;
  response.set('Total-Number', String(total));
  response.append('Link', buildLink(request, 1, 'first'));
  if (page > 1) response.append('Link', buildLink(request, page - 1, 'prev'));
  response.append('Link', buildLink(request, lastPage, 'last'));
  if (page < lastPage) response.append('Link', buildLink(request, page + 1, 'next'));
  response.json(items.slice(offset, offset + pageSize).map(serialize));
};
