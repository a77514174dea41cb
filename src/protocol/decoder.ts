// Incremental frame decoder: bytes from the TLS socket in, packets and control payloads out.
//
// An explicit state machine driven by one loop. Each state first asks "are the n bytes I need buffered?"
// and returns when not, so a chunk boundary anywhere (inside a header, inside a payload) is never an error.
//
//   HEADER  (4 bytes)  -> version, type and length are checked here, before any payload is buffered
//   OFFLOAD (10 bytes) -> DATA_OFFLOAD only: virtio_net_hdr fields into the decoder's one OffloadHeader
//   PAYLOAD (length)   -> handed to the sink, then back to HEADER
//
// Buffering keeps the socket's chunks as they came plus a read offset into the first one. A payload that
// sits inside one chunk is handed out as a view of it; only a payload straddling chunks is copied (into a
// fresh buffer the decoder never touches again). Headers that straddle go through a fixed scratch buffer, so
// the steady state allocates nothing but the packet view itself.

import { facadeError } from '../core/errors.js';
import { MAX_PACKET_SIZE } from '../core/limits.js';
import {
  createOffloadHeader,
  FRAME_HEADER_SIZE,
  FrameType,
  frameTypeName,
  MAX_FRAME_LENGTH,
  OFFLOAD_HEADER_SIZE,
  type OffloadHeader,
  PROTOCOL_VERSION,
  readOffloadHeader,
} from './frame.js';

/**
 * Default ceiling for CONTROL payloads: the wire maximum. Kept apart from the packet limit because a
 * session that lowers `maxPayload` to its MTU must still accept a CONFIG with many routes, which can be
 * longer than one packet. Bounded by the 16-bit length field, so at most 64 KiB is ever held for one.
 */
export const DEFAULT_MAX_CONTROL_PAYLOAD = MAX_FRAME_LENGTH;

export interface FrameSink {
  /**
   * One IP packet. `packet` is a view into the socket's data or a copy; the decoder never writes to a view
   * or hands it out again. A copy lives in the `straddle` buffer when one was given (valid until the next
   * push), else in a fresh buffer the sink may keep. `offload` is null for DATA frames; for DATA_OFFLOAD
   * it is the decoder's single reusable object, overwritten by the next frame: copy the fields to keep them.
   */
  onPacket(packet: Buffer, offload: OffloadHeader | null): void;
  /** One CONTROL payload (message type byte + body), to be given to decodeControl(). Same ownership. */
  onControl(payload: Buffer): void;
}

/** Where a decoder of transient chunks takes its store from (at least 2 * MAX_FRAME_LENGTH bytes each). */
export interface StorePool {
  take(): Buffer;
  give(store: Buffer): void;
}

export interface FrameDecoderOptions {
  /** Largest packet accepted in DATA and DATA_OFFLOAD frames (default MAX_PACKET_SIZE; e.g. the MTU). */
  maxPayload?: number;
  /** Largest CONTROL payload accepted (default DEFAULT_MAX_CONTROL_PAYLOAD). */
  maxControlPayload?: number;
  /** Whether DATA_OFFLOAD frames were negotiated for this session (default false). */
  offload?: boolean;
}

const STATE_HEADER = 0;
const STATE_OFFLOAD = 1;
const STATE_PAYLOAD = 2;

export class FrameDecoder {
  private readonly sink: FrameSink;
  private maxPayload = MAX_PACKET_SIZE;
  private maxControlPayload = DEFAULT_MAX_CONTROL_PAYLOAD;
  private offloadEnabled = false;

  private readonly chunks: Buffer[] = [];
  /** Bytes of chunks[0] already consumed. */
  private headOffset = 0;
  private buffered = 0;

  private state = STATE_HEADER;
  private frameType = 0;
  private frameLength = 0;
  /** Reused for every DATA_OFFLOAD frame: no object per packet. */
  private readonly offloadHeader: OffloadHeader = createOffloadHeader();
  /** Holds a header that straddles chunks; large enough for the offload header. */
  private readonly scratch = Buffer.alloc(OFFLOAD_HEADER_SIZE);
  /** Where `fixedBytes()` left its bytes: an offset into the buffer it returned. */
  private fixedOffset = 0;
  /** Set by the first error; every later push() throws it again. */
  private failure: unknown = null;
  private readonly straddle: (() => Buffer) | undefined;
  /** Chunks are transient: what is left of them at the end of push() is copied into a store from here. */
  private readonly stores: StorePool | undefined;
  /**
   * Where the undecoded rest of transient chunks is kept, at least twice a frame, so new bytes are appended
   * and the kept part moves to the front only when the end is reached. Held only while something is kept.
   */
  private store: Buffer | undefined;

