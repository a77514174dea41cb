// `facade server`'s settings, and the checks that span more than one of them.

import { isIP } from 'node:net';
import { DEFAULT_TUNNEL_MTU, MIN_TUNNEL_MTU } from '../core/limits.js';
import { keepaliveMs, logFormat, logLevel, offload, plaintext, tunName } from './common-settings.js';
import {
  addressPrefix,
  dialAddress,
  dnsDomain,
  integer,
  ipAddress,
  list,
  listenAddress,
  metricsAddress,
  natChoice,
  onOff,
  prefix,
  text,
  where,
  workerCount,
} from './kinds.js';
import type { ServerConfig } from './schema.js';
import { invalid, optional, type RawSettings, required, resolveSettings, withDefault } from './setting.js';

export const SERVER_SETTINGS = {
  listen: withDefault(listenAddress, '0.0.0.0:443', { flag: 'listen', help: 'address of the HTTPS site' }),
  host: optional(dialAddress, {
    flag: 'host',
    help: 'the name or address clients dial, for invites (facade init, facade user invite); a port only when clients dial another than listen (port forwarding); domain when not given',
  }),
  cert: optional(text('FILE'), { flag: 'cert', help: 'certificate chain file (PEM)' }),
  key: optional(text('FILE'), { flag: 'key', help: 'private key file (PEM)' }),
  selfSignedNames: withDefault(
    list('NAME,…', (name) => (isIP(name) === 0 ? dnsDomain(name) : name)),
    '',
    {
      flag: 'self-signed-names',
      help: 'DNS names and IP addresses of the self-signed certificate made when there is no cert or domain, the first as its CN; default: the listen address, or localhost when that is 0.0.0.0 or ::',
    },
  ),
  domain: optional(text('NAME'), {
    flag: 'domain',
    help: "get a Let's Encrypt certificate for this name (ACME HTTP-01)",
  }),
  email: optional(text('ADDR'), { flag: 'email', help: 'ACME account contact (needed with domain)' }),
  acmeDirectory: optional(
    where(text('URL'), (url) => (/^https?:\/\//.test(url) ? null : `expected an http(s) URL, got "${url}"`)),
    { flag: 'acme-directory', help: 'ACME directory URL (another CA)' },
  ),
  acmeStaging: withDefault(onOff, false, { flag: 'acme-staging', help: "use Let's Encrypt staging" }),
  httpListen: optional(listenAddress, {
    flag: 'http-listen',
    help: 'address of the plain-HTTP redirect and ACME listener; port 80 when not given',
  }),
  pool: required(prefix(4), 'the client address prefix, e.g. 198.18.8.0/24', {
    flag: 'pool',
    help: 'IPv4 prefix clients get addresses from; the first host is the server',
  }),
  pool6: optional(prefix(6), { flag: 'pool6', help: 'IPv6 prefix clients get addresses from' }),
  users: required(text('FILE'), 'the users file made by `facade user add`', {
    flag: 'users',
    help: 'users file (facade user add)',
  }),
  tunnelPath: required(
    where(text('/PATH'), (path) =>
      /^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$/.test(path) && path !== '/'
        ? null
        : `expected an absolute path other than "/" without query or spaces, got "${path}"`,
    ),
    'the secret path clients upgrade at, e.g. /k2b9x7/connect',
    { flag: 'tunnel-path', help: 'secret path of the tunnel upgrade' },
  ),
  site: optional(text('DIR'), {
    flag: 'site',
    help: 'static folder served as the website instead of the bundled one',
  }),
  upstream: optional(
    where(text('URL'), (url) =>
      /^https?:\/\/[^/]+/.test(url)
        ? null
        : `expected http://HOST:PORT of a local web application, got "${url}"`,
    ),
    { flag: 'upstream', help: 'reverse-proxy the website to this local app (http://127.0.0.1:PORT)' },
  ),
  stateDir: withDefault(text('DIR'), '/var/lib/facade', {
    flag: 'state-dir',
    help: 'leases, certificates, status',
  }),
  runAs: withDefault(
    where(text('USER'), (name) =>
      /^([A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d+)$/.test(name)
        ? null
        : `expected a user name or uid, got "${name}"`,
    ),
    'auto',
    {
      flag: 'run-as',
      help: 'user the server switches to once its TUN and ports are open; auto: the user who ran sudo, else nobody (a dedicated system user is better than both); root keeps every privilege',
    },
  ),
  plaintext,
  behindProxy: optional(listenAddress, {
    flag: 'behind-proxy',
    help: 'serve plain HTTP on this address (loopback) for a TLS-terminating reverse proxy or CDN in front that forwards the tunnel path; instead of listen, no TLS, certificate or port 80 here (README: behind nginx or Caddy)',
  }),
  clientToClient: withDefault(onOff, false, {
    flag: 'client-to-client',
    help: 'let clients reach each other',
  }),
  nat: withDefault(natChoice, false, {
    flag: 'nat',
    help: "internet for the clients: turn on forwarding and masquerade the pools out of IFACE (the default route's interface when not named), with MSS clamping, in facade's own nftables table, removed at exit",
  }),
  metrics: optional(metricsAddress, {
    flag: 'metrics',
    help: 'serve Prometheus metrics (GET /metrics) on this address, never on the public site; a port alone means 127.0.0.1:PORT',
  }),
  mtu: withDefault(integer(MIN_TUNNEL_MTU, 65535), DEFAULT_TUNNEL_MTU, { flag: 'mtu', help: 'tunnel MTU' }),
  dns: withDefault(list('A,B', ipAddress), '', {
    flag: 'dns',
    help: 'DNS servers pushed to clients, comma-separated',
  }),
  dnsDomains: withDefault(list('NAME,…', dnsDomain), '', {
    flag: 'dns-domain',
    help: 'domains the pushed DNS servers answer for; clients without --full-tunnel use them for these only',
  }),
  routes: withDefault(
    list('CIDR', (route) => addressPrefix(route), 'repeated'),
    '',
    {
      flag: 'route',
      help: 'extra prefix pushed to clients (repeatable)',
    },
  ),
  tunName: tunName('facade0'),
  workers: withDefault(workerCount, 'auto', {
    flag: 'workers',
    help: 'worker processes, each with its own event loop, TLS sessions and TUN queue; auto: one per core',
  }),
  keepaliveMs,
  offload: offload('GSO super-packets (IFF_VNET_HDR) on the TUN and the wire'),
  logLevel,
  logFormat,
};

export function validateServerConfig(raw: RawSettings): ServerConfig {
  const config = resolveSettings(SERVER_SETTINGS, raw);
  if ((config.cert === undefined) !== (config.key === undefined))
    invalid(config.cert === undefined ? 'cert' : 'key', 'cert and key go together');
  if (config.domain !== undefined && config.cert !== undefined)
    invalid('domain', 'use either domain (ACME) or cert/key, not both');
  if (config.domain !== undefined && config.email === undefined)
    invalid('email', 'is required with domain: the ACME account contact');
  if (config.behindProxy !== undefined) {
    // TLS ends at the proxy: nothing here holds a certificate or answers port 80.
    for (const key of ['domain', 'cert', 'httpListen'] as const)
      if (config[key] !== undefined) invalid(key, 'TLS ends at the proxy with behindProxy: leave it out');
    if (config.plaintext) invalid('plaintext', 'behindProxy is plain HTTP already: leave plaintext out');
    return { ...config, listen: config.behindProxy };
  }
  return config;
}
