// The credential check (users/authenticator.ts) alone: which requests it accepts, and that it does the same
// work (exactly one signature verify) for every request, whatever it holds. The replay attacks of the v1
// bearer credential are reproduced here at the level of the check; test/unit/client-engine.test.ts does the
// same end to end over TLS.

import assert from 'node:assert/strict';
import { type KeyObject, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { AUTH_WINDOW_SECONDS } from '../../src/core/limits.js';
import {
  createAuthorization,
  encodeAuthorization,
  keyFromSeed,
  publicKeyObject,
  type UserKey,
  verifyCredentialSignature,
} from '../../src/protocol/credentials.js';
import type { TunnelRequest } from '../../src/protocol/handshake.js';
import { createAuthenticator } from '../../src/users/authenticator.js';
import { realmOf, type UserRecord } from '../../src/users/users-file.js';

const T0 = 1_700_000_000_000;

function recordOf(key: UserKey): UserRecord {
  return { name: key.user, publicKey: key.publicKey, key: publicKeyObject(key.publicKey), created: 'x' };
}

function setup(options: { maxNonces?: number } = {}) {
  const alice = keyFromSeed('alice', randomBytes(32));
  const users = new Map([['alice', recordOf(alice)]]);
  let nowMs = T0;
  const verified: Array<{ key: KeyObject; valid: boolean }> = [];
  const authenticate = createAuthenticator(
    { get: (name) => users.get(name) },
    {
      now: () => nowMs,
      verify: (message, key, signature) => {
        const valid = verifyCredentialSignature(message, key, signature);
        verified.push({ key, valid });
        return valid;
      },
      ...(options.maxNonces === undefined ? {} : { maxNonces: options.maxNonces }),
    },
  );
  /** Authenticates `authorization` (undefined: no header) on a connection with `binding`; counts verifies. */
  const check = (authorization: string | undefined, binding: Buffer | null) => {
    const before = verified.length;
    const request: TunnelRequest = {
      target: '/t',
      headers: { get: (name) => (name === 'authorization' ? authorization : undefined) },
      binding,
    };
    const identity = authenticate(request);
    return { user: identity?.user ?? null, verifies: verified.length - before };
  };
  return {
    alice,
    check,
    setNow: (ms: number) => {
      nowMs = ms;
    },
  };
}

test('accepts a fresh credential signed by the user over this connection binding', () => {
  const { alice, check } = setup();
  const binding = randomBytes(32);
  assert.deepEqual(check(createAuthorization(alice, binding, { nowMs: T0 }), binding), {
    user: 'alice',
    verifies: 1,
  });
  // Without TLS at facade: the zero binding.
  assert.deepEqual(check(createAuthorization(alice, null, { nowMs: T0 }), null), {
    user: 'alice',
    verifies: 1,
  });
});

test('replay over TLS: a credential made for connection A opens nothing on connection B, even at once', () => {
  const { alice, check } = setup();
  const connectionA = randomBytes(32);
  const connectionB = randomBytes(32);
  // What a server posing as facade captures: made for its own connection (its exporter), never used.
  const captured = createAuthorization(alice, connectionA, { nowMs: T0 });
  assert.deepEqual(check(captured, connectionB), { user: null, verifies: 1 });
  // Nor without a binding (a plaintext or proxied listener), nor with the zero binding claimed over TLS.
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 }), connectionB).user, null);
  assert.equal(check(captured, null).user, null);
});

test('replay without TLS binding: the same credential twice is refused the second time (nonce)', () => {
  const { alice, check } = setup();
  const header = createAuthorization(alice, null, { nowMs: T0 });
  assert.equal(check(header, null).user, 'alice');
  assert.deepEqual(check(header, null), { user: null, verifies: 1 });
  assert.equal(check(header, null).user, null);
  // A fresh credential (new nonce) is fine.
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 }), null).user, 'alice');
});

