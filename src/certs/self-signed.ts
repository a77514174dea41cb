// The certificate a server without --cert/--key or --domain serves: self-signed, made once and kept in
// the state directory, so its fingerprint — which clients pin with `--pin sha256:...` — stays the same
// across restarts. It is replaced only when it cannot serve any more: expired (or nearly), not covering
// the names asked for, or unreadable. Each replacement changes the fingerprint, so the result says why.
//
// The fingerprint format (what `--pin` takes) is defined in protocol/pin.ts.

import { createPrivateKey, randomBytes, webcrypto, type X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { facadeError, isFacadeError } from '../core/errors.js';
import { derFingerprint } from '../protocol/pin.js';
import {
  type CertificatePair,
  loadCertificatePair,
  parseLeafCertificate,
  saveCertificatePair,
} from './cert-store.js';

/**
 * Ten years: the point of a pinned certificate is that it does not change, and nothing but the pin
 * vouches for it, so a short lifetime would only force clients to re-pin.
 */
export const SELF_SIGNED_VALIDITY_DAYS = 3650;

/** Replace the certificate this long before it expires, so it never serves expired. */
export const SELF_SIGNED_MIN_REMAINING_MS = 30 * 24 * 3600_000;

/** Backdating covers clients whose clock runs a little behind the server's. */
const NOT_BEFORE_BACKDATE_MS = 3600_000;

/** Name of the pair in the state directory: self-signed.crt.pem / self-signed.key.pem. */
export const SELF_SIGNED_NAME = 'self-signed';

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** RFC 1035 host names (letters, digits, hyphens, dots), plus a leading '*.' wildcard label. */
const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

export interface SelfSignedOptions {
  /** DNS names and/or IP addresses (v4 or v6) the certificate must cover; the first is also its CN. */
  names: readonly string[];
  now?: () => number;
}

export interface SelfSignedCertificate extends CertificatePair {
  /** 'sha256:' + 64 lower-case hex digits: what a client passes to `--pin`. */
  fingerprint: string;
  notAfter: Date;
  /** false when the stored certificate was reused. */
  created: boolean;
  /** Why a new one was made (for the log line announcing the new fingerprint); undefined when reused. */
  reason: string | undefined;
}

/**
 * The self-signed certificate kept in `stateDir` when it still covers `names` and is far from expiry;
 * otherwise a new one (ECDSA P-256, SAN with every name), stored 0600 before it is returned.
 */
export async function loadOrCreateSelfSigned(
  stateDir: string,
  options: SelfSignedOptions,
): Promise<SelfSignedCertificate> {
  const names = checkNames(options.names);
  const now = options.now?.() ?? Date.now();

  let reason: string;
  try {
    const stored = await loadCertificatePair(stateDir, SELF_SIGNED_NAME);
    if (stored === undefined) {
      reason = 'none was stored';
    } else {
      const missing = names.filter((name) => !coversName(stored.leaf, name));
      if (missing.length > 0) {
        reason = `the stored one does not cover ${missing.join(', ')}`;
      } else if (stored.validity.notAfter.getTime() - now < SELF_SIGNED_MIN_REMAINING_MS) {
        reason = `the stored one expires on ${stored.validity.notAfter.toISOString()}`;
      } else {
        return {
          cert: stored.cert,
          key: stored.key,
          fingerprint: certificateFingerprint(stored.leaf.raw),
          notAfter: stored.validity.notAfter,
          created: false,
          reason: undefined,
        };
      }
    }
  } catch (err) {
    if (!isFacadeError(err, 'CERT_LOAD')) throw err;
    reason = `the stored one is unusable: ${err.message}`;
  }

  const pair = await createSelfSigned(names, now);
  const saved = await saveCertificatePair(stateDir, SELF_SIGNED_NAME, pair);
  return {
    ...pair,
    fingerprint: certificateFingerprint(saved.leaf.raw),
    notAfter: saved.validity.notAfter,
    created: true,
    reason,
  };
}

function checkNames(names: readonly string[]): string[] {
  if (names.length === 0) {
    throw facadeError('CONFIG_INVALID', [
      'names',
      'a self-signed certificate needs at least one DNS name or IP address (the --listen address will do)',
    ]);
  }
  for (const name of names) {
    if (isIP(name) === 0 && !DNS_NAME.test(name)) {
      throw facadeError('CONFIG_INVALID', [
        'names',
        `"${name}" is neither an IP address nor a DNS name (letters, digits, hyphens, dots)`,
      ]);
    }
  }
  return [...new Set(names)];
}

function coversName(leaf: X509Certificate, name: string): boolean {
  if (isIP(name) !== 0) return leaf.checkIP(name) !== undefined;
  return leaf.checkHost(name, { subject: 'never', wildcards: false }) !== undefined;
}

async function createSelfSigned(names: readonly string[], now: number): Promise<CertificatePair> {
  // @peculiar/x509 signs through WebCrypto; point it at Node's (a global default is not guaranteed).
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const keys = (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  // 128 random bits; the top bit cleared keeps the DER INTEGER positive (RFC 5280 4.1.2.2).
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const cn = names[0]!.slice(0, 64).replace(/[,+="\\<>;#]/g, '');
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name: `CN=${cn}`,
    notBefore: new Date(now - NOT_BEFORE_BACKDATE_MS),
    notAfter: new Date(now + SELF_SIGNED_VALIDITY_DAYS * 24 * 3600_000),
    signingAlgorithm: KEY_ALGORITHM,
    keys,
    extensions: [
      new x509.SubjectAlternativeNameExtension(
        names.map((name) => (isIP(name) === 0 ? { type: 'dns', value: name } : { type: 'ip', value: name })),
      ),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({
    format: 'pem',
    type: 'pkcs8',
  }) as string;
  return { cert: certificate.toString('pem'), key };
}

/**
 * The pin of a certificate: takes a PEM (chain: the first certificate counts) or the leaf's DER bytes, e.g.
 * `tlsSocket.getPeerCertificate().raw`. The format itself is the protocol's (protocol/pin.ts).
 */
export function certificateFingerprint(certificate: string | Uint8Array): string {
  return derFingerprint(
    typeof certificate === 'string' ? parseLeafCertificate(certificate).raw : certificate,
  );
}
