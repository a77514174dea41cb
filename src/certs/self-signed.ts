// The certificate a server without --cert/--key or --domain serves: self-signed, made once and kept in
// the state directory, so its fingerprint — which clients pin with `--pin sha256:...` — stays the same
// across restarts. It is replaced only when it cannot serve any more: expired (or nearly), not covering
// the names asked for, or unreadable. Each replacement changes the fingerprint, so the result says why.
//
// The fingerprint format (what `--pin` takes) is defined in protocol/pin.ts.
//
// To a scanner it is what an administrator gets from the most common tool, OpenSSL 3's
//   openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=NAME -addext subjectAltName=...
// field for field: X.509 v3, a random 159-bit serial, sha256WithRSAEncryption over an RSA 2048 key (e 65537),
// issuer = subject = CN=<first name> (UTF8String), a validity of exactly 3650 days, and OpenSSL's v3_ca
// extensions in OpenSSL's order: subject key identifier (SHA-1 of the key), authority key identifier (the
// same key id), basic constraints critical CA:TRUE, then the names as subjectAltName. No key usage, no
// extended key usage, nothing facade's own. test/unit/self-signed.test.ts compares it with what `openssl req`
// makes. Its names are only those asked for (server.ts: --self-signed-names, else the --listen address, else
// localhost), never the machine's host name.

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
 * Ten years (`openssl req -days 3650`, the value of countless how-tos): the point of a pinned certificate
 * is that it does not change, and nothing but the pin vouches for it, so a short lifetime would only force
 * clients to re-pin.
 */
export const SELF_SIGNED_VALIDITY_DAYS = 3650;

/** Replace the certificate this long before it expires, so it never serves expired. */
export const SELF_SIGNED_MIN_REMAINING_MS = 30 * 24 * 3600_000;

/**
 * Backdating covers clients whose clock runs a little behind the server's (with --ca; a pin ignores dates).
 * The validity still lasts exactly SELF_SIGNED_VALIDITY_DAYS from notBefore, as openssl's does: nobody outside
 * knows when the certificate was really made.
 */
const NOT_BEFORE_BACKDATE_MS = 3600_000;

/** Name of the pair in the state directory: self-signed.crt.pem / self-signed.key.pem. */
export const SELF_SIGNED_NAME = 'self-signed';

/** `openssl req -newkey rsa` (OpenSSL 3: 2048 bits, e = 65537), signed sha256WithRSAEncryption. */
const KEY_ALGORITHM = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
} as const;

/** OpenSSL's random serials: 159 bits (SERIAL_RAND_BITS), so 20 bytes with the top bit clear. */
const SERIAL_BYTES = 20;

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
 * otherwise a new one (as `openssl req -x509` makes it, SAN with every name), stored 0600 before it is returned.
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
  const serial = randomBytes(SERIAL_BYTES);
  serial[0] = serial[0]! & 0x7f; // leading zero bytes are dropped, as a shorter BIGNUM would be
  const cn = names[0]!.slice(0, 64);
  // UTF8String, as OpenSSL writes every field (string_mask = utf8only); the library would pick PrintableString.
  const name = new x509.Name([{ CN: [{ utf8String: cn }] }]);
  // Whole seconds: the DER time has no fraction, and the length must come out at exactly N days.
  const notBefore = new Date(Math.floor((now - NOT_BEFORE_BACKDATE_MS) / 1000) * 1000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name,
    notBefore,
    notAfter: new Date(notBefore.getTime() + SELF_SIGNED_VALIDITY_DAYS * 24 * 3600_000),
    signingAlgorithm: KEY_ALGORITHM,
    keys,
    // OpenSSL's v3_ca section (subjectKeyIdentifier=hash, authorityKeyIdentifier=keyid:always,issuer,
    // basicConstraints=critical,CA:true), then -addext subjectAltName.
    extensions: [
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.SubjectAlternativeNameExtension(
        names.map((entry) =>
          isIP(entry) === 0 ? { type: 'dns', value: entry } : { type: 'ip', value: entry },
        ),
      ),
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
