// Tunnel credentials (version 2), shared by client and server. docs/PROTOCOL.md section 1.1 is the spec.
//
// The password never crosses the wire, the server never runs a slow hash per request, and what crosses the
// wire opens nothing a second time:
//
//   seed       = scrypt(password, "facade/v2/" + realm + "/" + user)     realm = the secret tunnel path
//   key pair   = Ed25519 from seed                                       (client, and `facade user add`)
//   users file = the public key                                          (logs no one in)
//   header     = Basic base64(user ":" base64url(2 || time || nonce || Ed25519 signature))
//   signed     = "facade/v2 tunnel auth\0" || user || "\0" || time || nonce || binding
//   binding    = 32 bytes of the TLS exporter of this connection (RFC 5705/8446), or 32 zero bytes when
//                TLS does not end at facade (--plaintext; a reverse proxy in front)
//
// With TLS at facade a captured header fails on any other connection (another exporter); in every mode the
// time (within AUTH_WINDOW_SECONDS) and the single-use nonce keep it from opening anything later. The salt
// holds the installation's random tunnel path, so one precomputation for a common user name serves one
// installation, not all of them.

import {
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes,
  scrypt,
  sign,
  verify as verifySignature,
} from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { facadeError } from '../core/errors.js';

/**
 * scrypt cost parameters. N = 2^15, r = 8 needs 128 * N * r = 32 MiB and ~0.1-0.3 s of one core: costly
 * for an offline guesser, paid once per client start (and by `facade user add`). These are part of the
 * protocol (changing them changes every key), hence the version in the salt.
 */
export const SCRYPT_N = 2 ** 15;
export const SCRYPT_R = 8;
export const SCRYPT_P = 1;
/** Node refuses scrypt above 32 MiB by default; N and r above need exactly 32 MiB plus bookkeeping. */
export const SCRYPT_MAXMEM = 64 * 1024 * 1024;
/** Length of the scrypt output: the Ed25519 seed. */
export const SEED_LENGTH = 32;
/** Salt prefix, then the realm (tunnel path), "/", the user name. */
export const SCRYPT_SALT_PREFIX = 'facade/v2/';

/** The credential version byte, first in every token. Version 1 (a bearer key) is gone. */
export const CREDENTIAL_VERSION = 2;
export const PUBLIC_KEY_LENGTH = 32;
export const SIGNATURE_LENGTH = 64;
export const NONCE_LENGTH = 16;
/** Bytes of the TLS exporter the signature covers. */
export const BINDING_LENGTH = 32;
/** RFC 5705 label of facade's exporter (both sides, no context). */
export const EXPORTER_LABEL = 'EXPORTER-facade-tunnel-auth';
/** Start of every signed message: domain separation from any other use of the key. */
export const SIGNED_LABEL = 'facade/v2 tunnel auth\0';
/** version (1) + time (8) + nonce (16) + signature (64). */
export const TOKEN_LENGTH = 1 + 8 + NONCE_LENGTH + SIGNATURE_LENGTH;
/** The binding when TLS does not end at facade. */
export const ZERO_BINDING: Buffer = Buffer.alloc(BINDING_LENGTH);

/** User names: what fits in a URL, a log line and a file name without quoting; see validateUserName. */
export const MAX_USER_NAME_LENGTH = 64;
const USER_NAME_PATTERN = /^[A-Za-z0-9._@-]+$/;

/**
 * Longest password accepted. scrypt accepts any length, but a megabyte "password" is a mistake (a wrong
 * file given to --password-file), not a secret; refuse it instead of hashing it.
 */
export const MAX_PASSWORD_BYTES = 1024;

/** base64url of the token without padding. */
const ENCODED_TOKEN_LENGTH = Math.ceil((TOKEN_LENGTH * 4) / 3);
/** Longest Authorization value a valid client can send; anything longer is rejected before decoding. */
export const MAX_AUTHORIZATION_LENGTH =
  'Basic '.length + 4 * Math.ceil((MAX_USER_NAME_LENGTH + 1 + ENCODED_TOKEN_LENGTH) / 3) + 8;

const BASIC_PATTERN = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i;
const ENCODED_TOKEN_PATTERN = /^[A-Za-z0-9_-]+$/;

/** DER prefixes around a raw Ed25519 key (RFC 8410): PKCS#8 private key with a 32-byte seed; SPKI. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** The reason a name is refused, or null when it is acceptable. */
export function userNameProblem(name: string): string | null {
  if (name.length === 0) return 'it is empty';
  if (name.length > MAX_USER_NAME_LENGTH)
    return `it is ${name.length} characters long, the limit is ${MAX_USER_NAME_LENGTH}`;
  if (!USER_NAME_PATTERN.test(name)) return 'only letters, digits and . _ @ - are allowed';
  if (name.startsWith('.')) return 'it must not start with "."';
  return null;
}

