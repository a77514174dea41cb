// Tunnel credentials, shared by client and server.
//
// The password never crosses the wire and the server never runs a slow hash per request:
//
//   client:  clientKey = HMAC-SHA256(key = scrypt(password, "facade/v1/" + user), "facade client key")
//            Authorization: Basic base64(user ":" base64url(clientKey))
//   server:  stores storedKey = SHA-256(clientKey); checks SHA-256(presented) == storedKey in constant time
//
// The server's check is one SHA-256, so a wrong password costs the same as any unknown path (probe
// resistance: the expensive scrypt is paid by the client, once per connect, not by the server per probe).
// A stolen users file is not a login: SHA-256 is not invertible, so the thief still has to guess passwords
// through scrypt. The clientKey itself is password-equivalent and lives only in client memory and inside
// TLS; it is derived from the user name, so the same password gives different keys for different users.

import { createHash, createHmac, scrypt } from 'node:crypto';
import { facadeError } from '../core/errors.js';

/**
 * scrypt cost parameters. N = 2^15, r = 8 needs 128 * N * r = 32 MiB and ~0.1-0.3 s of one core: costly
 * for an offline guesser, paid once per connect by a client. These are part of the protocol (changing
 * them changes every clientKey), hence the "v1" in the salt.
 */
export const SCRYPT_N = 2 ** 15;
export const SCRYPT_R = 8;
export const SCRYPT_P = 1;
/** Node refuses scrypt above 32 MiB by default; N and r above need exactly 32 MiB plus bookkeeping. */
export const SCRYPT_MAXMEM = 64 * 1024 * 1024;
/** Length of the scrypt output and of the clientKey (one SHA-256 block of key material). */
export const CLIENT_KEY_LENGTH = 32;
/** Salt prefix: versioned so a future parameter change cannot collide with v1 keys. */
export const SCRYPT_SALT_PREFIX = 'facade/v1/';
/** HMAC message turning the scrypt output into the clientKey (domain separation). */
export const CLIENT_KEY_LABEL = 'facade client key';

/** User names: what fits in a URL, a log line and a file name without quoting; see validateUserName. */
export const MAX_USER_NAME_LENGTH = 64;
const USER_NAME_PATTERN = /^[A-Za-z0-9._@-]+$/;

/**
 * Longest password accepted. scrypt accepts any length, but a megabyte "password" is a mistake (a wrong
 * file given to --password-file), not a secret; refuse it instead of hashing it.
 */
export const MAX_PASSWORD_BYTES = 1024;

/** base64url of 32 bytes without padding. */
const ENCODED_KEY_LENGTH = Math.ceil((CLIENT_KEY_LENGTH * 4) / 3);
/** Longest Authorization value a valid client can send; anything longer is rejected before decoding. */
export const MAX_AUTHORIZATION_LENGTH =
  'Basic '.length + 4 * Math.ceil((MAX_USER_NAME_LENGTH + 1 + ENCODED_KEY_LENGTH) / 3) + 8;

const BASIC_PATTERN = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i;
const ENCODED_KEY_PATTERN = /^[A-Za-z0-9_-]+$/;

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

function scryptAsync(password: string, salt: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password,
      salt,
      CLIENT_KEY_LENGTH,
      { N: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P, maxmem: SCRYPT_MAXMEM },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** The client's proof of the password (slow: one scrypt). Validates the name and password first. */
export async function deriveClientKey(user: string, password: string): Promise<Buffer> {
  validateUserName(user);
  validatePassword(user, password);
  const stretched = await scryptAsync(password, SCRYPT_SALT_PREFIX + user);
  return createHmac('sha256', stretched).update(CLIENT_KEY_LABEL).digest();
}

/** What the server keeps: SHA-256(clientKey). Cheap, so the server can afford it for every request. */
export function computeStoredKey(clientKey: Buffer): Buffer {
  return createHash('sha256').update(clientKey).digest();
}

/** `Basic base64(user ":" base64url(clientKey))`, the value of the client's Authorization header. */
export function encodeAuthorization(user: string, clientKey: Buffer): string {
  validateUserName(user);
  if (clientKey.length !== CLIENT_KEY_LENGTH)
    throw new RangeError(`clientKey must be ${CLIENT_KEY_LENGTH} bytes, got ${clientKey.length}`);
  const credentials = `${user}:${clientKey.toString('base64url')}`;
  return `Basic ${Buffer.from(credentials, 'utf8').toString('base64')}`;
}

/**
 * The user and clientKey in an Authorization header, or null for anything else: missing, too long, another
 * scheme, invalid base64, no colon, an invalid user name, a key that is not 32 bytes. Never throws, so
 * the server can treat every malformed header exactly like a wrong password.
 */
export function parseAuthorization(
  headerValue: string | undefined,
): { user: string; clientKey: Buffer } | null {
  if (typeof headerValue !== 'string' || headerValue.length > MAX_AUTHORIZATION_LENGTH) return null;
  const match = BASIC_PATTERN.exec(headerValue);
  const encoded = match?.[1];
  if (encoded === undefined || encoded.length % 4 !== 0) return null;
  const decoded = Buffer.from(encoded, 'base64');
  // Buffer.from skips what it cannot decode; a round trip proves the input was canonical base64.
  if (decoded.toString('base64') !== encoded) return null;
  const credentials = decoded.toString('latin1');
  const colon = credentials.indexOf(':');
  if (colon === -1) return null;
  const user = credentials.slice(0, colon);
  const encodedKey = credentials.slice(colon + 1);
  if (userNameProblem(user) !== null) return null;
  if (encodedKey.length !== ENCODED_KEY_LENGTH || !ENCODED_KEY_PATTERN.test(encodedKey)) return null;
  const clientKey = Buffer.from(encodedKey, 'base64url');
  if (clientKey.length !== CLIENT_KEY_LENGTH || clientKey.toString('base64url') !== encodedKey) return null;
  return { user, clientKey };
}
