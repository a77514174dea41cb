// `facade client`'s settings, and the checks that span more than one of them.

import { isFacadeError } from '../core/errors.js';
import { decodeSeed, encodeSeed, type Invite, inviteServerUrl, parseInvite } from '../protocol/invite.js';
import {
  keepaliveMs,
  logFormat,
  logLevel,
  offload,
  offSwitch,
  plaintext,
  tunName,
} from './common-settings.js';
import { convert, onOff, pin, problem, text, url, where } from './kinds.js';
import { CLIENT_TRANSPORTS, type ClientConfig, type ClientTransport } from './schema.js';
import { invalid, optional, type RawSettings, resolveSettings, type Values, withDefault } from './setting.js';

/** An invite link, checked as it is read; the resolver names the key, the problem never holds the key. */
const inviteLink = convert(text('LINK'), (link): Invite => {
  try {
    return parseInvite(link);
  } catch (err) {
    if (isFacadeError(err, 'INVITE_INVALID')) return problem(err.message);
    throw err;
  }
});

export const CLIENT_SETTINGS = {
  invite: optional(inviteLink, {
    flag: 'invite',
    help: 'a facade:// link from `facade user invite`: server, tunnel path, user, key and how to trust the certificate, instead of the URL, user, password-file and pin (a secret: see --save)',
  }),
  url: optional(url, {
    argument: 'https://HOST[:PORT]/PATH',
    help: 'the server and its tunnel path (the command argument)',
  }),
  user: optional(text('NAME'), {
    flag: 'user',
    help: 'user name',
  }),
  passwordFile: optional(text('FILE'), {
    flag: 'password-file',
    help: 'file whose first line is the password',
  }),
  key: optional(
    where(text('KEY'), (key) => {
      const seed = decodeSeed(key);
      return typeof seed === 'string' ? seed : null;
    }),
    {
      help: "the user's key from an invite, instead of passwordFile (written by --save; never a flag: a command line is visible to every local user)",
    },
  ),
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
  transport: withDefault(
    convert(
      where(text('auto|upgrade|websocket|h2'), (value) =>
        (CLIENT_TRANSPORTS as readonly string[]).includes(value)
          ? null
          : `expected one of ${CLIENT_TRANSPORTS.join(', ')}, got "${value}"`,
      ),
      (value) => value as ClientTransport,
    ),
    'auto',
    {
      flag: 'transport',
      help: 'how the tunnel is carried: h2, an HTTP/2 extended CONNECT stream; websocket, a WebSocket (for a CDN or a proxy that carries only those); upgrade, the raw HTTP/1.1 upgrade; auto: h2 where the server offers it, else upgrade',
    },
  ),
  offload: offload('announce the offload capability (GSO super-packets through the TUN)'),
  logLevel,
  logFormat,
};

export function validateClientConfig(raw: RawSettings): ClientConfig {
  const { invite, ...config } = resolveSettings(CLIENT_SETTINGS, raw);
  if (invite !== undefined) return fromInvite(invite, config);
  if (config.url === undefined)
    invalid(
      'url',
      'is required: the server URL with the tunnel path, e.g. https://vpn.example.com/k2b9x7/connect (or an invite: --invite LINK)',
    );
  if (config.user === undefined) invalid('user', 'is required: the user name given to `facade user add`');
  if (config.passwordFile === undefined && config.key === undefined)
    invalid(
      'passwordFile',
      'is required: a file whose first line is the password (or an invite: --invite LINK)',
    );
  if (config.passwordFile !== undefined && config.key !== undefined)
    invalid('key', 'is a credential too: give passwordFile or key, not both');
  const { protocol, pathname } = config.url;
  if (protocol !== 'https:' && !(config.plaintext && protocol === 'http:'))
    invalid('url', `expected an https:// URL (http:// only with --plaintext), got "${String(raw.url)}"`);
  if (pathname === '/' || pathname === '') invalid('url', 'the URL must include the tunnel path');
  return { ...config, url: config.url, user: config.user };
}

/** The invite gives the server, the user, the key and the trust; a setting that says any of them again is refused. */
function fromInvite(invite: Invite, config: Omit<Values<typeof CLIENT_SETTINGS>, 'invite'>): ClientConfig {
  for (const key of ['url', 'user', 'passwordFile', 'key', 'pin', 'ca'] as const)
    if (config[key] !== undefined) invalid(key, 'the invite gives it already: use one or the other');
  if (config.plaintext) invalid('plaintext', 'an invite is for a server with TLS');
  return {
    ...config,
    url: inviteServerUrl(invite),
    user: invite.user,
    key: encodeSeed(invite.seed),
    pin: invite.pin,
  };
}
