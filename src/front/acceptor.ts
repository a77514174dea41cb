// Decides whether a first-request head is a valid, authenticated tunnel upgrade. Every "no" is silent: the
// front door hands the connection to the site, which answers as it would any unknown path. The check costs
// the same for every head, whatever its path (one SHA-256 and a constant-time compare, also for unknown
// users and missing credentials), so its timing reveals nothing; the slow scrypt ran on the client.
// Refusals are logged in aggregate, once a second, off the path of the answer.

import type { Socket } from 'node:net';
import type { Logger } from '../core/log.js';
import type { TunnelServer } from '../engine/engine.js';
import { parseAuthorization } from '../protocol/credentials.js';
import { headerHasToken, type RequestHead } from '../protocol/http-head.js';
import type { UserRecord, UsersFile } from '../users/users-file.js';
import type { FrontDoorOptions } from './front-door.js';

/** The protocol token we answer with; the client's own token is accepted whatever it is. */
export const UPGRADE_TOKEN = 'facade';

/** How often refused tunnel requests are summarised in the log (a prober cannot flood it line by line). */
const REFUSAL_LOG_INTERVAL_MS = 1_000;

const NO_KEY = Buffer.alloc(32);

export interface TunnelIdentity {
  readonly user: string;
  readonly record: UserRecord;
  /** The client announced `Facade-Capabilities: offload`. */
  readonly offload: boolean;
}

export function createTunnelAcceptor(options: {
  users: UsersFile;
  tunnel: TunnelServer;
  logger: Logger;
}): Omit<FrontDoorOptions<TunnelIdentity>, 'tunnelPath'> & { close(): void } {
  const { users, tunnel, logger } = options;
  const refusals = new RefusalLog(logger);
  return {
    authenticate(head: RequestHead | null): TunnelIdentity | null {
      const headers = head?.headers;
      const credentials = parseAuthorization(headers?.get('authorization'));
      // Verify before looking at anything else, so every head does the same work.
      const record = users.verify(credentials?.user ?? '', credentials?.clientKey ?? NO_KEY);
      const wellFormed =
        head !== null &&
        head.method === 'GET' &&
        head.version === 'HTTP/1.1' &&
        headerHasToken(headers?.get('connection'), 'upgrade') &&
        (headers?.get('upgrade') ?? '') !== '' &&
        headers?.has('transfer-encoding') === false &&
        (headers.get('content-length') ?? '0') === '0';
      if (!wellFormed || credentials === null || record === null) return null;
      const offload = headerHasToken(headers?.get('facade-capabilities'), 'offload');
      return { user: credentials.user, record, offload };
    },
    accept(_head: RequestHead, socket: Socket, rest: Buffer, identity: TunnelIdentity): void {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${UPGRADE_TOKEN}\r\n\r\n`,
      );
      tunnel.attach(
        socket,
        {
          user: identity.user,
          remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
          staticIpv4: identity.record.staticIpv4,
          staticIpv6: identity.record.staticIpv6,
          offload: identity.offload,
        },
        rest,
      );
    },
    onRefused(head: RequestHead | null, remoteAddress: string): void {
      refusals.add(remoteAddress, head?.headers.get('authorization'));
    },
    close(): void {
      refusals.close();
    },
  };
}

/**
 * Counts refused tunnel requests and logs one summary line per interval in which there were any. add()
 * only records (it runs before the refusal is answered); names are decoded when the line is written.
 */
class RefusalLog {
  private count = 0;
  private readonly remotes = new Set<string>();
  private readonly authorizations = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly logger: Logger) {}

  add(remote: string, authorization: string | undefined): void {
    this.count++;
    if (this.remotes.size < 20) this.remotes.add(remote);
    if (authorization !== undefined && this.authorizations.size < 20) this.authorizations.add(authorization);
    this.timer ??= setTimeout(this.flush, REFUSAL_LOG_INTERVAL_MS).unref();
  }

  private readonly flush = (): void => {
    this.timer = undefined;
    if (this.count === 0) return;
    const users = new Set<string>();
    for (const header of this.authorizations) {
      const user = parseAuthorization(header)?.user;
      if (user !== undefined) users.add(user);
    }
    this.logger.info(
      { refused: this.count, remotes: [...this.remotes], users: [...users] },
      'tunnel requests refused (bad or missing credentials); answered as the website',
    );
    this.count = 0;
    this.remotes.clear();
    this.authorizations.clear();
  };

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.flush();
  }
}
