// Making invites from a server's configuration (`facade init`, `facade user invite`): where clients dial,
// how they trust the certificate, and how the link is shown. The link format is protocol/invite.ts.

import type { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { toString as qrText } from 'qrcode';
import { loadCertificatePair, parseLeafCertificate } from '../certs/cert-store.js';
import { SELF_SIGNED_NAME } from '../certs/self-signed.js';
import type { DialAddress, ListenAddress } from '../config/schema.js';
import { facadeError, isFacadeError } from '../core/errors.js';
import { derFingerprint } from '../protocol/pin.js';

/** The parts of a server's settings an invite is made from. */
export interface InviteSource {
  readonly host?: DialAddress | undefined;
  readonly domain?: string | undefined;
  readonly listen: ListenAddress;
  readonly stateDir: string;
  readonly cert?: string | undefined;
  readonly plaintext: boolean;
}

/** Where clients dial: `host` (its port, else the one the server listens on), else the ACME domain. */
export function dialTarget(source: InviteSource): { host: string; port: number } {
  const host = source.host?.host ?? source.domain;
  if (host === undefined)
    throw facadeError('INVITE_UNAVAILABLE', [
      'it needs the name or address clients dial: --host NAME_OR_IP[:PORT] (or "host" in facade.json)',
    ]);
  return { host, port: source.host?.port ?? source.listen.port };
}

/**
 * The names of the self-signed certificate a server makes with these settings, as server/server.ts picks
 * them: `facade init` makes the certificate ahead of the server, so that the invite it prints has the pin
 * the server will serve (a certificate missing a name the server asks for would be replaced, and the pin
 * with it). test/netns/invite-nat.test.ts checks that the two agree.
 */
export function selfSignedNames(settings: {
  readonly listen: ListenAddress;
  readonly selfSignedNames?: readonly string[] | undefined;
}): string[] {
  if (settings.selfSignedNames !== undefined && settings.selfSignedNames.length > 0)
    return [...settings.selfSignedNames];
  const wildcard = settings.listen.host === '0.0.0.0' || settings.listen.host === '::';
  return [wildcard ? 'localhost' : settings.listen.host];
}

/**
 * How clients trust the server: undefined for the system CAs (ACME, or a CA-issued --cert), else the pin of
 * the served certificate (a self-signed --cert, or the one in the state directory). Reads, never makes one:
 * a certificate made here could differ from the one a running server serves.
 */
export async function trustOf(source: InviteSource): Promise<string | undefined> {
  if (source.plaintext)
    throw facadeError('INVITE_UNAVAILABLE', ['the server runs with plaintext (no TLS); invites are for TLS']);
  if (source.domain !== undefined && source.cert === undefined) return undefined;
  if (source.cert !== undefined) {
    let leaf: X509Certificate;
    try {
      leaf = parseLeafCertificate(await readFile(source.cert, 'utf8'), source.cert);
    } catch (err) {
      if (isFacadeError(err)) throw err;
      throw facadeError('CERT_LOAD', [source.cert, err instanceof Error ? err.message : String(err)]);
    }
    // A certificate that signed itself is vouched for by nobody but its pin; another, by its CA.
    return selfIssued(leaf) ? derFingerprint(leaf.raw) : undefined;
  }
  const stored = await loadCertificatePair(source.stateDir, SELF_SIGNED_NAME);
  if (stored === undefined)
    throw facadeError('INVITE_UNAVAILABLE', [
      `the server has no certificate in ${source.stateDir} yet (it makes one when it first starts): start it once, then ask again`,
    ]);
  return derFingerprint(stored.leaf.raw);
}

function selfIssued(leaf: X509Certificate): boolean {
  return leaf.checkIssued(leaf) && leaf.verify(leaf.publicKey);
}

/**
 * What to print for an invite: a sentence on what it is, the QR code when `qr` (a terminal), and the link
 * on a line of its own, first on that line, for scripts (`grep ^facade://`).
 */
export async function inviteText(link: string, user: string, options: { qr: boolean }): Promise<string> {
  const warning =
    `invite for ${user}: a secret, like a password. Whoever has it connects as ${user} until the user is ` +
    `removed (facade user del ${user}) or given a new key (facade user invite ${user} --new-key).\n`;
  const code = options.qr
    ? await qrText(link, { type: 'terminal', small: true, errorCorrectionLevel: 'L' })
    : '';
  return `${warning}${code}${link}\n`;
}
