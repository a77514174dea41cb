// `facade server`'s settings, and the checks that span more than one of them.

import { DEFAULT_TUNNEL_MTU, MIN_TUNNEL_MTU } from '../core/limits.js';
import { keepaliveMs, logLevel, offload, plaintext, tunName } from './common-settings.js';
import {
  addressPrefix,
  dnsDomain,
  integer,
  ipAddress,
  list,
  listenAddress,
  onOff,
  prefix,
  text,
  where,
} from './kinds.js';
import type { ServerConfig } from './schema.js';
import { invalid, optional, type RawSettings, required, resolveSettings, withDefault } from './setting.js';

export const SERVER_SETTINGS = {
  listen: withDefault(listenAddress, '0.0.0.0:443', { flag: 'listen', help: 'address of the HTTPS site' }),
  cert: optional(text('FILE'), { flag: 'cert', help: 'certificate chain file (PEM)' }),
  key: optional(text('FILE'), { flag: 'key', help: 'private key file (PEM)' }),
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
  clientToClient: withDefault(onOff, false, {
    flag: 'client-to-client',
    help: 'let clients reach each other',
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
  keepaliveMs,
  offload: offload('GSO super-packets (IFF_VNET_HDR) on the TUN and the wire'),
  logLevel,
};

export function validateServerConfig(raw: RawSettings): ServerConfig {
  const config = resolveSettings(SERVER_SETTINGS, raw);
  if ((config.cert === undefined) !== (config.key === undefined))
    invalid(config.cert === undefined ? 'cert' : 'key', 'cert and key go together');
  if (config.domain !== undefined && config.cert !== undefined)
    invalid('domain', 'use either domain (ACME) or cert/key, not both');
  if (config.domain !== undefined && config.email === undefined)
    invalid('email', 'is required with domain: the ACME account contact');
  return config;
}
