/**
 * Deepest nesting a delivery may have. Logto's payloads nest four or five levels (customData adds
 * what an admin put there); PostgreSQL's jsonb parser and JSON.stringify both run out of stack long
 * before a 1 MiB body runs out of brackets, so without a bound a signed `[[[[…` would fail at the
 * insert, be answered 503 and be sent again forever.
 */
export const maxPayloadDepth = 64;

/** `\u0000` and unpaired surrogates: valid JSON, but jsonb refuses to store them. */
const unstorable = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const everyUnstorable = new RegExp(unstorable.source, 'g');

const storableText = (text: string): string => (unstorable.test(text) ? text.replace(everyUnstorable, '\uFFFD') : text);

type Checked = { ok: true; value: unknown } | { ok: false };

const check = (value: unknown, depth: number): Checked => {
  if (typeof value === 'string') return { ok: true, value: storableText(value) };
  if (value === null || typeof value !== 'object') return { ok: true, value };
  if (depth >= maxPayloadDepth) return { ok: false };
  if (Array.isArray(value)) {
    let changed = false;
    const items: unknown[] = [];
    for (const item of value) {
      const inner = check(item, depth + 1);
      if (!inner.ok) return inner;
      changed ||= inner.value !== item;
      items.push(inner.value);
    }
    return { ok: true, value: changed ? items : value };
  }
  let changed = false;
  const entries: [string, unknown][] = [];
  for (const [key, item] of Object.entries(value)) {
    const storableKey = storableText(key);
    const inner = check(item, depth + 1);
    if (!inner.ok) return inner;
    changed ||= inner.value !== item || storableKey !== key;
    entries.push([storableKey, inner.value]);
  }
  // fromEntries defines own properties, so a "__proto__" key stays a key and never becomes a prototype.
  return { ok: true, value: changed ? Object.fromEntries(entries) : value };
};

/** What only a payload needing `toStorableJson`'s repair or refusal can contain: a NUL or surrogate escape. */
const escapeNeedingCheck = /\\u(?:0000|[dD][89a-fA-F])/;

/**
 * False when the JSON text of a delivery is certainly storable as it is, so the walk of
 * `toStorableJson` can be skipped: it nests no deeper than `maxPayloadDepth` (it has fewer opening
 * brackets than that, counting those inside strings) and escapes no NUL or surrogate (raw ones cannot
 * occur: JSON forbids raw control characters, and decoded UTF-8 never yields a lone surrogate).
 */
export const mayNeedStorableCheck = (text: string): boolean => {
  if (escapeNeedingCheck.test(text)) return true;
  let brackets = 0;
  for (let index = text.indexOf('{'); index !== -1; index = text.indexOf('{', index + 1)) brackets += 1;
  for (let index = text.indexOf('['); index !== -1; index = text.indexOf('[', index + 1)) brackets += 1;
  return brackets >= maxPayloadDepth;
};

/**
 * A parsed delivery in the form the inbox can store: null when it nests deeper than `maxPayloadDepth`,
 * otherwise the same value with NUL and unpaired surrogates replaced by U+FFFD (as invalid UTF-8 bytes
 * already are when the body is decoded). Logto keeps its data in PostgreSQL, so a genuine delivery never
 * holds either; replacing them keeps a delivery that somehow does instead of refusing it for good.
 */
export const toStorableJson = <T>(value: T): T | null => {
  const checked = check(value, 0);
  return checked.ok ? (checked.value as T) : null;
};