  /**
   * `straddle` gives where to copy a payload that straddles chunks (at least MAX_FRAME_LENGTH bytes),
   * instead of a fresh buffer per frame. Such a payload is then valid only until the next push(): the sink
   * must be done with it by the time push() returns (the session's sink writes its TUN batch before that).
   */
  /**
   * `stores`: chunks are transient (views of a read buffer the caller reuses, or buffers it must not keep
   * alive), so push() copies what it could not decode yet into a store taken from here, and gives the store
   * back once nothing is kept: an idle decoder holds no memory.
   */
  constructor(
    sink: FrameSink,
    options: FrameDecoderOptions = {},
    straddle?: () => Buffer,
    stores?: StorePool,
  ) {
    this.sink = sink;
    this.straddle = straddle;
    this.stores = stores;
    this.configure(options);
  }

  /**
   * Changes limits or offload between frames, e.g. from inside onControl() once CONFIG has arrived: the
   * next header is checked against the new values, even within the same push().
   */
  configure(options: FrameDecoderOptions): void {
    if (options.maxPayload !== undefined) {
      this.maxPayload = checkLimit('maxPayload', options.maxPayload);
    }
    if (options.maxControlPayload !== undefined) {
      this.maxControlPayload = checkLimit('maxControlPayload', options.maxControlPayload);
    }
    if (options.offload !== undefined) this.offloadEnabled = options.offload;
  }

  /** Bytes held for a frame not yet complete (headers already parsed are not counted): memory held. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** True once push() has thrown; the session must end. */
  get failed(): boolean {
    return this.failure !== null;
  }

  /**
   * Feeds bytes from the socket and delivers every complete frame to the sink, in order, before returning.
   * Throws a FacadeError on a protocol violation (FRAME_VERSION, FRAME_TYPE, FRAME_OFFLOAD, FRAME_INVALID,
   * FRAME_TOO_LARGE); an error thrown by the sink propagates as is. Either way the decoder is then unusable
   * and drops what it buffered: the stream position is lost, so the session must end (with
   * DisconnectReason.PROTOCOL_ERROR for the coded errors). The chunk is kept by reference, not copied:
   * do not modify it afterwards. Not re-entrant: the sink must not call push().
   */
  push(chunk: Buffer): void {
    if (this.failure !== null) throw this.failure;
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    try {
      this.run();
      if (this.stores !== undefined) {
        if (this.buffered > 0) this.retain();
        else if (this.store !== undefined) {
          this.stores.give(this.store);
          this.store = undefined;
        }
      }
    } catch (err) {
      this.failure = err;
      if (this.store !== undefined) this.stores?.give(this.store);
      this.store = undefined;
      this.chunks.length = 0;
      this.headOffset = 0;
      this.buffered = 0;
      throw err;
    }
  }

  private run(): void {
    for (;;) {
      switch (this.state) {
        case STATE_HEADER:
          if (this.buffered < FRAME_HEADER_SIZE) return;
          this.readHeader();
          break;
        case STATE_OFFLOAD:
          if (this.buffered < OFFLOAD_HEADER_SIZE) return;
          readOffloadHeader(this.fixedBytes(OFFLOAD_HEADER_SIZE), this.fixedOffset, this.offloadHeader);
          this.state = STATE_PAYLOAD;
          break;
        default:
          if (this.buffered < this.frameLength) return;
          this.deliver();
      }
    }
  }

  private readHeader(): void {
    const source = this.fixedBytes(FRAME_HEADER_SIZE);
    const at = this.fixedOffset;
    const version = source[at]!;
    const type = source[at + 1]!;
    const length = (source[at + 2]! << 8) | source[at + 3]!;
    if (version !== PROTOCOL_VERSION) throw facadeError('FRAME_VERSION', [version, PROTOCOL_VERSION]);

    let limit: number;
    switch (type) {
      case FrameType.DATA:
        limit = this.maxPayload;
        this.state = STATE_PAYLOAD;
        break;
      case FrameType.DATA_OFFLOAD:
        if (!this.offloadEnabled) throw facadeError('FRAME_OFFLOAD', [length]);
        limit = this.maxPayload;
        this.state = STATE_OFFLOAD;
        break;
      case FrameType.CONTROL:
        limit = this.maxControlPayload;
        this.state = STATE_PAYLOAD;
        break;
      default:
        throw facadeError('FRAME_TYPE', [
          `${frameTypeName(type)} (known: 0x01 DATA, 0x02 DATA_OFFLOAD, 0x10 CONTROL)`,
        ]);
    }
    if (length === 0) {
      throw facadeError('FRAME_INVALID', [
        `${frameTypeName(type)} frame with length 0 (a frame carries 1..${MAX_FRAME_LENGTH} bytes)`,
      ]);
    }
    if (length > limit) throw facadeError('FRAME_TOO_LARGE', [length, limit]);
    this.frameType = type;
    this.frameLength = length;
  }

