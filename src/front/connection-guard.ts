// The website's connection guard: limits on open connections, in total and per source address, one overall
// deadline for the TLS handshake, and a close() that does not wait for connections nobody is serving yet.
//
//   accept ─► closing, or over the limit (total, or this address)? ─ yes ─► destroyed at once (no answer)
//             └─ no ─► counted against its address ─► TLS handshake, at most handshakeTimeoutMs from accept
//                      (whatever the socket does meanwhile) ─► 'secureConnection' (front door, site)
//
// Over a limit the connection is closed without a byte, as Node itself closes connections beyond
// `server.maxConnections`: what an overloaded plain Node site does. Accepted tunnels are released from both
// limits: the address pool bounds them, and a full house of VPN users must not lock the website out.
//
// Node's own TLS handshakeTimeout is an idle timer (each byte restarts it) and only emits 'tlsClientError';
// the deadline here is absolute and destroys the TCP connection underneath, whatever state TLS is in.
//
// The guard wraps the server's 'connection' listeners when the server starts listening, so that it sits in
// front of everything installed by then (Node's TLS listener, or the front door on a plaintext server), and
// its 'secureConnection' hook runs before the front door's.

import type { Server as NetServer, Socket } from 'node:net';
import { isIPv4, isIPv6 } from 'node:net';

export interface ConnectionLimits {
  /** Open website connections in total (accepted tunnels not counted: the address pool bounds those). */
  readonly maxConnections: number;
  /** Open connections per source address (IPv6: per /64) that are not released tunnels. */
  readonly maxConnectionsPerAddress: number;
  /** TLS servers: time from accept to a finished handshake, after which the connection is destroyed. */
  readonly handshakeTimeoutMs: number;
  /** close(): how long connections the site is serving get to finish before they are destroyed. */
  readonly closeGraceMs: number;
}

type ConnectionListener = (this: NetServer, socket: Socket) => void;

interface Connection {
  readonly raw: Socket;
  /** Address key it counts against; undefined once released (an accepted tunnel). */
  key: string | undefined;
  /** Pending handshake deadline; undefined once the handshake finished (or on plaintext servers). */
  handshakeTimer: NodeJS.Timeout | undefined;
}

export class ConnectionGuard {
  private readonly perAddress = new Map<string, number>();
  /** Connections that count against the total: open and not released. */
  private counted = 0;
  private readonly open = new Set<Connection>();
  /** Raw TCP socket (or the socket itself on plaintext servers) and TLS socket -> its record. */
  private readonly bySocket = new WeakMap<Socket, Connection>();
  private closing = false;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(private readonly limits: ConnectionLimits) {}

  /** Connections open now (accepted and not yet closed). */
  get size(): number {
    return this.open.size;
  }

  /** Counts per address key, for tests and status: never holds an address with no open connection. */
  get addresses(): number {
    return this.perAddress.size;
  }

  /** `secure`: the server is a TLS server ('connection' gives the raw TCP socket, 'secureConnection' follows). */
  install(server: NetServer, secure: boolean): void {
    server.once('listening', () => {
      const inner = server.listeners('connection') as ConnectionListener[];
      for (const listener of inner) server.removeListener('connection', listener);
      server.on('connection', (socket: Socket) => {
        if (!this.admit(socket, secure)) return;
        for (const listener of inner) listener.call(server, socket);
      });
      if (secure) server.prependListener('secureConnection', this.onSecure);
    });
  }

  /**
   * The connection (TLS socket, or the plain socket) left the website for good (an accepted tunnel): it
   * stops counting against its address and the total. close() still ends it.
   */
  release(socket: Socket): void {
    const connection = this.bySocket.get(socket);
    if (connection === undefined || connection.key === undefined) return;
    this.uncount(connection.key);
    connection.key = undefined;
  }

  /**
   * Stops admitting connections and destroys those still in their TLS handshake; connections already
   * served get closeGraceMs to finish, then are destroyed too. Idempotent.
   */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    for (const connection of this.open) {
      if (connection.handshakeTimer !== undefined) connection.raw.destroy();
    }
    if (this.open.size === 0) return;
    this.graceTimer = setTimeout(() => {
      for (const connection of this.open) connection.raw.destroy();
    }, this.limits.closeGraceMs);
    this.graceTimer.unref();
  }

  private admit(raw: Socket, secure: boolean): boolean {
    const key = this.closing ? undefined : addressKey(raw.remoteAddress);
    const count = key === undefined ? Number.POSITIVE_INFINITY : (this.perAddress.get(key) ?? 0);
    if (
      key === undefined ||
      count >= this.limits.maxConnectionsPerAddress ||
      this.counted >= this.limits.maxConnections
    ) {
      raw.destroy();
      return false;
    }
    this.perAddress.set(key, count + 1);
    this.counted++;
    const connection: Connection = { raw, key, handshakeTimer: undefined };
    if (secure && this.limits.handshakeTimeoutMs > 0) {
      connection.handshakeTimer = setTimeout(() => raw.destroy(), this.limits.handshakeTimeoutMs);
    }
    this.open.add(connection);
    this.bySocket.set(raw, connection);
    raw.once('close', () => this.forget(connection));
    return true;
  }

  /** First 'secureConnection' listener: the handshake finished in time. */
  private readonly onSecure = (socket: Socket): void => {
    // A server-side TLSSocket keeps the TCP socket it wraps as _parent (Node since 0.11).
    const raw = (socket as Socket & { _parent?: unknown })._parent;
    const connection = raw === undefined ? undefined : this.bySocket.get(raw as Socket);
    if (connection === undefined) return;
    if (connection.handshakeTimer !== undefined) clearTimeout(connection.handshakeTimer);
    connection.handshakeTimer = undefined;
    this.bySocket.set(socket, connection);
  };

  private forget(connection: Connection): void {
    if (connection.handshakeTimer !== undefined) clearTimeout(connection.handshakeTimer);
    connection.handshakeTimer = undefined;
    if (connection.key !== undefined) this.uncount(connection.key);
    connection.key = undefined;
    this.open.delete(connection);
    if (this.open.size === 0 && this.graceTimer !== undefined) {
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
    }
  }

  private uncount(key: string): void {
    this.counted--;
    const count = (this.perAddress.get(key) ?? 1) - 1;
    if (count <= 0) this.perAddress.delete(key);
    else this.perAddress.set(key, count);
  }
}

/**
 * What a connection counts against: an IPv4 address (IPv4-mapped IPv6 included) as is, an IPv6 address by
 * its /64 (a single host or household gets a whole /64, so per /128 would be no limit). undefined when the
 * address is unknown (the socket is already gone).
 */
export function addressKey(address: string | undefined): string | undefined {
  if (address === undefined || address === '') return undefined;
  const bare = address.split('%', 1)[0] as string;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped !== null) return mapped[1];
  if (isIPv4(bare)) return bare;
  if (!isIPv6(bare)) return bare;
  const groups = expandIpv6(bare);
  return `${groups.slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address, as lowercase hex without leading zeros. */
function expandIpv6(address: string): string[] {
  let text = address.toLowerCase();
  // A trailing dotted IPv4 part becomes two groups.
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::', 2) as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : new Array(8 - headGroups.length - tailGroups.length).fill('0');
  return [...headGroups, ...zeros, ...tailGroups].map((group) => Number.parseInt(group, 16).toString(16));
}
