/**
 * The JSON of a parsed JSON value with every object's keys sorted (by UTF-16 code units), written in
 * one pass. It is byte for byte what `JSON.stringify` writes for the value rebuilt with sorted keys
 * (`Object.fromEntries` of the sorted entries), which the stored content hashes were computed from;
 * building those intermediate objects cost the webhook receiver more than the hash itself. That
 * includes a quirk of JavaScript objects: keys that are array indices ("0", "17") come first, in
 * numeric order, whatever order they were defined in.
 *
 * The pieces go into one reused list joined once: appending them to a string left a cons string per
 * piece (6.4 KB of garbage for a 0.7 KB user delivery, against 2.8 KB this way), and every delivery the
 * receiver takes is hashed through here.
 */
export const canonicalJson = (value: unknown): string => {
  // A getter calling back in here (no parsed JSON has one) gets a list of its own.
  const pieces = writing ? { list: [] as string[], count: 0 } : shared;
  writing = true;
  try {
    pieces.count = 0;
    write(value, pieces);
    pieces.list.length = pieces.count;
    return pieces.list.join('');
  } finally {
    if (pieces === shared) {
      writing = false;
      // Kept for the next delivery (its shape needs the same length), unless one huge payload grew it.
      if (shared.count > maxKeptPieces) shared.list = [];
    }
  }
};

type Pieces = { list: string[]; count: number };
const shared: Pieces = { list: [], count: 0 };
let writing = false;
const maxKeptPieces = 4096;

/** What `JSON.stringify` escapes in a string (lone surrogates among them), or a paired surrogate: written by it. */
const needsEscape = /["\\\u0000-\u001f\ud800-\udfff]/;

const write = (value: unknown, pieces: Pieces): void => {
  const list = pieces.list;
  if (typeof value === 'string' && !needsEscape.test(value)) {
    list[pieces.count++] = '"';
    list[pieces.count++] = value;
    list[pieces.count++] = '"';
    return;
  }
  if (value === null || typeof value !== 'object') {
    list[pieces.count++] = JSON.stringify(value) ?? 'null';
    return;
  }
  if (Array.isArray(value)) {
    list[pieces.count++] = '[';
    for (let index = 0; index < value.length; index += 1) {
      if (index > 0) list[pieces.count++] = ',';
      const item: unknown = value[index];
      if (item === undefined || typeof item === 'function' || typeof item === 'symbol') list[pieces.count++] = 'null';
      else write(item, pieces);
    }
    list[pieces.count++] = ']';
    return;
  }
  const record = value as Record<string, unknown>;
  const ordered = canonicalOrder(Object.keys(record));
  list[pieces.count++] = '{';
  let first = true;
  for (const key of ordered) {
    const item = record[key];
    if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue;
    const quoted = quotedKey(key);
    list[pieces.count++] = first ? quoted.key : quoted.afterComma;
    first = false;
    write(item, pieces);
  }
  list[pieces.count++] = '}';
};

/** The canonical order of an object's keys (see above), computed from `Object.keys`. */
const sortedKeys = (keys: string[]): string[] => {
  const sorted = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const indices = sorted.filter(isArrayIndex);
  return indices.length === 0 ? sorted : [...indices.sort((a, b) => Number(a) - Number(b)), ...sorted.filter((key) => !isArrayIndex(key))];
};

/**
 * The canonical order of key lists seen before, by their first key: objects of one shape (each
 * delivery's envelope, its user, the user's profile) list the same keys in the same order, and the
 * webhook receiver hashes every delivery, so their sort (a copy, the comparisons and the index tests)
 * is done once per shape. Bounded (shapes, and shapes per first key): a shape not kept is sorted each time.
 */
const orderCache = new Map<string, { keys: string[]; ordered: string[] }[]>();
let orderCacheSize = 0;
const maxOrderCacheSize = 512;

const sameKeys = (a: string[], b: string[]): boolean => {
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index += 1) if (a[index] !== b[index]) return false;
  return true;
};

const canonicalOrder = (keys: string[]): string[] => {
  if (keys.length < 2) return keys;
  const bucket = orderCache.get(keys[0]!);
  if (bucket) for (const entry of bucket) if (sameKeys(entry.keys, keys)) return entry.ordered;
  const ordered = sortedKeys(keys);
  if (orderCacheSize < maxOrderCacheSize && keys.length <= 64 && (bucket?.length ?? 0) < 8) {
    orderCacheSize += 1;
    if (bucket) bucket.push({ keys, ordered });
    else orderCache.set(keys[0]!, [{ keys, ordered }]);
  }
  return ordered;
};

/** `JSON.stringify(key)` and a colon, alone and after a comma, kept for keys seen before (a payload's keys repeat in every delivery); bounded. */
type QuotedKey = { key: string; afterComma: string };
const quotedKeys = new Map<string, QuotedKey>();
const maxQuotedKeys = 4096;
const quotedKey = (key: string): QuotedKey => {
  let quoted = quotedKeys.get(key);
  if (quoted === undefined) {
    const text = `${JSON.stringify(key)}:`;
    quoted = { key: text, afterComma: `,${text}` };
    if (quotedKeys.size < maxQuotedKeys && key.length <= 64) quotedKeys.set(key, quoted);
  }
  return quoted;
};

const maxArrayIndex = 2 ** 32 - 2;

/** A canonical decimal array index (0 … 2³²−2): such keys lead an object's own keys, in numeric order. */
const isArrayIndex = (key: string): boolean =>
  (key === '0' || (key.length > 0 && key.length <= 10 && key[0] !== '0' && /^\d+$/.test(key))) && Number(key) <= maxArrayIndex;
