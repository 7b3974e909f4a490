import { randomBytes, randomInt } from 'node:crypto';

/** Logto's id alphabet (`buildIdGenerator` in `@logto/shared`): lowercase letters and digits. */
const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';

/** Users and organizations get 12 characters. */
export const userIdLength = 12;
export const organizationIdLength = 12;
/** Organization roles, hooks, logs and applications get Logto's "standard" 21 characters. */
export const standardIdLength = 21;

/** A deterministic source of numbers in [0, 1). */
export type Random = () => number;

/**
 * mulberry32: a tiny, fast 32-bit PRNG. Good enough to make a generated tenant reproducible from a
 * seed; not for anything security related.
 */
export const mulberry32 = (seed: number): Random => {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
};

/** An id drawn from `random` (seeded) or, without one, from the OS CSPRNG. */
export const generateId = (length: number, random?: Random): string => {
  let id = '';
  for (let index = 0; index < length; index += 1) {
    const position = random ? Math.floor(random() * alphabet.length) : randomInt(alphabet.length);
    id += alphabet[position];
  }
  return id;
};

/** An opaque secret (tokens, signing keys): URL-safe and unguessable. */
export const generateSecret = (bytes = 32): string => randomBytes(bytes).toString('base64url');

/** The 16-character request id Logto puts in `Logto-Core-Request-Id`. */
export const generateRequestId = (): string => randomBytes(12).toString('base64url');

/** Fisher–Yates shuffle of a copy. */
export const shuffled = <T>(items: readonly T[], random: Random): T[] => {
  const copy = [...items];
  for (let index = copy.length - 1; index > 0; index -= 1) {
    const other = Math.floor(random() * (index + 1));
    [copy[index], copy[other]] = [copy[other] as T, copy[index] as T];
  }
  return copy;
};
