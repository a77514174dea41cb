// The settings of both modes, their defaults, and validation that names the key and the problem.
// A setting comes from a flag (--tunnel-path) or from the config file (tunnelPath); flags win.

import { isIP } from 'node:net';
import { facadeError } from '../core/errors.js';
import { DEFAULT_KEEPALIVE_MS, DEFAULT_TUNNEL_MTU, MIN_TUNNEL_MTU } from '../core/limits.js';
import { parseCidr } from '../net/packet.js';
import { parsePin } from '../protocol/pin.js';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface ServerConfig {
  readonly listen: ListenAddress;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly domain?: string | undefined;
  readonly email?: string | undefined;
  readonly acmeDirectory?: string | undefined;
  readonly acmeStaging: boolean;
  readonly httpListen?: ListenAddress | undefined;
  readonly pool: string;
  readonly pool6?: string | undefined;
  readonly users: string;
  readonly tunnelPath: string;
  readonly site?: string | undefined;
  readonly upstream?: string | undefined;
  readonly stateDir: string;
  readonly plaintext: boolean;
  readonly clientToClient: boolean;
  readonly mtu: number;
  readonly dns: readonly string[];
  readonly routes: readonly string[];
  readonly tunName: string;
  readonly keepaliveMs: number;
  /** TUN with IFF_VNET_HDR and DATA_OFFLOAD frames: GSO super-packets end to end. */
  readonly offload: boolean;
  readonly logLevel: string;
}

export interface ClientConfig {
  readonly url: URL;
  readonly user: string;
  readonly passwordFile: string;
  readonly ca?: string | undefined;
  readonly pin?: string | undefined;
  readonly fullTunnel: boolean;
  readonly plaintext: boolean;
  readonly tunName: string;
  readonly keepaliveMs: number;
  readonly dns: boolean;
  /** Announce the offload capability (GSO super-packets through a TUN with IFF_VNET_HDR). */
  readonly offload: boolean;
  readonly logLevel: string;
}

export const SERVER_DEFAULTS = {
  listen: '0.0.0.0:443',
  stateDir: '/var/lib/facade',
  tunName: 'facade0',
  mtu: DEFAULT_TUNNEL_MTU,
  keepaliveMs: DEFAULT_KEEPALIVE_MS,
  logLevel: 'info',
} as const;

export const CLIENT_DEFAULTS = {
  tunName: 'facade-c0',
  keepaliveMs: DEFAULT_KEEPALIVE_MS,
  logLevel: 'info',
} as const;

/** Raw settings as they come from a JSON file merged with flags: unknown shapes, validated below. */
export type RawSettings = Record<string, unknown>;

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function invalid(key: string, problem: string): never {
  throw facadeError('CONFIG_INVALID', [key, problem]);
}

function optionalString(raw: RawSettings, key: string): string | undefined {
  const value = raw[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.length === 0)
    invalid(key, `expected a non-empty string, got ${JSON.stringify(value)}`);
  return value;
}

function requiredString(raw: RawSettings, key: string, hint: string): string {
  const value = optionalString(raw, key);
  if (value === undefined) invalid(key, `is required: ${hint}`);
  return value;
}

function bool(raw: RawSettings, key: string): boolean {
  const value = raw[key];
  if (value === undefined || value === null) return false;
  if (typeof value !== 'boolean') invalid(key, `expected true or false, got ${JSON.stringify(value)}`);
  return value;
}

