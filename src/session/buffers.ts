// Memory the data path reuses instead of allocating per chunk. A large Buffer is external memory to V8, and
// a steady stream of fresh ones (a 256 KiB output slab per batch, a 64 KiB copy per frame that straddles
// two socket reads) drives major collections however small the JS heap is. One SessionBuffers per engine
// (per worker, later) is shared by its sessions: the event loop runs one session's work at a time.
//
//   output slabs: taken when a session frames packets, given back once every socket write that used the
//                 slab has completed (the write callback), so an idle session holds none;
//   straddle:     where the decoder copies a frame that arrived split across socket reads; valid until
//                 the session's chunk is done (SessionSink.onChunkEnd), when the next push may reuse it;
//   read buffer:  where a server socket reads (net/socket-reads.ts): each read is a view valid during its
//                 callback, and one callback runs at a time;
//   stores:       where a decoder keeps the undecoded rest of a read, so no socket buffer outlives its
//                 callback (and is promoted to the old space); given back once nothing is kept.

import { MAX_FRAME_LENGTH } from '../protocol/frame.js';

/** Output slab size: frames are appended here and written in one piece; 256 KiB holds a full TUN batch. */
export const OUTPUT_SLAB_BYTES = 256 * 1024;

/**
 * Free slabs kept for reuse: 16 MiB, enough for four sessions each at its full output bound; beyond that
 * a returned slab is left to the collector (a burst of many slow peers, rare and self-limiting).
 */
const MAX_FREE_SLABS = 64;

export class SlabPool {
  readonly #free: Buffer[] = [];
  /** Slabs ever allocated: with reuse working this stops growing at steady state. */
  allocated = 0;

  constructor(
    readonly slabBytes = OUTPUT_SLAB_BYTES,
    private readonly maxFree = MAX_FREE_SLABS,
  ) {}

  take(): Buffer {
    const slab = this.#free.pop();
    if (slab !== undefined) return slab;
    this.allocated++;
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared 8 KiB pool.
    return Buffer.allocUnsafeSlow(this.slabBytes);
  }

  give(slab: Buffer): void {
    if (this.#free.length < this.maxFree) this.#free.push(slab);
  }

  get free(): number {
    return this.#free.length;
  }
}

/** Stores for the undecoded rest of a read (decoder.ts): two frames each; few are held at once. */
const MAX_FREE_STORES = 16;

export class SessionBuffers {
  readonly slabs: SlabPool;
  /** A decoder holds one only between a partial frame's first and last read: idle sessions hold none. */
  readonly stores = new SlabPool(2 * MAX_FRAME_LENGTH, MAX_FREE_STORES);
  #straddle: Buffer | undefined;
  #read: Buffer | undefined;

  constructor(slabs: SlabPool = new SlabPool()) {
    this.slabs = slabs;
  }

  /** The shared buffer for a frame split across reads (allocated on first use: many peers never need it). */
  get straddle(): Buffer {
    this.#straddle ??= Buffer.allocUnsafeSlow(MAX_FRAME_LENGTH);
    return this.#straddle;
  }

  /** The sessions' shared socket read buffer: a TLS read is one record (16 KiB), a plain TCP read more. */
  get readBuffer(): Buffer {
    this.#read ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    return this.#read;
  }
}

/** One socket read at most: a TLS record's plaintext is 16 KiB; plain TCP reads come in up to 64 KiB. */
const READ_BUFFER_BYTES = 64 * 1024;
