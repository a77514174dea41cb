// The site's request-head deadline, counted for a connection the front door held as a plain server would
// have counted it.
//
// Node's http.Server gives a client headersTimeout to send a request head, counted from when its parser met
// the connection (a connection that sends nothing) or the first byte of the request, and checks every
// connectionsCheckingInterval (30 s): a late head is answered 408 (client-error.ts) at the first check after
// its deadline. The front door holds some connections before the site's parser meets them: one that has
// sent nothing (up to 3 s) and a head that can still be the tunnel's (up to 5 s from its first byte). Node's
// clock then starts at the handover, so such a connection would close at the first check after
// handover + 60 s instead of accept + 60 s: in 63-93 s instead of 60-90 s for an idle connection. Any close
// after 90 s would tell facade from a plain Node site, and one who knows the checks' phase could aim for it.
//
// So the front door tells this module when the plain server's clock would have started, and at each of
// Node's checks (an interval started right after Node's own, so both share one timer list and fire in the
// same turn, Node's first) this module expires the held connections a plain server would expire then, the
// way Node does: 'clientError' with ERR_HTTP_REQUEST_TIMEOUT. Node's own check still runs and finds nothing
// more to do (it would expire them later still). A connection stops being followed once the clocks agree again:
// bytes arrive after an idle handover (both restart at the new message's first byte), its request's head
// and body are complete, or it closes. The rule itself is Node's (src/node_http_parser.cc,
// ConnectionsList::Expired): expired when the head is incomplete and it started before now - headersTimeout,
// or the request is incomplete and it started before now - requestTimeout.

import type { IncomingMessage } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import { requestTimeoutError } from './client-error.js';

/** The timeouts Node's http.Server and Http2SecureServer (allowHTTP1) read at each check. */
interface NodeHttpTimeouts {
  headersTimeout?: number;
  requestTimeout?: number;
  connectionsCheckingInterval?: number;
}

/** Node's own default, for a server that does not say. */
const DEFAULT_CHECKING_INTERVAL_MS = 30_000;

interface HeldConnection {
  readonly socket: Socket;
  /** process.hrtime.bigint() at which a plain server's clock for this request would have started. */
  readonly since: bigint;
  /**
   * socket.bytesRead at the handover when nothing had been read (the idle case), else undefined: a plain
   * server restarts its clock at the first byte of a request, and so does Node's once bytes arrive.
   */
  readonly bytesAtHandover: number | undefined;
  /** The request the site got on this connection, once its head was complete. */
  request: IncomingMessage | undefined;
}

export class HandoverDeadlines {
  readonly #server: NetServer & NodeHttpTimeouts;
  readonly #held = new Map<Socket, HeldConnection>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  /** Follows `server`'s checks from its next 'listening' (install before listen(), as the front door is). */
  constructor(server: NetServer) {
    this.#server = server as NetServer & NodeHttpTimeouts;
    // Registered after Node's own 'listening' listener (added when the server was created), so this
    // interval is created right after Node's, with the same period: the same timer list, fired in order.
    server.on('listening', this.#start);
    server.on('close', this.#stop);
    server.on('request', this.#onRequest);
    if (server.listening) this.#start();
  }

  /**
   * The site got `socket` now, but a plain server would have started its clock at `since`
   * (process.hrtime.bigint()); `nothingRead`: no byte of a request had arrived yet.
   */
  track(socket: Socket, since: bigint, nothingRead: boolean): void {
    if (this.#closed || socket.destroyed) return;
    this.#held.set(socket, {
      socket,
      since,
      bytesAtHandover: nothingRead ? socket.bytesRead : undefined,
      request: undefined,
    });
    socket.once('close', () => this.#held.delete(socket));
  }

  /** Stops following connections; they keep Node's own deadlines. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#stop();
    this.#held.clear();
    this.#server.off('listening', this.#start);
    this.#server.off('close', this.#stop);
    this.#server.off('request', this.#onRequest);
  }

  /** Connections followed now (tests). */
  get size(): number {
    return this.#held.size;
  }

  readonly #start = (): void => {
    if (this.#closed) return;
    this.#stop();
    const period = this.#server.connectionsCheckingInterval ?? DEFAULT_CHECKING_INTERVAL_MS;
    this.#timer = setInterval(this.#check, period).unref();
  };

  readonly #stop = (): void => {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  };

  readonly #onRequest = (request: IncomingMessage): void => {
    const held = this.#held.get(request.socket);
    if (held !== undefined) held.request = request;
  };

  readonly #check = (): void => {
    if (this.#held.size === 0) return;
    let headersTimeout = this.#server.headersTimeout ?? 0;
    let requestTimeout = this.#server.requestTimeout ?? 0;
    if (headersTimeout === 0 && requestTimeout === 0) return;
    // Node's own rule: the shorter of the two counts as the head's deadline.
    if (requestTimeout > 0 && headersTimeout > requestTimeout)
      [headersTimeout, requestTimeout] = [requestTimeout, headersTimeout];
    const now = process.hrtime.bigint();
    const headersNs = BigInt(headersTimeout) * 1_000_000n;
    const requestNs = BigInt(requestTimeout) * 1_000_000n;
    const headersDeadline = headersTimeout > 0 && now > headersNs ? now - headersNs : 0n;
    const requestDeadline = requestTimeout > 0 && now > requestNs ? now - requestNs : 0n;
    for (const held of [...this.#held.values()]) {
      const { socket, request } = held;
      const restarted = held.bytesAtHandover !== undefined && socket.bytesRead > held.bytesAtHandover;
      if (socket.destroyed || restarted || request?.complete === true) {
        this.#held.delete(socket);
        continue;
      }
      const headExpired = request === undefined && headersDeadline > 0n && held.since < headersDeadline;
      const requestExpired = requestDeadline > 0n && held.since < requestDeadline;
      if (headExpired || requestExpired) {
        this.#held.delete(socket);
        this.#server.emit('clientError', requestTimeoutError(), socket);
      }
    }
  };
}
