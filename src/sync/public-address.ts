import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

/**
 * The guard against server-side request forgery for subscriber URLs: only http(s), and only public
 * addresses. A URL is checked when it is stored and again at every connection (through the agent's
 * `lookup`), because a name can resolve elsewhere later.
 */

const blocked = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], // "this" network
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  blocked.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated, still routable inside networks)
  ['ff00::', 8], // multicast
  ['100::', 64], // discard
] as const) {
  blocked.addSubnet(network, prefix, 'ipv6');
}

/** The IPv4 address carried inside an IPv6 one (mapped, compatible, NAT64, 6to4), if any. */
const embeddedIpv4 = (address: string): string | null => {
  const lower = address.toLowerCase();
  const dotted = /^(?:::ffff:|::|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return dotted[1]!;
  const groups = expandIpv6(lower);
  if (!groups) return null;
  const fromGroups = (high: number, low: number) => `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
  const zeros = (count: number) => groups.slice(0, count).every((group) => group === 0);
  if (zeros(5) && groups[5] === 0xffff) return fromGroups(groups[6]!, groups[7]!); // ::ffff:a.b.c.d
  if (zeros(6) && (groups[6] !== 0 || groups[7]! > 1)) return fromGroups(groups[6]!, groups[7]!); // ::a.b.c.d
  if (groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((group) => group === 0)) {
    return fromGroups(groups[6]!, groups[7]!); // NAT64
  }
  if (groups[0] === 0x2002) return fromGroups(groups[1]!, groups[2]!); // 6to4
  return null;
};

const expandIpv6 = (address: string): number[] | null => {
  const withoutZone = address.split('%')[0]!;
  let text = withoutZone;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const parts = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((parts[0]! << 8) | parts[1]!).toString(16)}:${((parts[2]! << 8) | parts[3]!).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((group) => parseInt(group, 16)));
  const first = parse(head);
  const last = tail === undefined ? [] : parse(tail);
  const fill = tail === undefined ? 0 : 8 - first.length - last.length;
  const groups = [...first, ...Array<number>(Math.max(0, fill)).fill(0), ...last];
  return groups.length === 8 && groups.every((group) => Number.isInteger(group) && group >= 0 && group <= 0xffff) ? groups : null;
};

/** True for loopback, private, link-local and other non-public addresses, IPv4 or IPv6 (mapped ones included). */
export const isPrivateAddress = (address: string): boolean => {
  const family = isIP(address.split('%')[0]!);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return true;
  const inner = embeddedIpv4(address);
  if (inner !== null) return blocked.check(inner, 'ipv4');
  return blocked.check(address.split('%')[0]!, 'ipv6');
};

export class BlockedAddressError extends Error {
  readonly code = 'EBLOCKEDADDRESS';
  /** `literal`: the host is an address written in the URL, not a name that resolved to one. */
  constructor(readonly host: string, literal = false) {
    super(`${host} ${literal ? 'is' : 'resolves to'} a private, loopback or link-local address`);
    this.name = 'BlockedAddressError';
  }
}

/** A DNS lookup for sockets that refuses to connect to a non-public address. */
export const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
    if (error) {
      (callback as (error: Error) => void)(error);
      return;
    }
    const list = addresses;
    if (list.length === 0 || list.some((entry) => isPrivateAddress(entry.address))) {
      (callback as (error: Error) => void)(new BlockedAddressError(hostname));
      return;
    }
    if ((options as { all?: boolean }).all) (callback as (error: null, addresses: LookupAddress[]) => void)(null, list);
    else callback(null, list[0]!.address, list[0]!.family);
  });
};

export type UrlCheck = { ok: true } | { ok: false; reason: string };

/** Whether a subscriber URL may be used: http(s), and (unless `allowPrivate`) every address it resolves to is public. */
export const checkSubscriberUrl = async (value: string, allowPrivate: boolean): Promise<UrlCheck> => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { ok: false, reason: 'must be an absolute URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, reason: 'must be an http(s) URL' };
  if (url.username || url.password) return { ok: false, reason: 'must not carry credentials' };
  if (allowPrivate) return { ok: true };
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return isPrivateAddress(host) ? { ok: false, reason: 'must not point to a private, loopback or link-local address' } : { ok: true };
  const addresses = await new Promise<LookupAddress[] | null>((resolve) =>
    dnsLookup(host, { all: true }, (error, found) => resolve(error ? null : found)),
  );
  if (!addresses || addresses.length === 0) return { ok: false, reason: 'does not resolve' };
  if (addresses.some((entry) => isPrivateAddress(entry.address))) {
    return { ok: false, reason: 'must not point to a private, loopback or link-local address' };
  }
  return { ok: true };
};
