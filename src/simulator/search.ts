import type { UserRecord } from './entities.js';
import { LogtoApiError } from './errors.js';

/**
 * Logto's search for `GET /users` (`packages/core/src/utils/search.ts`) and the plain `q`
 * substring search of the other list routes (`buildSearchSql`).
 */

export const userSearchFields = ['id', 'primaryEmail', 'primaryPhone', 'username', 'name'] as const;
type UserSearchField = (typeof userSearchFields)[number];

type MatchMode = 'exact' | 'like' | 'similar_to' | 'posix';
const matchModes: readonly MatchMode[] = ['exact', 'like', 'similar_to', 'posix'];

interface SearchItem {
  mode: MatchMode;
  field: UserSearchField | undefined;
  values: string[];
}

export interface UserSearch {
  matches: SearchItem[];
  joint: 'or' | 'and';
  isCaseSensitive: boolean;
}

const invalid = (details: string) => new LogtoApiError(400, 'request.invalid_input', { interpolation: { details } });

const parseField = (key: string): UserSearchField | undefined => {
  const path = key.split('.');
  if (path.length > 2) {
    throw invalid(`Unsupported nested search field path \`${path.slice(1).join('.')}\` detected. Only the first level field is supported.`);
  }
  const field = path[1];
  if (field === undefined) return undefined;
  if (!(userSearchFields as readonly string[]).includes(field)) {
    throw invalid(`Search field \`${field}\` is not allowed. Expect one of ${userSearchFields.join(', ')}.`);
  }
  return field as UserSearchField;
};

/** Parses `search`, `search.<field>`, `mode`, `mode.<field>`, `joint`/`jointMode` and `isCaseSensitive`. */
export const parseUserSearch = (params: URLSearchParams): UserSearch => {
  const jointValue = params.get('joint') ?? params.get('jointMode') ?? 'or';
  if (jointValue !== 'or' && jointValue !== 'and') {
    throw invalid(`Search joint mode \`${jointValue}\` is not valid, expect one of or, and.`);
  }
  const isCaseSensitive = ['true', '1', 'yes', 'y'].includes((params.get('isCaseSensitive') ?? 'false').toLowerCase());
  const modes = new Map<UserSearchField | undefined, MatchMode>();
  const values = new Map<UserSearchField | undefined, string[]>();
  for (const [key, value] of params.entries()) {
    if (key.startsWith('mode')) {
      const field = parseField(key);
      if (!(matchModes as readonly string[]).includes(value)) {
        throw invalid(`Search match mode \`${value}\` is not valid, expect one of ${matchModes.join(', ')}.`);
      }
      modes.set(field, value as MatchMode);
    } else if (key.startsWith('search')) {
      const field = parseField(key);
      values.set(field, [...(values.get(field) ?? []), value]);
    }
  }
  const matches: SearchItem[] = [];
  for (const [field, fieldValues] of values) {
    const mode = modes.get(field) ?? modes.get(undefined) ?? 'like';
    if (mode !== 'exact' && fieldValues.length !== 1) {
      throw invalid('Only one search value is allowed when search mode is not `exact`.');
    }
    if (!fieldValues.every(Boolean)) throw invalid('Search value cannot be empty.');
    if (mode === 'similar_to' && !isCaseSensitive) throw invalid('Cannot use case-insensitive match for `similar to`.');
    matches.push({ mode, field, values: fieldValues });
  }
  return { matches, joint: jointValue, isCaseSensitive };
};

const escapeRegExp = (value: string) => value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** SQL LIKE (`%`, `_`, backslash escapes) as an anchored regular expression. */
const likeToRegExp = (pattern: string, flags: string): RegExp => {
  let source = '';
  for (let index = 0; index < pattern.length; index += 1) {
    const char = pattern[index] as string;
    if (char === '\\' && index + 1 < pattern.length) {
      index += 1;
      source += escapeRegExp(pattern[index] as string);
    } else if (char === '%') source += '[\\s\\S]*';
    else if (char === '_') source += '[\\s\\S]';
    else source += escapeRegExp(char);
  }
  return new RegExp(`^${source}$`, flags);
};

/** SQL `SIMILAR TO`: LIKE wildcards plus regular-expression operators, anchored. */
const similarToRegExp = (pattern: string): RegExp =>
  new RegExp(`^(?:${pattern.replace(/%/g, '[\\s\\S]*').replace(/_/g, '[\\s\\S]')})$`, 'u');

type Matcher = (value: string) => boolean;

const buildMatcher = (item: SearchItem, isCaseSensitive: boolean): Matcher => {
  try {
    switch (item.mode) {
      case 'exact': {
        // Logto lowercases both sides unless the search is case sensitive.
        const wanted = new Set(isCaseSensitive ? item.values : item.values.map((value) => value.toLowerCase()));
        return isCaseSensitive ? (value) => wanted.has(value) : (value) => wanted.has(value.toLowerCase());
      }
      case 'like': {
        const expression = likeToRegExp(item.values[0] as string, isCaseSensitive ? 'u' : 'iu');
        return (value) => expression.test(value);
      }
      case 'similar_to': {
        const expression = similarToRegExp(item.values[0] as string);
        return (value) => expression.test(value);
      }
      case 'posix': {
        const expression = new RegExp(item.values[0] as string, isCaseSensitive ? 'u' : 'iu');
        return (value) => expression.test(value);
      }
    }
  } catch (error) {
    throw invalid(error instanceof Error ? error.message : 'Invalid search pattern.');
  }
};

/** A predicate over users for a parsed search; `undefined` when the query has no search terms. */
export const buildUserFilter = (search: UserSearch): ((user: Readonly<UserRecord>) => boolean) | undefined => {
  if (search.matches.length === 0) return undefined;
  const conditions = search.matches.map((item) => {
    const matcher = buildMatcher(item, search.isCaseSensitive);
    const fields = item.field ? [item.field] : userSearchFields;
    return (user: Readonly<UserRecord>) =>
      fields.some((field) => {
        const value = user[field];
        return value !== null && matcher(value);
      });
  });
  return search.joint === 'and'
    ? (user) => conditions.every((condition) => condition(user))
    : (user) => conditions.some((condition) => condition(user));
};

/**
 * The fast path for the documented batch fetch `search.id=a&search.id=b&mode.id=exact&isCaseSensitive=true`:
 * the exact ids, or `undefined` when the search is anything else.
 */
export const exactIdLookup = (search: UserSearch): string[] | undefined => {
  const [item, ...rest] = search.matches;
  if (!item || rest.length > 0 || !search.isCaseSensitive) return undefined;
  return item.mode === 'exact' && item.field === 'id' ? item.values : undefined;
};

/** `ILIKE '%q%'` over the given fields; no `q` matches everything. */
export const substringFilter = <T>(q: string | undefined, fields: ReadonlyArray<(item: T) => string | null>) => {
  if (!q) return undefined;
  const needle = q.toLowerCase();
  return (item: T) =>
    fields.some((field) => {
      const value = field(item);
      return value !== null && value.toLowerCase().includes(needle);
    });
};
