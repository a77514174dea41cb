// Turns a tunnel request (its headers and the binding of the connection it came on) into an identity, or
// null. Transport-neutral: an HTTP/1.1 upgrade head, an HTTP/2 CONNECT stream or a WebSocket handshake all
// hand over their headers and binding the same way.
//
// The check costs the same for every request, whatever it holds: the header is parsed (never throws), the
// user looked up (an unknown one gets a dummy public key), and exactly one Ed25519 verify runs, also for a
// missing or malformed header (on dummy data). So its timing says nothing of whether the user exists or the
// password was right; the slow scrypt ran on the client. Only a valid signature goes on to the cheap time
// and nonce checks, which only a real user's key can reach.
//
// Accepted: a valid signature by a known user's key, over this connection's binding (the TLS exporter, or
// zeros without TLS at facade), a time within AUTH_WINDOW_SECONDS of ours, and a nonce not seen before.
// Then the user's policy: an account past its expiry, or one the owner's `isBlocked` names (over its data
// quota), is refused exactly as a wrong password is (null: the site's own 404). These checks run only
// after the one verify, cost nothing measurable, and only a real user's valid credential reaches them.

import { generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { AUTH_WINDOW_SECONDS, MAX_AUTH_NONCES } from '../core/limits.js';
import {
  BINDING_LENGTH,
  NONCE_LENGTH,
  parseAuthorization,
  signedMessage,
  verifyCredentialSignature,
  ZERO_BINDING,
} from '../protocol/credentials.js';
import { Header, readCapabilities, type TunnelIdentity, type TunnelRequest } from '../protocol/handshake.js';
import { isExpired, NO_POLICY } from './policy.js';
import type { UserRecord } from './users-file.js';

/** Synchronous and constant-cost: see the file comment. */
export type Authenticate = (request: TunnelRequest) => TunnelIdentity | null;

/** The signature check; injectable so tests can count that every request runs exactly one. */
export type VerifySignature = (message: Buffer, publicKey: KeyObject, signature: Buffer) => boolean;

/** What the authenticator needs of the users file. */
export interface UserLookup {
  get(name: string): UserRecord | undefined;
}

export interface AuthenticatorOptions {
  /** Clock in ms (default Date.now); tests move it. */
  readonly now?: () => number;
  /** Default: Ed25519 through node:crypto (verifyCredentialSignature). */
  readonly verify?: VerifySignature;
  /** Nonces remembered at most (default MAX_AUTH_NONCES). */
  readonly maxNonces?: number;
  /** Users refused although their credential is valid (over their data quota); default: none. */
  readonly isBlocked?: (user: string) => boolean;
  /** Counted here: requests with a facade credential, accepted or refused (no names: metrics). */
  readonly counters?: LoginCounters;
}

/** Logins since start: `refused` counts requests that carried a facade credential and were refused. */
export interface LoginCounters {
  accepted: number;
  refused: number;
}

/**
 * The dummy data verified when a header is missing or malformed, or names an unknown user: a real key pair
 * and a real signature (random per process), so the verify does its full work, never an early exit on
 * a malformed input. Nobody holds the private key, and it is dropped here.
 */
const DUMMY = (() => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const nonce = randomBytes(NONCE_LENGTH);
  const message = signedMessage('-'.repeat(8), 0n, nonce, ZERO_BINDING);
  return {
    publicKey,
    message,
    signature: sign(null, message, privateKey),
    // Stands in for a binding of the wrong length (a transport's bug): no client signed it.
    binding: randomBytes(BINDING_LENGTH),
  };
})();

export function createAuthenticator(users: UserLookup, options: AuthenticatorOptions = {}): Authenticate {
  const now = options.now ?? Date.now;
  const verify = options.verify ?? verifyCredentialSignature;
  const nonces = new NonceCache(options.maxNonces ?? MAX_AUTH_NONCES);
  const isBlocked = options.isBlocked ?? (() => false);
  const counters = options.counters;
  return ({ headers, binding }) => {
    const credentials = parseAuthorization(headers.get(Header.AUTHORIZATION));
    const record = credentials === null ? undefined : users.get(credentials.user);
    const bound =
      binding === null ? ZERO_BINDING : binding.length === BINDING_LENGTH ? binding : DUMMY.binding;
    const message =
      credentials === null
        ? DUMMY.message
        : signedMessage(credentials.user, credentials.time, credentials.nonce, bound);
    // Exactly one verify for every request, before anything else decides.
    const valid = verify(message, record?.key ?? DUMMY.publicKey, credentials?.signature ?? DUMMY.signature);
    // A browser's request carries no facade credential: it is not a login, refused or otherwise.
    const refuse = (): null => {
      if (counters !== undefined && credentials !== null) counters.refused++;
      return null;
    };
    if (!valid || credentials === null || record === undefined) return refuse();
    const nowMs = now();
    const nowSeconds = Math.floor(nowMs / 1000);
    const time = Number(credentials.time);
    if (Math.abs(nowSeconds - time) > AUTH_WINDOW_SECONDS) return refuse();
    if (!nonces.take(credentials.nonce, time, nowSeconds)) return refuse();
    if (isExpired(record.policy ?? NO_POLICY, nowMs) || isBlocked(record.name)) return refuse();
    if (counters !== undefined) counters.accepted++;
    return { user: record.name, capabilities: readCapabilities(headers) };
  };
}

/** Width of a nonce cache bucket, by credential time. */
const BUCKET_SECONDS = 30;

/**
 * Nonces of accepted credentials, each kept until its credential's time is out of the window (after that
 * the time check refuses it anyway). Bucketed by that time, so expiry drops whole buckets. Bounded: at
 * `max` a new nonce is refused, never an old one forgotten early (see MAX_AUTH_NONCES).
 */
class NonceCache {
  private readonly buckets = new Map<number, Set<string>>();
  private size = 0;

  constructor(private readonly max: number) {}

  /** True when `nonce` (of a credential made at `time`) was not seen and is now recorded. */
  take(nonce: Buffer, time: number, nowSeconds: number): boolean {
    this.expire(nowSeconds);
    const key = nonce.toString('latin1');
    for (const bucket of this.buckets.values()) if (bucket.has(key)) return false;
    if (this.size >= this.max) return false;
    const index = Math.floor(time / BUCKET_SECONDS);
    let bucket = this.buckets.get(index);
    if (bucket === undefined) {
      bucket = new Set();
      this.buckets.set(index, bucket);
    }
    bucket.add(key);
    this.size++;
    return true;
  }

  private expire(nowSeconds: number): void {
    for (const [index, bucket] of this.buckets) {
      // Every time in this bucket is below its end; past end + window, all are refused by the time check.
      if ((index + 1) * BUCKET_SECONDS + AUTH_WINDOW_SECONDS < nowSeconds) {
        this.size -= bucket.size;
        this.buckets.delete(index);
      }
    }
  }
}
