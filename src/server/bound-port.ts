// A port bound now and served later: the server binds 443 and 80 while it is still root (ports below 1024
// need it) and serves them only after it has dropped root (privileges.ts), so no request, TLS handshake or
// ACME challenge is ever handled by a root process.
//
// Node cannot bind a TCP socket without listening on it, so the socket listens from the start, held by a
// placeholder server that reads nothing: a connection that arrives while the server is still starting is
// reset at once (as a closed port would refuse it), before a single byte of it is read. handOver() gives
// the socket to the real server (`server.listen({ handle })`), which takes it over as if it had bound it.

import { createServer, type Server, type Socket } from 'node:net';

export class BoundPort {
  readonly #holder: Server;
  /** The port bound (the one asked for, or the free one picked for 0). */
  readonly port: number;
  #handle: unknown;
  #closing: Promise<void> | undefined;

  private constructor(holder: Server) {
    this.#holder = holder;
    this.#handle = (holder as unknown as { _handle: unknown })._handle;
    const address = holder.address();
    this.port = typeof address === 'object' && address !== null ? address.port : 0;
  }

  /** Binds and listens as the caller is now (root); rejects with the bind error (EADDRINUSE, EACCES). */
  static bind(host: string, port: number): Promise<BoundPort> {
    // pauseOnConnect: the socket is never read from, only reset.
    const holder = createServer({ pauseOnConnect: true }, (socket: Socket) => socket.resetAndDestroy());
    return new Promise((resolve, reject) => {
      holder.once('error', reject);
      holder.listen({ host, port }, () => {
        holder.off('error', reject);
        resolve(new BoundPort(holder));
      });
    });
  }

  /**
   * What to give `server.listen(...)`: the listening socket. From then on the new server owns it (its
   * close() closes it) and this object's close() does nothing. Once only.
   */
  handOver(): { handle: unknown } {
    const handle = this.#handle;
    if (handle === undefined || this.#closing !== undefined)
      throw new Error('the port was already handed over');
    this.#handle = undefined;
    // The placeholder forgets the socket so that nothing it does later (close, GC) touches it.
    (this.#holder as unknown as { _handle: unknown })._handle = null;
    return { handle };
  }

  /** Closes the socket unless it was handed over. Idempotent. */
  close(): Promise<void> {
    this.#closing ??=
      this.#handle === undefined
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            this.#handle = undefined;
            this.#holder.close(() => resolve());
          });
    return this.#closing;
  }
}
