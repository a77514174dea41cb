// The front door: every HTTP/1.1 connection's first request passes here before Node's HTTP parser sees it.
//
//   TLS handshake ─► ALPN h2? ───────────────────────────────────────────► the site's own HTTP/2 handling
//                    └─ http/1.1 ─► head complete in what arrived? ─ yes ─► authenticate() ─┬─► tunnel path
//                                   │                                    (every path, same  │   and valid: 101,
//                                   │                                     cost)             │   tunnel engine
//                                   │                                                       └─► else: the site
//                                   └─ no: can it still be "GET <tunnel path> "? ─ yes: hold (briefly)
//                                                                                └─ no ─► the site's own HTTP/1.1
//
// authenticate() runs for every complete first head, not only the tunnel path's, so that a wrong password
// costs the server exactly what an unknown path costs: the time to the 404 tells a prober nothing.
//
// Declined connections are handed to the very listener Node installed for the site (the bytes we read are
// pushed back with unshift), so a probe without credentials talks to an ordinary Fastify site, byte for
// byte, with Node's own keep-alive and timeout behaviour. Nothing here ever writes a response of its own
// except the 101 for an accepted tunnel: that is what makes the tunnel path invisible.

import type { Server as NetServer, Socket } from 'node:net';
import { MAX_REQUEST_HEAD_BYTES } from '../core/limits.js';
import { findHeadEnd, parseRequestHead, type RequestHead } from '../protocol/http-head.js';
import { HandoverDeadlines } from './handover-deadlines.js';

/**
 * How long a connection that has sent nothing yet may wait for its first bytes before it is handed to the
 * site unexamined. A tunnel client sends its request in the same flight as its TLS Finished, so it always
 * arrives at once. The site's head deadline still counts from the accept, as a plain server's does
 * (handover-deadlines.ts), so the wait does not show in when an idle connection is closed.
 */
const FIRST_BYTES_WAIT_MS = 3_000;

/**
 * How long we hold a head that starts like a tunnel request before giving it to the site: one deadline from
 * its first byte, however the rest trickles in. A real client writes its whole head at once, so it arrives
 * within a round trip or a retransmission or two. The site's head deadline still counts from the first byte,
 * as a plain server's does (handover-deadlines.ts), so a slow head on the tunnel path closes when it would
 * on a plain site.
 */
const TUNNEL_HEAD_WAIT_MS = 5_000;

export interface FrontDoorOptions<T> {
  /** Exact request target of the tunnel, e.g. "/x7Yq2/connect". */
  readonly tunnelPath: string;
  /**
   * Checks a complete first-request head (null when it did not parse), which arrived on `socket`, and
   * returns who it authenticates, or null. Called for EVERY complete first head, whatever its path, and
   * must cost the same whatever the answer: synchronous, cheap, no logging (see onRefused).
   */
  readonly authenticate: (head: RequestHead | null, socket: Socket) => T | null;
  /**
   * Takes an authenticated request for the tunnel path: writes the 101 and owns the socket from then on;
   * `rest` holds bytes that followed the head.
   */
  readonly accept: (head: RequestHead, socket: Socket, rest: Buffer, identity: T) => void;
  /**
   * A request for the tunnel path that was refused; called after the connection went to the site, before
   * it answers: record, do not work (no parsing, no logging) here.
   */
  readonly onRefused?: (head: RequestHead | null, remoteAddress: string) => void;
  /** Called when accept() throws; the socket is destroyed (it may have seen part of a 101). */
  readonly onError?: (err: unknown) => void;
  /** Wait for the first bytes (default FIRST_BYTES_WAIT_MS); tests shorten it. */
  readonly firstBytesWaitMs?: number;
  /** Overall wait for a head that can still be the tunnel's (default TUNNEL_HEAD_WAIT_MS); tests shorten it. */
  readonly tunnelHeadWaitMs?: number;
  /**
   * Count the site's head and request deadlines of a held connection from when a plain server would have
   * started them (handover-deadlines.ts); default true. Tests turn it off to show what it changes.
   */
  readonly keepPlainDeadlines?: boolean;
}

export interface FrontDoor {
  /**
   * Destroys the connections still waiting here (their first request undecided) and every one that arrives
   * from now on, so a server close does not wait for them. Idempotent.
   */
  close(): void;
}

type ConnectionListener = (this: NetServer, socket: Socket) => void;

/**
 * Installs the front door on a server created by Fastify. `event` is 'secureConnection' for TLS servers
 * (https, http2 with allowHTTP1) and 'connection' for plain HTTP.
 */
export function installFrontDoor<T>(
  server: NetServer,
  event: 'secureConnection' | 'connection',
  options: FrontDoorOptions<T>,
): FrontDoor {
  const siteListeners = server.listeners(event) as ConnectionListener[];
  if (siteListeners.length === 0)
    throw new Error(`front door: the server has no '${event}' listener to wrap`);
  server.removeAllListeners(event);
  const handToSite = (socket: Socket): void => {
    for (const listener of siteListeners) listener.call(server, socket);
    // Node's HTTP listener attaches its 'data' handler without resuming a socket we paused.
    socket.resume();
  };
  const requestLinePrefix = Buffer.from(`GET ${options.tunnelPath} `, 'latin1');
  const waiting = new Set<FirstRequest<T>>();
  const deadlines = options.keepPlainDeadlines === false ? undefined : new HandoverDeadlines(server);
  let closed = false;
  server.on(event, (socket: Socket) => {
    if (closed) {
      socket.destroy();
      return;
    }
    if ((socket as Socket & { alpnProtocol?: string | false }).alpnProtocol === 'h2') {
      handToSite(socket);
      return;
    }
    new FirstRequest(socket, requestLinePrefix, options, handToSite, waiting, deadlines).start();
  });
  return {
    close() {
      closed = true;
      for (const request of waiting) request.abandon();
      deadlines?.close();
    },
  };
}

