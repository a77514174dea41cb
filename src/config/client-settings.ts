// `facade client`'s settings, and the checks that span more than one of them.

import { keepaliveMs, logLevel, offload, offSwitch, plaintext, tunName } from './common-settings.js';
import { onOff, pin, text, url } from './kinds.js';
import type { ClientConfig } from './schema.js';
import { invalid, optional, type RawSettings, required, resolveSettings, withDefault } from './setting.js';

export const CLIENT_SETTINGS = {
  url: required(url, 'the server URL with the tunnel path, e.g. https://vpn.example.com/k2b9x7/connect', {
    argument: 'https://HOST[:PORT]/PATH',
    help: 'the server and its tunnel path (the command argument)',
  }),
  user: required(text('NAME'), 'the user name given to `facade user add`', {
    flag: 'user',
    help: 'user name',
  }),
  passwordFile: required(text('FILE'), 'a file whose first line is the password', {
    flag: 'password-file',
    help: 'file whose first line is the password',
  }),
  ca: optional(text('FILE'), {
    flag: 'ca',
    help: 'extra CA certificate (PEM) to trust besides the system CAs',
  }),
  pin: optional(pin, {
    flag: 'pin',
    help: 'trust exactly the server certificate with this fingerprint',
  }),
  fullTunnel: withDefault(onOff, false, { flag: 'full-tunnel', help: 'send all traffic through the tunnel' }),
  plaintext,
  tunName: tunName('facade-c0'),
  keepaliveMs,
  dns: withDefault(onOff, true, {
    help: 'apply the DNS servers the server pushes',
    aliases: [offSwitch('noDns', 'no-dns')],
  }),
  offload: offload('announce the offload capability (GSO super-packets through the TUN)'),
  logLevel,
};

export function validateClientConfig(raw: RawSettings): ClientConfig {
  const config = resolveSettings(CLIENT_SETTINGS, raw);
  const { protocol, pathname } = config.url;
  if (protocol !== 'https:' && !(config.plaintext && protocol === 'http:'))
    invalid('url', `expected an https:// URL (http:// only with --plaintext), got "${String(raw.url)}"`);
  if (pathname === '/' || pathname === '') invalid('url', 'the URL must include the tunnel path');
  return config;
}
