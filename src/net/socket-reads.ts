// Reads of an already open Node socket (plain TCP or TLS) into one caller-owned buffer instead of a fresh
// Buffer per read.
//
// Why: each read of a socket in the usual mode is a new ArrayBuffer with an external backing store (16 KiB
// per TLS record). At a few Gbit/s that is external memory V8 must account and collect, and it alone drives
// major (mark-compact) collections on the receiving side. Node's own answer is the `onread` option, but it
// is honoured only where Node creates the socket (net.connect, tls.connect): a server's TLSSocket is made by
// tls.Server, and a tunnel becomes one only after its HTTP upgrade, on a socket that has been read already.
//
// How: the same two steps Node takes for `onread`, done later. The socket's handle (TCPWrap or TLSWrap) is
// told to read into the buffer (`useUserBuffer`, a method of every stream handle), and the socket's own
// fields for `onread` (kBuffer, kBufferCb: own symbol properties every net.Socket has, null until used) are
// set, so Node's read callback hands each read to ours instead of pushing a Buffer. Those fields are Node's
// internals: switchToBufferReads checks that each is there, exactly once and unused, and returns null
// otherwise, and its caller keeps the usual 'data' events (correct, with garbage). A unit test fails loudly
// when a Node upgrade takes that path (test/unit/socket-reads.test.ts).
//
// The buffer may be shared by many sockets (one per engine): a read callback runs to its end before the
// event loop delivers another read, and TLS decrypts (ClearOut) only from the socket's own read callback.

import type { Socket } from 'node:net';

/** The handle methods used; every libuv stream handle and TLSWrap has them. */
interface StreamHandle {
  reading: boolean;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Uint8Array): void;
}

/** A socket whose reads go into a buffer: pausing and resuming act on the handle (no Readable buffer). */
export interface BufferReads {
  /** Stops reading from the kernel (the peer's TCP backs off); what TLS has already decrypted still arrives. */
  pause(): void;
  resume(): void;
}

function ownSymbol(target: object, description: string): symbol | undefined {
  const found = Object.getOwnPropertySymbols(target).filter((s) => s.description === description);
  return found.length === 1 ? found[0] : undefined;
}

/**
 * Switches `socket` to reading into `buffer`: from now on each read calls `receive` with a view of the
 * buffer, valid during the call only; no 'data' events. The socket flows (its 'end' and 'close' still come).
 * Returns null, changing nothing, when this Node does not allow it or the socket still holds unread data.
 */
export function switchToBufferReads(
  socket: Socket,
  buffer: Buffer,
  receive: (chunk: Buffer) => void,
): BufferReads | null {
  const handle = (socket as unknown as { _handle: StreamHandle | null })._handle;
  if (handle === null || typeof handle.useUserBuffer !== 'function') return null;
  if (socket.readableLength > 0 || socket.destroyed) return null;
  const kBuffer = ownSymbol(socket, 'kBuffer');
  const kBufferCb = ownSymbol(socket, 'kBufferCb');
  if (kBuffer === undefined || kBufferCb === undefined) return null;
  const fields = socket as unknown as Record<symbol, unknown>;
  if (fields[kBuffer] !== null || fields[kBufferCb] !== null) return null;
  fields[kBufferCb] = (bytes: number, into: Uint8Array): boolean => {
    receive((into as Buffer).subarray(0, bytes));
    return true;
  };
  fields[kBuffer] = buffer;
  handle.useUserBuffer(buffer);
  const start = (): void => {
    if (handle.reading || socket.destroyed) return;
    handle.reading = true;
    const err = handle.readStart();
    if (err !== 0 && err !== undefined) socket.destroy(new Error(`read start failed (${err})`));
  };
  // Flowing, so the end of the stream is emitted; and reading, should the handle have been stopped.
  socket.resume();
  start();
  return {
    pause(): void {
      if (!handle.reading || socket.destroyed) return;
      handle.reading = false;
      handle.readStop();
    },
    resume: start,
  };
}