test('replay without TLS binding: older or further ahead than the window is refused', () => {
  const { alice, check, setNow } = setup();
  const window = AUTH_WINDOW_SECONDS * 1000;
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 - window - 1000 }), null).user, null);
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 + window + 1000 }), null).user, null);
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 - window }), null).user, 'alice');
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 + window }), null).user, 'alice');
  // A captured, never used credential is worth nothing once the window has passed.
  const captured = createAuthorization(alice, null, { nowMs: T0 });
  setNow(T0 + window + 1000);
  assert.deepEqual(check(captured, null), { user: null, verifies: 1 });
});

test('a nonce is remembered as long as its time is in the window; the cache is bounded and refuses at the cap', () => {
  const { alice, check, setNow } = setup({ maxNonces: 3 });
  const headers = [0, 1, 2].map(() => createAuthorization(alice, null, { nowMs: T0 }));
  for (const header of headers) assert.equal(check(header, null).user, 'alice');
  // Full: a fourth, valid, fresh credential is refused rather than an old nonce forgotten.
  assert.equal(check(createAuthorization(alice, null, { nowMs: T0 }), null).user, null);
  // Until the window is over, the replays stay refused.
  setNow(T0 + AUTH_WINDOW_SECONDS * 1000);
  for (const header of headers) assert.equal(check(header, null).user, null);
  // Once the old credentials are out of the window their nonces expire, and room is free again.
  setNow(T0 + (2 * AUTH_WINDOW_SECONDS + 60) * 1000);
  for (const n of [0, 1, 2])
    assert.equal(
      check(createAuthorization(alice, null, { nowMs: T0 + (2 * AUTH_WINDOW_SECONDS + 60) * 1000 }), null)
        .user,
      'alice',
      String(n),
    );
});

test('same work for every request: exactly one verify, and all refused', () => {
  const { alice, check } = setup();
  const binding = randomBytes(32);
  const wrongPassword = keyFromSeed('alice', randomBytes(32));
  const unknownUser = keyFromSeed('bobby', randomBytes(32));
  const good = { time: BigInt(T0 / 1000), nonce: randomBytes(16), signature: randomBytes(64) };
  const basic = (text: string) => `Basic ${Buffer.from(text, 'latin1').toString('base64')}`;
  const cases: Array<[string, string | undefined]> = [
    ['wrong password', createAuthorization(wrongPassword, binding, { nowMs: T0 })],
    ['unknown user', createAuthorization(unknownUser, binding, { nowMs: T0 })],
    [
      'unknown user, prototype name',
      createAuthorization(keyFromSeed('__proto__', randomBytes(32)), binding, { nowMs: T0 }),
    ],
    ['missing header', undefined],
    ['empty header', ''],
    ['another scheme', 'Bearer abc'],
    ['not base64', 'Basic !!!'],
    ['no colon', basic('alice')],
    ['garbage signature', encodeAuthorization('alice', good)],
    [
      'all-ones signature (not canonical)',
      encodeAuthorization('alice', { ...good, signature: Buffer.alloc(64, 0xff) }),
    ],
    ['short token', basic(`alice:${randomBytes(40).toString('base64url')}`)],
    ['v1 client key', basic(`alice:${randomBytes(32).toString('base64url')}`)],
    ['version 1 token', encodeAuthorization('alice', { ...good, version: 1 })],
    ['another connection', createAuthorization(alice, randomBytes(32), { nowMs: T0 })],
    ['stale', createAuthorization(alice, binding, { nowMs: T0 - 3_600_000 })],
  ];
  for (const [label, header] of cases)
    assert.deepEqual(check(header, binding), { user: null, verifies: 1 }, label);
  // The accepted one costs the same single verify.
  assert.deepEqual(check(createAuthorization(alice, binding, { nowMs: T0 }), binding), {
    user: 'alice',
    verifies: 1,
  });
});

test('the users file realm is the hex SHA-256 of the tunnel path', () => {
  assert.equal(realmOf('/k2b9x7/connect').length, 64);
  assert.notEqual(realmOf('/k2b9x7/connect'), realmOf('/k2b9x7/connecT'));
});