function integer(raw: RawSettings, key: string, fallback: number, min: number, max: number): number {
  const value = raw[key];
  if (value === undefined || value === null) return fallback;
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    invalid(key, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}

function stringList(raw: RawSettings, key: string): string[] {
  const value = raw[key];
  if (value === undefined || value === null) return [];
  const list =
    typeof value === 'string'
      ? value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : value;
  if (!Array.isArray(list) || !list.every((item) => typeof item === 'string' && item.length > 0)) {
    invalid(key, `expected a list of strings, got ${JSON.stringify(value)}`);
  }
  return list as string[];
}

function cidr(key: string, value: string, family?: 4 | 6): string {
  try {
    const parsed = parseCidr(value);
    if (family !== undefined && parsed.family !== family)
      invalid(key, `expected an IPv${family} prefix, got "${value}"`);
  } catch (err) {
    if (err instanceof Error && 'code' in err && err.code === 'FACADE_ERR_CONFIG_INVALID') throw err;
    invalid(key, `expected an address prefix like 198.18.8.0/24, got "${value}"`);
  }
  return value;
}

/** "ADDR:PORT", "[v6]:PORT" or ":PORT". */
export function parseListen(key: string, value: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = match === null ? Number.NaN : Number(match[3]);
  if (match === null || port < 0 || port > 65535) invalid(key, `expected ADDR:PORT, got "${value}"`);
  const host = match[1] ?? (match[2] === '' || match[2] === undefined ? '0.0.0.0' : match[2]);
  if (match[1] !== undefined && isIP(host) !== 6) invalid(key, `"${host}" is not an IPv6 address`);
  return { host, port };
}

function logLevel(raw: RawSettings): string {
  const level = optionalString(raw, 'logLevel') ?? 'info';
  if (!LOG_LEVELS.has(level))
    invalid('logLevel', `expected one of ${[...LOG_LEVELS].join(', ')}, got "${level}"`);
  return level;
}

function keepaliveMs(raw: RawSettings, fallback: number): number {
  if (raw.keepalive !== undefined) return integer(raw, 'keepalive', 0, 0, 3600) * 1000;
  return integer(raw, 'keepaliveMs', fallback, 0, 3_600_000);
}

export function validateServerConfig(raw: RawSettings): ServerConfig {
  const tunnelPath = requiredString(
    raw,
    'tunnelPath',
    'the secret path clients upgrade at, e.g. /k2b9x7/connect',
  );
  if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$/.test(tunnelPath) || tunnelPath === '/') {
    invalid(
      'tunnelPath',
      `expected an absolute path other than "/" without query or spaces, got "${tunnelPath}"`,
    );
  }
  const cert = optionalString(raw, 'cert');
  const key = optionalString(raw, 'key');
  if ((cert === undefined) !== (key === undefined))
    invalid(cert === undefined ? 'cert' : 'key', 'cert and key go together');
  const domain = optionalString(raw, 'domain');
  const email = optionalString(raw, 'email');
  if (domain !== undefined && cert !== undefined)
    invalid('domain', 'use either domain (ACME) or cert/key, not both');
  if (domain !== undefined && email === undefined)
    invalid('email', 'is required with domain: the ACME account contact');
  const acmeDirectory = optionalString(raw, 'acmeDirectory');
  if (acmeDirectory !== undefined && !/^https?:\/\//.test(acmeDirectory)) {
    invalid('acmeDirectory', `expected an http(s) URL, got "${acmeDirectory}"`);
  }
  const httpListenRaw = optionalString(raw, 'httpListen');
  const mtu = integer(raw, 'mtu', SERVER_DEFAULTS.mtu, MIN_TUNNEL_MTU, 65535);
  const pool = cidr('pool', requiredString(raw, 'pool', 'the client address prefix, e.g. 198.18.8.0/24'), 4);
  const pool6Raw = optionalString(raw, 'pool6');
  const dns = stringList(raw, 'dns');
  for (const server of dns) if (isIP(server) === 0) invalid('dns', `"${server}" is not an IP address`);
  const routes = stringList(raw, 'routes').map((route) => cidr('routes', route));
  const upstream = optionalString(raw, 'upstream');
  if (upstream !== undefined && !/^https?:\/\/[^/]+/.test(upstream)) {
    invalid('upstream', `expected http://HOST:PORT of a local web application, got "${upstream}"`);
  }
  const tunName = optionalString(raw, 'tunName') ?? SERVER_DEFAULTS.tunName;
  if (tunName.length > 15) invalid('tunName', `interface names have at most 15 characters, got "${tunName}"`);
  return {
    listen: parseListen('listen', optionalString(raw, 'listen') ?? SERVER_DEFAULTS.listen),
    cert,
    key,
    domain,
    email,
    acmeDirectory,
    acmeStaging: bool(raw, 'acmeStaging'),
    httpListen: httpListenRaw === undefined ? undefined : parseListen('httpListen', httpListenRaw),
    pool,
    pool6: pool6Raw === undefined ? undefined : cidr('pool6', pool6Raw, 6),
    users: requiredString(raw, 'users', 'the users file made by `facade user add`'),
    tunnelPath,
    site: optionalString(raw, 'site'),
    upstream,
    stateDir: optionalString(raw, 'stateDir') ?? SERVER_DEFAULTS.stateDir,
    plaintext: bool(raw, 'plaintext'),
    clientToClient: bool(raw, 'clientToClient'),
    mtu,
    dns,
    routes,
    tunName,
    keepaliveMs: keepaliveMs(raw, SERVER_DEFAULTS.keepaliveMs),
    offload: raw.offload === undefined ? true : bool(raw, 'offload'),
    logLevel: logLevel(raw),
  };
}

export function validateClientConfig(raw: RawSettings): ClientConfig {
  const urlText = requiredString(
    raw,
    'url',
    'the server URL with the tunnel path, e.g. https://vpn.example.com/k2b9x7/connect',
  );
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    invalid('url', `"${urlText}" is not a URL`);
  }
  const plaintext = bool(raw, 'plaintext');
  if (url.protocol !== 'https:' && !(plaintext && url.protocol === 'http:')) {
    invalid('url', `expected an https:// URL (http:// only with --plaintext), got "${urlText}"`);
  }
  if (url.pathname === '/' || url.pathname === '') invalid('url', 'the URL must include the tunnel path');
  const pinText = optionalString(raw, 'pin');
  let pin: string | undefined;
  if (pinText !== undefined) {
    try {
      pin = parsePin(pinText);
    } catch (err) {
      invalid('pin', err instanceof Error ? err.message : String(err));
    }
  }
  const tunName = optionalString(raw, 'tunName') ?? CLIENT_DEFAULTS.tunName;
  if (tunName.length > 15) invalid('tunName', `interface names have at most 15 characters, got "${tunName}"`);
  return {
    url,
    user: requiredString(raw, 'user', 'the user name given to `facade user add`'),
    passwordFile: requiredString(raw, 'passwordFile', 'a file whose first line is the password'),
    ca: optionalString(raw, 'ca'),
    pin,
    fullTunnel: bool(raw, 'fullTunnel'),
    plaintext,
    tunName,
    keepaliveMs: keepaliveMs(raw, CLIENT_DEFAULTS.keepaliveMs),
    dns: raw.dns === undefined ? true : bool(raw, 'dns'),
    offload: raw.offload === undefined ? true : bool(raw, 'offload'),
    logLevel: logLevel(raw),
  };
}
