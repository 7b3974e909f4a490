/**
 * The JSON of a parsed JSON value with every object's keys sorted (by UTF-16 code units), written in
 * one pass. It is byte for byte what `JSON.stringify` writes for the value rebuilt with sorted keys
 * (`Object.fromEntries` of the sorted entries), which the stored content hashes were computed from;
 * building those intermediate objects cost the webhook receiver more than the hash itself. That
 * includes a quirk of JavaScript objects: keys that are array indices ("0", "17") come first, in
 * numeric order, whatever order they were defined in.
 */
export const canonicalJson = (value: unknown): string => {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let index = 0; index < value.length; index += 1) {
      if (index > 0) out += ',';
      const item: unknown = value[index];
      out += item === undefined || typeof item === 'function' || typeof item === 'symbol' ? 'null' : canonicalJson(item);
    }
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const indices = keys.filter(isArrayIndex);
  const ordered = indices.length === 0 ? keys : [...indices.sort((a, b) => Number(a) - Number(b)), ...keys.filter((key) => !isArrayIndex(key))];
  let out = '{';
  let first = true;
  for (const key of ordered) {
    const item = record[key];
    if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue;
    if (!first) out += ',';
    first = false;
    out += `${JSON.stringify(key)}:${canonicalJson(item)}`;
  }
  return `${out}}`;
};

const maxArrayIndex = 2 ** 32 - 2;

/** A canonical decimal array index (0 … 2³²−2): such keys lead an object's own keys, in numeric order. */
const isArrayIndex = (key: string): boolean =>
  (key === '0' || (key.length > 0 && key.length <= 10 && key[0] !== '0' && /^\d+$/.test(key))) && Number(key) <= maxArrayIndex;