/** The life of one connection until its first request is decided. */
class FirstRequest<T> {
  private chunks: Buffer[] = [];
  private length = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The overall tunnel-head deadline is running (it is never restarted). */
  private holding = false;
  private decided = false;
  /** process.hrtime.bigint() at the accept (after the TLS handshake) and at the first byte. */
  private acceptedAt = 0n;
  private firstByteAt = 0n;

  constructor(
    private readonly socket: Socket,
    private readonly prefix: Buffer,
    private readonly options: FrontDoorOptions<T>,
    private readonly handToSite: (socket: Socket) => void,
    private readonly waiting: Set<FirstRequest<T>>,
    private readonly deadlines: HandoverDeadlines | undefined,
  ) {}

  start(): void {
    this.acceptedAt = process.hrtime.bigint();
    this.waiting.add(this);
    this.socket.on('data', this.onData);
    this.socket.on('end', this.onEnd);
    this.socket.on('close', this.onGone);
    this.socket.on('error', this.onGone);
    this.timer = setTimeout(this.onTimeout, this.options.firstBytesWaitMs ?? FIRST_BYTES_WAIT_MS);
  }

  /** The server is closing: nobody will decide this connection. */
  abandon(): void {
    if (this.decided) return;
    this.finish();
    this.socket.destroy();
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.length === 0) this.firstByteAt = process.hrtime.bigint();
    this.chunks.push(chunk);
    this.length += chunk.length;
    const buffered = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.length);
    this.chunks = [buffered];
    const headEnd = findHeadEnd(buffered);
    if (headEnd !== -1) {
      this.decide(buffered, headEnd);
      return;
    }
    // Incomplete: hold it only while it can still be "GET <tunnel path> ...".
    const compared = Math.min(buffered.length, this.prefix.length);
    if (
      buffered.compare(this.prefix, 0, compared, 0, compared) !== 0 ||
      buffered.length >= MAX_REQUEST_HEAD_BYTES
    ) {
      this.decline();
      return;
    }
    this.waitMore();
  };

  private decide(buffered: Buffer, headEnd: number): void {
    this.finish();
    const head = parseRequestHead(buffered, headEnd);
    const identity = this.options.authenticate(head, this.socket);
    const forTunnel = head !== null && head.target === this.options.tunnelPath;
    if (forTunnel && identity !== null) {
      try {
        this.options.accept(head, this.socket, buffered.subarray(headEnd), identity);
      } catch (err) {
        this.options.onError?.(err);
        this.socket.destroy();
      }
      return;
    }
    this.giveToSite(buffered);
    // Must stay a few counter bumps: anything more shows up as the refusal's extra latency.
    if (forTunnel) this.options.onRefused?.(head, this.socket.remoteAddress ?? '?');
  }

  private waitMore(): void {
    // One deadline from the first byte: later bytes do not extend it (a drip-fed head would hold forever).
    if (this.holding) return;
    this.holding = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = setTimeout(this.onTimeout, this.options.tunnelHeadWaitMs ?? TUNNEL_HEAD_WAIT_MS);
  }

  private readonly onTimeout = (): void => {
    this.decline();
  };

  /**
   * The peer half-closed before we decided. A plain site sees the bytes so far and then the end, and
   * answers that (Node: 400 to an incomplete head, a quiet close to nothing at all), so the site gets
   * exactly that: the connection, the bytes replayed, the end replayed. (The end cannot be pushed back
   * like bytes can.)
   */
  private readonly onEnd = (): void => {
    if (this.decided) return;
    const buffered = this.chunks.length === 0 ? null : (this.chunks[0] as Buffer);
    this.finish();
    this.chunks = [];
    this.handToSite(this.socket);
    if (buffered !== null && buffered.length > 0) this.socket.emit('data', buffered);
    this.socket.emit('end');
  };

  private readonly onGone = (): void => {
    // The peer left (or broke) before we decided: nothing to hand over.
    if (this.decided) return;
    this.finish();
    if (!this.socket.destroyed) this.socket.destroy();
  };

  private decline(): void {
    if (this.decided) return;
    this.finish();
    this.giveToSite(this.chunks.length === 0 ? null : (this.chunks[0] as Buffer));
  }

  private finish(): void {
    this.decided = true;
    this.waiting.delete(this);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('end', this.onEnd);
    this.socket.removeListener('close', this.onGone);
    this.socket.removeListener('error', this.onGone);
  }

  private giveToSite(buffered: Buffer | null): void {
    this.socket.pause();
    const nothingRead = buffered === null || buffered.length === 0;
    if (!nothingRead) this.socket.unshift(buffered);
    this.chunks = [];
    this.handToSite(this.socket);
    // Node's clock for this connection starts now; a plain server's started at the accept (nothing read) or
    // at the first byte. Bytes that arrived in one go and were decided at once need nothing.
    if (nothingRead) this.deadlines?.track(this.socket, this.acceptedAt, true);
    else if (this.holding) this.deadlines?.track(this.socket, this.firstByteAt, false);
  }
}
