// Turns a tunnel request's headers into an identity, or null. Transport-neutral: an HTTP/1.1 upgrade head,
// an HTTP/2 CONNECT stream or a WebSocket handshake all hand over their headers the same way.
//
// The check costs the same for every request, whatever it holds (one SHA-256 and a constant-time compare,
// also for unknown users and missing or malformed credentials), so its timing reveals nothing; the slow
// scrypt ran on the client.

import { parseAuthorization } from '../protocol/credentials.js';
import { Header, readCapabilities, type TunnelIdentity, type TunnelRequest } from '../protocol/handshake.js';
import type { UsersFile } from './users-file.js';

/** Synchronous and constant-cost: see the file comment. */
export type Authenticate = (request: TunnelRequest) => TunnelIdentity | null;

const NO_KEY = Buffer.alloc(32);

export function createAuthenticator(users: UsersFile): Authenticate {
  return ({ headers }) => {
    const credentials = parseAuthorization(headers.get(Header.AUTHORIZATION));
    // Verify before looking at anything else, so every request does the same work.
    const record = users.verify(credentials?.user ?? '', credentials?.clientKey ?? NO_KEY);
    if (credentials === null || record === null) return null;
    return { user: record.name, capabilities: readCapabilities(headers) };
  };
}
