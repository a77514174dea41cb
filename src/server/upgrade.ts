// Decides whether a tunnel-path request head is a valid, authenticated tunnel upgrade. Every "no" is
// silent: the front door hands the connection to the site, which answers as it would any unknown path.
// The check costs the same for every "no" (one SHA-256 and a constant-time compare, also for unknown
// users and missing credentials), so its timing reveals nothing: the slow scrypt ran on the client.

import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import { parseAuthorization } from '../tunnel/credentials.js';
import type { FrontDoorOptions } from './front-door.js';
import { headerHasToken, type RequestHead } from './request-head.js';
import type { TunnelServer } from './tunnel-server.js';
import type { UsersFile } from './users.js';

/** The protocol token we answer with; the client's own token is accepted whatever it is. */
export const UPGRADE_TOKEN = 'facade';

const NO_KEY = Buffer.alloc(32);

export function createTunnelAcceptor(options: {
  users: UsersFile;
  tunnel: TunnelServer;
  logger: Logger;
}): FrontDoorOptions['accept'] {
  const { users, tunnel, logger } = options;
  return (head: RequestHead, socket: Socket, rest: Buffer): boolean => {
    const headers = head.headers;
    const credentials = parseAuthorization(headers.get('authorization'));
    // Verify before looking at anything else, so every path through here does the same work.
    const record = users.verify(credentials?.user ?? '', credentials?.clientKey ?? NO_KEY);
    const wellFormed =
      head.method === 'GET' &&
      head.version === 'HTTP/1.1' &&
      headerHasToken(headers.get('connection'), 'upgrade') &&
      (headers.get('upgrade') ?? '') !== '' &&
      !headers.has('transfer-encoding') &&
      (headers.get('content-length') ?? '0') === '0';
    const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    if (!wellFormed || credentials === null || record === null) {
      logger.info(
        {
          remote,
          user: credentials?.user,
          reason:
            credentials === null ? 'no credentials' : record === null ? 'bad credentials' : 'not an upgrade',
        },
        'tunnel request refused; answered as the website',
      );
      return false;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${UPGRADE_TOKEN}\r\n\r\n`,
    );
    tunnel.attach(
      socket,
      { user: credentials.user, remote, staticIpv4: record.staticIpv4, staticIpv6: record.staticIpv6 },
      rest,
    );
    return true;
  };
}
