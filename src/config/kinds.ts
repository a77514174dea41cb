// The kinds of value a setting holds: how its flag is parsed, what --help calls it, and how a raw value
// (from a JSON file or a flag) becomes the typed value. A reader says only what is wrong with the value;
// whoever resolves the setting adds the config key or flag it came from.

import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { parseCidr } from '../net/packet.js';
import { isDnsDomain } from '../protocol/control.js';
import { hostProblem } from '../protocol/invite.js';
import { parsePin } from '../protocol/pin.js';
import type { DialAddress, ListenAddress, NatChoice } from './schema.js';

/** What is wrong with one value, without its key: the resolver names the key. */
export class SettingProblem extends Error {}

export interface Kind<T> {
  /**
   * How the flag takes its value: a switch, one value, a switch that may take one value (`--nat` or
   * `--nat eth0`; the flag alone gives true), or a value that may be given again.
   */
  readonly arg: 'switch' | 'value' | 'optional' | 'repeated';
  /** The value's name in --help and the README: FILE, ADDR:PORT, N, … */
  readonly type: string;
  readonly read: (value: unknown) => T;
}

export function problem(text: string): never {
  throw new SettingProblem(text);
}

function nonEmpty(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0)
    problem(`expected a non-empty string, got ${JSON.stringify(value)}`);
  return value;
}

export function text(type: string): Kind<string> {
  return { arg: 'value', type, read: nonEmpty };
}

export const onOff: Kind<boolean> = {
  arg: 'switch',
  type: 'true|false',
  read: (value) =>
    typeof value === 'boolean' ? value : problem(`expected true or false, got ${JSON.stringify(value)}`),
};

/** Flags carry numbers as digit strings, JSON as numbers: both are taken. */
export function integer(min: number, max: number, type = 'N'): Kind<number> {
  return {
    arg: 'value',
    type,
    read: (value) => {
      const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max)
        problem(`expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
      return n;
    },
  };
}

/** How many workers: a count, or `auto` for one per core this process may use. */
export const workerCount: Kind<number> = {
  arg: 'value',
  type: 'N|auto',
  read: (value) => (value === 'auto' ? availableParallelism() : integer(1, 64).read(value)),
};

/** A JSON array of strings or one comma-separated string; a repeated flag gives an array. */
export function list(
  type: string,
  item: (value: string) => string,
  arg: 'value' | 'repeated' = 'value',
): Kind<string[]> {
  return {
    arg,
    type,
    read: (value) => {
      const items =
        typeof value === 'string'
          ? value
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : value;
      if (!Array.isArray(items) || !items.every((s) => typeof s === 'string' && s.length > 0))
        problem(`expected a list of strings, got ${JSON.stringify(value)}`);
      return items.map(item);
    },
  };
}

/** A further condition on a kind's value: `check` returns the problem, or null when the value is fine. */
export function where<T>(kind: Kind<T>, check: (value: T) => string | null): Kind<T> {
  return {
    ...kind,
    read: (value) => {
      const read = kind.read(value);
      const wrong = check(read);
      return wrong === null ? read : problem(wrong);
    },
  };
}

export function convert<T, U>(kind: Kind<T>, to: (value: T) => U): Kind<U> {
  return { ...kind, read: (value) => to(kind.read(value)) };
}

export function ipAddress(value: string): string {
  return isIP(value) === 0 ? problem(`"${value}" is not an IP address`) : value;
}

export function dnsDomain(value: string): string {
  return isDnsDomain(value) ? value : problem(`"${value}" is not a domain name`);
}

export function addressPrefix(value: string, family?: 4 | 6): string {
  let parsedFamily: 4 | 6;
  try {
    parsedFamily = parseCidr(value).family;
  } catch {
    problem(`expected an address prefix like 198.18.8.0/24, got "${value}"`);
  }
  if (family !== undefined && parsedFamily !== family)
    problem(`expected an IPv${family} prefix, got "${value}"`);
  return value;
}

export function prefix(family?: 4 | 6): Kind<string> {
  return convert(text(family === undefined ? 'CIDR' : `IPv${family}-CIDR`), (v) => addressPrefix(v, family));
}

/** "ADDR:PORT", "[v6]:PORT" or ":PORT". */
export const listenAddress: Kind<ListenAddress> = convert(text('ADDR:PORT'), (value) => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = match === null ? Number.NaN : Number(match[3]);
  if (match === null || port < 0 || port > 65535) problem(`expected ADDR:PORT, got "${value}"`);
  const host = match[1] ?? (match[2] === '' || match[2] === undefined ? '0.0.0.0' : match[2]);
  if (match[1] !== undefined && isIP(host) !== 6) problem(`"${host}" is not an IPv6 address`);
  return { host, port };
});

/** --metrics: ADDR:PORT, or a port alone on loopback (metrics must not be public by accident). */
export const metricsAddress: Kind<ListenAddress> = convert(text('[ADDR:]PORT'), (value) => {
  if (/^\d{1,5}$/.test(value)) {
    const port = Number(value);
    if (port < 1 || port > 65535) problem(`expected a port from 1 to 65535, got "${value}"`);
    return { host: '127.0.0.1', port };
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = match === null ? Number.NaN : Number(match[3]);
  if (match === null || !(port >= 1 && port <= 65535)) problem(`expected ADDR:PORT or PORT, got "${value}"`);
  const host = (match[1] ?? match[2]) as string;
  if (isIP(host) === 0) problem(`"${host}" is not an IP address`);
  return { host, port };
});

export const url: Kind<URL> = convert(text('URL'), (value) => {
  try {
    return new URL(value);
  } catch {
    return problem(`"${value}" is not a URL`);
  }
});

/** A certificate pin, kept in the form fingerprints are compared in. */
export const pin: Kind<string> = convert(text('sha256:HEX'), (value) => {
  try {
    return parsePin(value);
  } catch (err) {
    return problem(err instanceof Error ? err.message : String(err));
  }
});

/** "NAME", "IP", "NAME:PORT", "IP:PORT", "[v6]:PORT" or a bare IPv6 address: what clients dial. */
export const dialAddress: Kind<DialAddress> = convert(text('NAME_OR_IP[:PORT]'), (value) => {
  if (isIP(value) === 6) return { host: value, port: undefined };
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(value);
  if (match === null) problem(`expected NAME_OR_IP[:PORT], got "${value}"`);
  const host = match[1] ?? (match[2] as string);
  if (match[1] !== undefined && isIP(host) !== 6) problem(`"${host}" is not an IPv6 address`);
  const wrong = hostProblem(host);
  if (wrong !== null) problem(wrong);
  const port = match[3] === undefined ? undefined : Number(match[3]);
  if (port !== undefined && (port < 1 || port > 65535)) problem(`port ${port} is out of range`);
  return { host, port };
});

/** Linux interface names: at most 15 characters, and only those that need no quoting anywhere. */
const INTERFACE_NAME = /^[A-Za-z0-9_.@-]{1,15}$/;

/** `--nat` (true: the interface of the default route), `--nat IFACE`, or off (false, absent). */
export const natChoice: Kind<NatChoice | undefined> = {
  arg: 'optional',
  type: 'IFACE',
  read: (value) => {
    if (value === false) return undefined;
    if (value === true) return { iface: undefined };
    if (typeof value === 'string' && INTERFACE_NAME.test(value)) return { iface: value };
    return problem(
      `expected true, false or an interface name (up to 15 of A-Z a-z 0-9 _ . @ -), got ${JSON.stringify(value)}`,
    );
  },
};