  private deliver(): void {
    const payload = this.consume(this.frameLength);
    const type = this.frameType;
    // Back to HEADER before calling out, so the decoder is consistent whatever the sink does.
    this.state = STATE_HEADER;
    if (type === FrameType.CONTROL) this.sink.onControl(payload);
    else this.sink.onPacket(payload, type === FrameType.DATA_OFFLOAD ? this.offloadHeader : null);
  }

  /**
   * Consumes `n` (<= scratch size) buffered bytes and returns the buffer that holds them, with their start
   * in `fixedOffset`: the first chunk itself when they sit in it, else the scratch buffer.
   */
  private fixedBytes(n: number): Buffer {
    const head = this.chunks[0]!;
    const start = this.headOffset;
    if (head.length - start >= n) {
      this.advance(head, start + n, n);
      this.fixedOffset = start;
      return head;
    }
    this.copyOut(this.scratch, n);
    this.fixedOffset = 0;
    return this.scratch;
  }

  /**
   * Consumes `n` buffered bytes: a view when they sit in one chunk; when they straddle, a copy in the
   * shared straddle buffer (valid until the next push) or, without one, in a fresh buffer.
   */
  private consume(n: number): Buffer {
    const head = this.chunks[0]!;
    const start = this.headOffset;
    if (head.length - start >= n) {
      this.advance(head, start + n, n);
      return head.subarray(start, start + n);
    }
    const copy = this.straddle === undefined ? Buffer.allocUnsafe(n) : this.straddle().subarray(0, n);
    this.copyOut(copy, n);
    return copy;
  }

  private advance(head: Buffer, end: number, n: number): void {
    this.buffered -= n;
    if (end === head.length) {
      this.chunks.shift();
      this.headOffset = 0;
    } else {
      this.headOffset = end;
    }
  }

  /**
   * Keeps the undecoded rest (less than one frame: at most MAX_FRAME_LENGTH bytes) in the owned store, so no
   * caller buffer is referenced after push() returns: what was kept before stays where it is and only the
   * new bytes are copied after it (each byte is copied once, unless the kept part must move to the front).
   * Anything the sink was given is done with by now (see `straddle`), so moving bytes is safe.
   */
  private retain(): void {
    this.store ??= (this.stores as StorePool).take();
    const store = this.store;
    const chunks = this.chunks;
    let start = 0;
    let end = 0;
    let from = 0;
    const head = chunks[0] as Buffer;
    if (head.buffer === store.buffer && head.byteOffset >= store.byteOffset) {
      // The rest begins with what an earlier push kept: it stays in place.
      start = head.byteOffset - store.byteOffset + this.headOffset;
      end = head.byteOffset - store.byteOffset + head.length;
      from = 1;
    }
    const kept = end - start;
    if (end + (this.buffered - kept) > store.length) {
      store.copyWithin(0, start, end);
      start = 0;
      end = kept;
    }
    for (let i = from; i < chunks.length; i++) {
      const chunk = chunks[i] as Buffer;
      const offset = i === 0 ? this.headOffset : 0;
      end += chunk.copy(store, end, offset);
    }
    chunks.length = 0;
    chunks.push(store.subarray(start, end));
    this.headOffset = 0;
  }

  /** Copies the next `n` buffered bytes into `target` at 0, dropping the chunks it empties. */
  private copyOut(target: Buffer, n: number): void {
    let written = 0;
    while (written < n) {
      const head = this.chunks[0]!;
      const start = this.headOffset;
      const take = Math.min(head.length - start, n - written);
      head.copy(target, written, start, start + take);
      written += take;
      this.advance(head, start + take, take);
    }
  }
}

function checkLimit(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_FRAME_LENGTH) {
    throw facadeError('CONFIG_INVALID', [
      name,
      `must be an integer from 1 to ${MAX_FRAME_LENGTH} (the frame length field's range), got ${value}`,
    ]);
  }
  return value;
}
