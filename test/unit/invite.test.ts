// Invite links (protocol/invite.ts): what goes in comes out, and every malformed link is refused with the
// reason, never echoing the key.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFacadeError } from '../../src/core/errors.js';
import { formatInvite, type Invite, inviteServerUrl, parseInvite } from '../../src/protocol/invite.js';

const SEED = Buffer.alloc(32, 7);
const PIN = `sha256:${'ab'.repeat(32)}`;
const invite: Invite = {
  user: 'alice',
  seed: SEED,
  host: 'vpn.example.com',
  port: 443,
  tunnelPath: '/k3y9a/tunnel',
  pin: PIN,
};

test('a link carries user, key, host, port, path and pin, and reads back the same', () => {
  const link = formatInvite(invite);
  assert.equal(
    link,
    `facade://alice:${SEED.toString('base64url')}@vpn.example.com:443/k3y9a/tunnel?pin=${PIN}`,
  );
  assert.deepEqual(parseInvite(link), invite);
  assert.equal(inviteServerUrl(parseInvite(link)).href, 'https://vpn.example.com/k3y9a/tunnel');
});

test('system CAs, an IPv6 host, a user name with @ and a path with odd but allowed characters', () => {
  const odd: Invite = {
    user: 'bob@home',
    seed: SEED,
    host: '2001:db8::7',
    port: 8443,
    tunnelPath: "/a~b!$&'()*+,;=:@x/-_.y",
    pin: undefined,
  };
  const link = formatInvite(odd);
  assert.match(link, /^facade:\/\/bob%40home:[A-Za-z0-9_-]{43}@\[2001:db8::7\]:8443\/.*\?ca=system$/);
  assert.deepEqual(parseInvite(link), odd);
  assert.equal(inviteServerUrl(odd).host, '[2001:db8::7]:8443');
  // What surrounds a pasted link (spaces, a newline) does not matter.
  assert.deepEqual(parseInvite(`  ${link}\n`), odd);
});

test('a path the URL parser would rewrite is refused when the link is made', () => {
  assert.throws(
    () => formatInvite({ ...invite, tunnelPath: '/a/../b' }),
    (err) => isFacadeError(err, 'INVITE_UNAVAILABLE') && /does not survive/.test(err.message),
  );
});

test('malformed links are refused with the reason, and the key is never in the message', () => {
  const key = SEED.toString('base64url');
  const good = formatInvite(invite);
  const cases: [string, RegExp][] = [
    [`https://alice:${key}@h:443/p?ca=system`, /must start with facade:\/\//],
    [`facade://${key}@h:443/p?ca=system`, /carries no key|names no user/],
    [`facade://alice@h:443/p?ca=system`, /carries no key/],
    [`facade://alice:short@h:443/p?ca=system`, /32 bytes in base64url/],
    [`facade://alice:${key}@h/p?ca=system`, /names no port/],
    [`facade://alice:${key}@h:443?ca=system`, /no tunnel path/],
    [`facade://alice:${key}@h:443/p`, /either pin=sha256:HEX or ca=system/],
    [`facade://alice:${key}@h:443/p?ca=system&pin=${PIN}`, /either pin=sha256:HEX or ca=system/],
    [`facade://alice:${key}@h:443/p?ca=system&full=1`, /unexpected parameter "full=1"/],
    [`facade://alice:${key}@h:443/p?pin=sha256:00`, /64/],
    [`${good}#x`, /fragment/],
    [`facade://al ice:${key}@h:443/p?ca=system`, /does not parse|not allowed/],
    [`facade://alice:${key}@under_score:443/p?ca=system`, /neither a DNS name nor an IP address/],
  ];
  for (const [link, reason] of cases) {
    assert.throws(
      () => parseInvite(link),
      (err) => {
        assert.ok(isFacadeError(err, 'INVITE_INVALID'), `${link}: ${String(err)}`);
        assert.match(err.message, reason, link);
        assert.ok(!err.message.includes(key), `the message of ${link} holds the key`);
        return true;
      },
    );
  }
});