/** Throws FACADE_ERR_USER_NAME naming the problem: 1..64 of [A-Za-z0-9._@-], not starting with '.'. */
export function validateUserName(name: string): void {
  const problem = userNameProblem(name);
  if (problem !== null) throw facadeError('USER_NAME', [name, problem]);
}

/** Throws FACADE_ERR_USER_PASSWORD when the password is empty or longer than MAX_PASSWORD_BYTES. */
export function validatePassword(user: string, password: string): void {
  if (password.length === 0) throw facadeError('USER_PASSWORD', [user, 'it is empty']);
  const bytes = Buffer.byteLength(password, 'utf8');
  if (bytes > MAX_PASSWORD_BYTES)
    throw facadeError('USER_PASSWORD', [
      user,
      `it is ${bytes} bytes long, the limit is ${MAX_PASSWORD_BYTES}`,
    ]);
}

/**
 * The password in a password file or on stdin: the first line, without its line ending. Client and
 * `facade user add` both use this, so a file written with `echo secret > f` works on both sides.
 */
export function passwordFromText(text: string): string {
  const newline = text.indexOf('\n');
  const line = newline === -1 ? text : text.slice(0, newline);
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

/** The scrypt salt of a user on the installation whose tunnel path is `realm`. */
export function saltFor(realm: string, user: string): string {
  return `${SCRYPT_SALT_PREFIX}${realm}/${user}`;
}

function scryptAsync(password: string, salt: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password,
      salt,
      SEED_LENGTH,
      { N: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P, maxmem: SCRYPT_MAXMEM },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** A user's key pair on one installation. The private key never leaves the client's memory. */
export interface UserKey {
  readonly user: string;
  readonly privateKey: KeyObject;
  /** Raw 32-byte Ed25519 public key: what the users file keeps. */
  readonly publicKey: Buffer;
}

/** The Ed25519 key pair whose seed is `seed` (32 bytes). */
export function keyFromSeed(user: string, seed: Buffer): UserKey {
  if (seed.length !== SEED_LENGTH)
    throw new RangeError(`seed must be ${SEED_LENGTH} bytes, got ${seed.length}`);
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return { user, privateKey, publicKey: spki.subarray(SPKI_ED25519_PREFIX.length) };
}

/**
 * The user's key pair on the installation whose tunnel path is `realm` (slow: one scrypt). Validates the
 * name and password first. The client runs it once at start; `facade user add` to get the public key.
 */
export async function deriveUserKey(realm: string, user: string, password: string): Promise<UserKey> {
  return keyFromSeed(user, await deriveUserSeed(realm, user, password));
}

/**
 * The seed of the user's key pair on the installation whose tunnel path is `realm` (slow: one scrypt). It is
 * what an invite carries instead of the password: it opens this installation's tunnel as this user and
 * nothing else, while a password a person chose may open other things too.
 */
export async function deriveUserSeed(realm: string, user: string, password: string): Promise<Buffer> {
  validateUserName(user);
  validatePassword(user, password);
  if (realm === '') throw new RangeError('the realm (tunnel path) must not be empty');
  return scryptAsync(password, saltFor(realm, user));
}

/**
 * A generated credential: 32 random bytes used as the seed directly. It has full entropy, so no scrypt
 * stands between it and the key, and no password exists for it; the invite is the only copy.
 */
export function randomSeed(): Buffer {
  return randomBytes(SEED_LENGTH);
}

/** A raw 32-byte Ed25519 public key as a KeyObject; throws on anything else. */
export function publicKeyObject(raw: Buffer): KeyObject {
  if (raw.length !== PUBLIC_KEY_LENGTH)
    throw new RangeError(`public key must be ${PUBLIC_KEY_LENGTH} bytes, got ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** What the signature covers. `binding` is the exporter, or ZERO_BINDING without TLS at facade. */
export function signedMessage(user: string, time: bigint, nonce: Buffer, binding: Buffer): Buffer {
  const label = Buffer.from(SIGNED_LABEL, 'latin1');
  const name = Buffer.from(user, 'latin1');
  const message = Buffer.alloc(label.length + name.length + 1 + 8 + nonce.length + binding.length);
  let at = label.copy(message, 0);
  at += name.copy(message, at);
  message[at++] = 0;
  message.writeBigUInt64BE(time, at);
  at += 8;
  at += nonce.copy(message, at);
  binding.copy(message, at);
  return message;
}

/**
 * 32 bytes of this connection's TLS exporter (RFC 5705/8446, label EXPORTER_LABEL, no context), or null
 * when the socket is not TLS. Throws when the TLS connection is not (or no longer) established.
 */
export function connectionBinding(socket: Socket): Buffer | null {
  const tlsSocket = socket as Partial<TLSSocket>;
  if (tlsSocket.encrypted !== true || typeof tlsSocket.exportKeyingMaterial !== 'function') return null;
  return tlsSocket.exportKeyingMaterial(BINDING_LENGTH, EXPORTER_LABEL, undefined as unknown as Buffer);
}

/**
 * `Basic base64(user ":" base64url(token))`, a fresh value for one connection: the current time, a random
 * nonce, the signature over them and `binding` (null: no TLS at facade, the zero binding).
 */
export function createAuthorization(
  key: UserKey,
  binding: Buffer | null,
  options: { nowMs?: number; nonce?: Buffer } = {},
): string {
  validateUserName(key.user);
  const bound = binding ?? ZERO_BINDING;
  if (bound.length !== BINDING_LENGTH)
    throw new RangeError(`binding must be ${BINDING_LENGTH} bytes, got ${bound.length}`);
  const nonce = options.nonce ?? randomBytes(NONCE_LENGTH);
  if (nonce.length !== NONCE_LENGTH) throw new RangeError(`nonce must be ${NONCE_LENGTH} bytes`);
  const time = BigInt(Math.floor((options.nowMs ?? Date.now()) / 1000));
  const signature = sign(null, signedMessage(key.user, time, nonce, bound), key.privateKey);
  return encodeAuthorization(key.user, { time, nonce, signature });
}

/** A parsed token. */
export interface Credentials {
  readonly user: string;
  /** Unix time in seconds, as the client put it. */
  readonly time: bigint;
  readonly nonce: Buffer;
  readonly signature: Buffer;
}

/** The header for given token fields (tests build odd tokens with it). */
export function encodeAuthorization(
  user: string,
  token: { time: bigint; nonce: Buffer; signature: Buffer; version?: number },
): string {
  if (token.nonce.length !== NONCE_LENGTH || token.signature.length !== SIGNATURE_LENGTH)
    throw new RangeError('nonce or signature of the wrong length');
  const bytes = Buffer.alloc(TOKEN_LENGTH);
  bytes[0] = token.version ?? CREDENTIAL_VERSION;
  bytes.writeBigUInt64BE(BigInt.asUintN(64, token.time), 1);
  token.nonce.copy(bytes, 9);
  token.signature.copy(bytes, 9 + NONCE_LENGTH);
  const credentials = `${user}:${bytes.toString('base64url')}`;
  return `Basic ${Buffer.from(credentials, 'utf8').toString('base64')}`;
}

/** The user name in a Basic header of any version (for the refusal log), or undefined. Never throws. */
export function authorizationUser(headerValue: string | undefined): string | undefined {
  const credentials = basicCredentials(headerValue);
  if (credentials === null) return undefined;
  const user = credentials.slice(0, Math.max(0, credentials.indexOf(':')));
  return userNameProblem(user) === null ? user : undefined;
}

function basicCredentials(headerValue: string | undefined): string | null {
  if (typeof headerValue !== 'string' || headerValue.length > MAX_AUTHORIZATION_LENGTH) return null;
  const encoded = BASIC_PATTERN.exec(headerValue)?.[1];
  if (encoded === undefined || encoded.length % 4 !== 0) return null;
  const decoded = Buffer.from(encoded, 'base64');
  // Buffer.from skips what it cannot decode; a round trip proves the input was canonical base64.
  if (decoded.toString('base64') !== encoded) return null;
  return decoded.toString('latin1');
}

/**
 * The credentials in an Authorization header, or null for anything else: missing, too long, another
 * scheme, invalid base64, no colon, an invalid user name, a token that is not TOKEN_LENGTH bytes of
 * canonical base64url, another version (a v1 key is 32 bytes and fails here). Never throws, so the server
 * can treat every malformed header exactly like a wrong password. Says nothing of the signature.
 */
export function parseAuthorization(headerValue: string | undefined): Credentials | null {
  const credentials = basicCredentials(headerValue);
  if (credentials === null) return null;
  const colon = credentials.indexOf(':');
  if (colon === -1) return null;
  const user = credentials.slice(0, colon);
  const encodedToken = credentials.slice(colon + 1);
  if (userNameProblem(user) !== null) return null;
  if (encodedToken.length !== ENCODED_TOKEN_LENGTH || !ENCODED_TOKEN_PATTERN.test(encodedToken)) return null;
  const token = Buffer.from(encodedToken, 'base64url');
  if (token.length !== TOKEN_LENGTH || token.toString('base64url') !== encodedToken) return null;
  if (token[0] !== CREDENTIAL_VERSION) return null;
  return {
    user,
    time: token.readBigUInt64BE(1),
    nonce: token.subarray(9, 9 + NONCE_LENGTH),
    signature: token.subarray(9 + NONCE_LENGTH),
  };
}

/** Ed25519 verification of `signature` over `message`; false (never a throw) for anything malformed. */
export function verifyCredentialSignature(message: Buffer, publicKey: KeyObject, signature: Buffer): boolean {
  try {
    return verifySignature(null, message, publicKey, signature);
  } catch {
    return false;
  }
}
