// The HTTP/1.1 upgrade transport: decides whether a first-request head is a valid, authenticated tunnel
// upgrade, and if so answers 101 and hands the stream to the tunnel host. Every "no" is silent: the front
// door gives the connection to the site, which answers as it would any unknown path. Refusals are logged
// in aggregate, once a second, off the path of the answer.
//
// Nothing here knows the engine or the users file: authentication is a function of the headers and the
// connection's binding, its TLS exporter (users/authenticator.ts), and the host is anything that attaches
// a Duplex with an identity. Another transport (an HTTP/2 stream, a WebSocket) is another file like this
// one, using the same two ports.

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/log.js';
import { authorizationUser, BINDING_LENGTH, connectionBinding } from '../protocol/credentials.js';
import {
  isUpgradeRequest,
  type TransportName,
  type TunnelIdentity,
  type TunnelRequest,
  UPGRADE_RESPONSE,
  upgradeTransport,
} from '../protocol/handshake.js';
import type { RequestHead } from '../protocol/http-head.js';
import type { FrontDoorOptions } from './front-door.js';
import { acceptWebSocket } from './websocket.js';

/** How long refused tunnel requests are gathered into one log line (a prober cannot flood it). */
const REFUSAL_LOG_INTERVAL_MS = 1_000;

/** What authenticate() sees of a head that did not parse: no target, no headers; it does the same work. */
const UNPARSED_HEADERS = { get: () => undefined };

/**
 * The binding of the connection a head came on: its TLS exporter, or null without TLS here. Computed for
 * every head (the same work for each). Should the exporter fail (the connection broke under us), a random
 * value: it matches nothing a client signed, and unlike null it cannot stand for "no TLS".
 */
function bindingOf(socket: Socket): Buffer | null {
  try {
    return connectionBinding(socket);
  } catch {
    return randomBytes(BINDING_LENGTH);
  }
}

/** Where an accepted stream goes: the tunnel engine, or whatever the composition root puts there. */
export interface TunnelHost {
  /**
   * Takes an authenticated stream whose handshake is complete. `initialBytes` arrived with the handshake
   * and start the frame stream.
   */
  attach(stream: Duplex, identity: TunnelIdentity, initialBytes: Buffer, meta: AttachMeta): void;
}

export interface AttachMeta {
  /** Where the stream came from, for logs and status: "address:port". */
  readonly remote: string;
  readonly transport: TransportName;
}

export function createUpgradeAcceptor(options: {
  authenticate: (request: TunnelRequest) => TunnelIdentity | null;
  host: TunnelHost;
  logger: Logger;
  /** Connections come from a reverse proxy: the client's address is the last X-Forwarded-For entry. */
  behindProxy?: boolean | undefined;
}): Omit<FrontDoorOptions<TunnelIdentity>, 'tunnelPath'> & {
  /** A refusal another transport saw (h2-connect.ts), for the same aggregate log line. */
  recordRefusal(authorization: string | undefined, remoteAddress: string): void;
  close(): void;
} {
  const { authenticate, host, logger } = options;
  const remoteOf = (head: RequestHead, socket: Socket): string => {
    const direct = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    if (options.behindProxy !== true) return direct;
    const forwarded = head.headers.get('x-forwarded-for')?.split(',').pop()?.trim();
    return forwarded === undefined || forwarded === '' ? direct : `${forwarded} (via ${direct})`;
  };
  const refusals = new RefusalLog(logger);
  return {
    authenticate(head: RequestHead | null, socket: Socket): TunnelIdentity | null {
      // Credentials first, for every head, so every head does the same work.
      const binding = bindingOf(socket);
      const identity = authenticate(
        head === null
          ? { target: '', headers: UNPARSED_HEADERS, binding }
          : { target: head.target, headers: head.headers, binding },
      );
      return head !== null && isUpgradeRequest(head) && upgradeTransport(head.headers) !== null
        ? identity
        : null;
    },
    accept(head: RequestHead, socket: Socket, rest: Buffer, identity: TunnelIdentity): void {
      socket.setNoDelay(true);
      const remote = remoteOf(head, socket);
      if (upgradeTransport(head.headers) === 'websocket') {
        acceptWebSocket(head, socket, rest, identity, host, remote);
        return;
      }
      socket.write(UPGRADE_RESPONSE);
      host.attach(socket, identity, rest, { remote, transport: 'upgrade' });
    },
    onRefused(head: RequestHead | null, remoteAddress: string): void {
      refusals.add(remoteAddress, head?.headers.get('authorization'));
    },
    recordRefusal(authorization: string | undefined, remoteAddress: string): void {
      refusals.add(remoteAddress, authorization);
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
      // Any version: an operator sees who still runs an old client.
      const user = authorizationUser(header);
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
