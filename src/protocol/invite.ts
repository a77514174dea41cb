// Invite links: everything a client needs to connect, in one line an operator can hand over.
//
//   facade://USER:KEY@HOST:PORT/TUNNEL/PATH?pin=sha256:HEX     the server's certificate is pinned (self-signed)
//   facade://USER:KEY@HOST:PORT/TUNNEL/PATH?ca=system          the system CAs vouch for it (ACME, a CA's files)
//
// KEY is the seed of the user's Ed25519 key on this installation (docs/PROTOCOL.md 1.1), base64url, 43
// characters: for a password, the scrypt of it (so a password a person chose, and may use elsewhere,
// never appears in a link); for a generated credential, 32 random bytes. It opens this installation's
// tunnel as USER and nothing else; the users file still holds only the public key.
//
// The link is a secret: whoever has it connects as USER until the user is removed (`facade user del`) or
// given a new key (`facade user invite NAME --new-key`). It is not single-use and does not expire: the
// server checks a signature made with the key, and keeps no record of which copies of a key exist.

import { isIP, isIPv6 } from 'node:net';
import { facadeError } from '../core/errors.js';
import { SEED_LENGTH, userNameProblem } from './credentials.js';
import { parsePin } from './pin.js';

export const INVITE_SCHEME = 'facade:';

export interface Invite {
  readonly user: string;
  /** The 32-byte seed of the user's key pair on this installation. */
  readonly seed: Buffer;
  /** A DNS name or an IP address (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** The secret tunnel path, which is also the realm the key belongs to. */
  readonly tunnelPath: string;
  /** 'sha256:…' of the certificate to pin; undefined: the system CAs vouch for the server. */
  readonly pin: string | undefined;
}

/** RFC 1035 host names: letters, digits, hyphens, dots. */
const DNS_NAME = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;
const SEED_TEXT_LENGTH = Math.ceil((SEED_LENGTH * 4) / 3);

/** The reason `host` cannot be dialled as given, or null: a DNS name or an IP address. */
export function hostProblem(host: string): string | null {
  if (isIP(host) !== 0) return null;
  if (host.length <= 253 && DNS_NAME.test(host)) return null;
  return `"${host}" is neither a DNS name nor an IP address`;
}

/** `host` as it goes into a URL's authority: IPv6 in brackets. */
export function urlHost(host: string): string {
  return isIPv6(host) ? `[${host}]` : host;
}

/** The seed as a link carries it, and as a saved client config keeps it (`key`). */
export function encodeSeed(seed: Buffer): string {
  if (seed.length !== SEED_LENGTH) throw new RangeError(`seed must be ${SEED_LENGTH} bytes`);
  return seed.toString('base64url');
}

/** The seed from its text form, or the reason it is not one. */
export function decodeSeed(text: string): Buffer | string {
  const seed = Buffer.from(text, 'base64url');
  if (text.length !== SEED_TEXT_LENGTH || seed.length !== SEED_LENGTH || seed.toString('base64url') !== text)
    return `the key must be ${SEED_LENGTH} bytes in base64url (${SEED_TEXT_LENGTH} characters)`;
  return seed;
}

/** The link for `invite`. Throws INVITE_UNAVAILABLE for a part a link cannot carry unchanged. */
export function formatInvite(invite: Invite): string {
  const problem = userNameProblem(invite.user) ?? hostProblem(invite.host);
  if (problem !== null) throw facadeError('INVITE_UNAVAILABLE', [problem]);
  const query = invite.pin === undefined ? 'ca=system' : `pin=${parsePin(invite.pin)}`;
  const link = `facade://${encodeURIComponent(invite.user)}:${encodeSeed(invite.seed)}@${urlHost(invite.host)}:${invite.port}${invite.tunnelPath}?${query}`;
  // A path the URL parser would rewrite (dot segments) would make the client dial another path and derive
  // another key: refuse rather than hand out a link that cannot work.
  const back = parseInvite(link);
  if (back.tunnelPath !== invite.tunnelPath)
    throw facadeError('INVITE_UNAVAILABLE', [
      `the tunnel path "${invite.tunnelPath}" does not survive a link unchanged (it became "${back.tunnelPath}")`,
    ]);
  return link;
}

/** The invite in `link`; FACADE_ERR_INVITE_INVALID saying what is wrong. Never echoes the key. */
export function parseInvite(link: string): Invite {
  const invalid = (problem: string): never => {
    throw facadeError('INVITE_INVALID', [problem]);
  };
  const text = link.trim();
  if (!text.toLowerCase().startsWith('facade://'))
    invalid(`it must start with facade:// (it starts with "${text.slice(0, 9)}")`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return invalid('it does not parse as a URL');
  }
  let user: string;
  try {
    user = decodeURIComponent(url.username);
  } catch {
    return invalid('the user name is not valid percent-encoding');
  }
  if (user === '') invalid('it names no user (facade://USER:KEY@…)');
  const nameProblem = userNameProblem(user);
  if (nameProblem !== null) invalid(`user name "${user}" is not allowed: ${nameProblem}`);
  if (url.password === '') invalid('it carries no key (facade://USER:KEY@…)');
  const seed = decodeSeed(url.password);
  if (typeof seed === 'string') invalid(seed);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (host === '') invalid('it names no server');
  const wrongHost = hostProblem(host);
  if (wrongHost !== null) invalid(wrongHost);
  if (url.port === '') invalid('it names no port (facade://USER:KEY@HOST:PORT/…)');
  const port = Number(url.port);
  if (port < 1 || port > 65535) invalid(`port ${url.port} is out of range`);
  const tunnelPath = url.pathname;
  if (tunnelPath === '' || tunnelPath === '/') invalid('it carries no tunnel path');
  if (url.hash !== '') invalid('it has a #fragment, which no invite has');
  let pin: string | undefined;
  let systemCas = false;
  for (const [name, value] of url.searchParams) {
    if (name === 'pin' && pin === undefined) {
      try {
        pin = parsePin(value);
      } catch (err) {
        invalid(err instanceof Error ? err.message : String(err));
      }
    } else if (name === 'ca' && value === 'system' && !systemCas) systemCas = true;
    else invalid(`unexpected parameter "${name}=${value}"`);
  }
  if ((pin === undefined) === !systemCas)
    invalid('it must say how to trust the server: either pin=sha256:HEX or ca=system');
  return { user, seed: seed as Buffer, host, port, tunnelPath, pin };
}

/** The https:// URL the client dials for `invite`. */
export function inviteServerUrl(invite: Invite): URL {
  return new URL(`https://${urlHost(invite.host)}:${invite.port}${invite.tunnelPath}`);
}
