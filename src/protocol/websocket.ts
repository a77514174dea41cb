// The WebSocket transport's wire (RFC 6455), both sides: the handshake's key and accept values, and a
// small framer that carries facade's frame stream as binary WebSocket messages.
//
//   writer: one facade write (a batch of frames) ─► one binary WebSocket frame (FIN, opcode 2), masked by
//           the client with a fresh random key, unmasked from the server
//   reader: socket chunk ─► header state machine ─► payload (unmasked in place) ─► the facade decoder
//
// Message boundaries carry no meaning: facade frames are self-delimiting, so the payloads of the binary
// (and continuation) frames are one byte stream, and a facade frame may straddle two WebSocket frames.
// Ping is answered with pong, close with close; text frames, reserved bits, unmasked client frames and
// masked server frames are protocol errors (close code 1002), as RFC 6455 section 5 says.

import { createHash, randomFillSync } from 'node:crypto';
import { Duplex } from 'node:stream';
import { facadeError } from '../core/errors.js';

/** RFC 6455 section 1.3: the GUID appended to the client's key. */
const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const WEBSOCKET_VERSION = '13';

/** The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key. */
export function webSocketAccept(key: string): string {
  return createHash('sha1').update(`${key}${ACCEPT_GUID}`).digest('base64');
}

/** A fresh Sec-WebSocket-Key: 16 random bytes, base64. */
export function newWebSocketKey(): string {
  return randomFillSync(Buffer.alloc(16)).toString('base64');
}

/** True for a Sec-WebSocket-Key as RFC 6455 4.1 makes it: the base64 of exactly 16 bytes (24 characters). */
export function isWebSocketKey(value: string | undefined): boolean {
  return value !== undefined && /^[A-Za-z0-9+/]{21}[AQgw]==$/.test(value);
}

const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;
type Opcode = (typeof Opcode)[keyof typeof Opcode];

/** Close codes (RFC 6455 7.4.1). */
const CLOSE_NORMAL = 1000;
const CLOSE_PROTOCOL_ERROR = 1002;

/** Control frames carry at most 125 bytes (RFC 6455 5.5). */
const MAX_CONTROL_PAYLOAD = 125;

/**
 * The largest data frame we take. facade's own frames are at most 64 KiB + 14 bytes and a writer sends one
 * WebSocket frame per batch of them (a session's output bound, 1 MiB, and a proxy's buffers bound it in
 * practice); a length beyond this is a peer that is not ours, refused before any byte of it is buffered.
 */
const MAX_DATA_PAYLOAD = 16 * 1024 * 1024;

/** Where the reader is: in a frame's header, or in its payload. */
const HEADER = 0;
const PAYLOAD = 1;

/** XORs `data` in place with the 4-byte `mask`, starting at mask byte `phase` (0-3). */
export function applyMask(data: Buffer, mask: Buffer, phase: number): void {
  const length = data.length;
  let i = 0;
  if (length >= 64) {
    // Bytes up to a 4-byte boundary of the underlying memory, then whole 32-bit words (several times
    // faster than byte by byte), then the tail.
    while (((data.byteOffset + i) & 3) !== 0) {
      data[i] = (data[i] as number) ^ (mask[(phase + i) & 3] as number);
      i++;
    }
    const p = phase + i;
    const word =
      ((mask[p & 3] as number) |
        ((mask[(p + 1) & 3] as number) << 8) |
        ((mask[(p + 2) & 3] as number) << 16) |
        ((mask[(p + 3) & 3] as number) << 24)) >>>
      0; // the 4 mask bytes as a little-endian word, as a Uint32Array reads memory on every Linux host
    const words = new Uint32Array(data.buffer, data.byteOffset + i, (length - i) >>> 2);
    for (let w = 0; w < words.length; w++) words[w] = (words[w] as number) ^ word;
    i += words.length << 2;
  }
  for (; i < length; i++) data[i] = (data[i] as number) ^ (mask[(phase + i) & 3] as number);
}

export interface WebSocketStreamOptions {
  /** The side we are: a client masks what it sends and wants unmasked frames, a server the reverse. */
  readonly role: 'client' | 'server';
  /**
   * Where payload bytes go. Default: the stream's readable side ('data' events). A client that reads
   * into one reused buffer passes a function, called synchronously with a view valid during the call.
   */
  readonly deliver?: (payload: Buffer) => void;
}

/**
 * A byte stream over a WebSocket connection whose handshake is done. The owner feeds it every chunk read
 * from the socket (`receive`); what is written to it leaves as binary frames on `socket`. The buffers
 * written are masked in place on the client: a writer must not read a buffer again after writing it
 * (facade's session never does).
 */
export class WebSocketStream extends Duplex {
  private readonly socket: Duplex;
  private readonly client: boolean;
  private readonly deliver: ((payload: Buffer) => void) | undefined;
  private state: typeof HEADER | typeof PAYLOAD = HEADER;
  /** Header bytes gathered across chunks (at most 14). */
  private readonly header = Buffer.alloc(14);
  private headerHave = 0;
  private opcode = 0;
  private fin = false;
  private masked = false;
  private readonly mask = Buffer.alloc(4);
  /** Payload bytes of the current frame still to come, and how many came already (the mask's phase). */
  private remaining = 0;
  private seen = 0;
  /** A control frame's payload, gathered whole. */
  private control: Buffer[] = [];
  /** Inside a fragmented data message (a continuation may follow). */
  private inMessage = false;
  private closeSent = false;
  private readonly outMask = Buffer.alloc(4);

  constructor(socket: Duplex, options: WebSocketStreamOptions) {
    super({ allowHalfOpen: false });
    this.socket = socket;
    this.client = options.role === 'client';
    this.deliver = options.deliver;
    socket.on('end', this.onSocketEnd);
    socket.on('close', this.onSocketClose);
    socket.on('error', this.onSocketError);
  }

  /** One chunk read from the socket. */
  readonly receive = (chunk: Buffer): void => {
    try {
      this.parse(chunk);
    } catch (err) {
      this.fail(err as Error);
    }
  };

  private parse(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.state === HEADER) {
        at = this.readHeader(chunk, at);
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - at);
      const payload = chunk.subarray(at, at + take);
      at += take;
      if (this.masked) applyMask(payload, this.mask, this.seen);
      this.seen += take;
      this.remaining -= take;
      if (this.opcode >= Opcode.CLOSE) {
        // A copy: the chunk may be a view of a reused read buffer.
        this.control.push(Buffer.from(payload));
        if (this.remaining === 0) this.onControl(Buffer.concat(this.control));
      } else if (take > 0) {
        this.output(payload);
      }
      if (this.remaining === 0) this.state = HEADER;
    }
  }

  /** Gathers header bytes; returns the new position. A complete header switches to PAYLOAD. */
  private readHeader(chunk: Buffer, at: number): number {
    const header = this.header;
    // The first two bytes say how long the header is.
    const need = (): number => {
      if (this.headerHave < 2) return 2;
      const len7 = (header[1] as number) & 0x7f;
      const extended = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
      return 2 + extended + ((header[1] as number) & 0x80 ? 4 : 0);
    };
    while (this.headerHave < need()) {
      if (at >= chunk.length) return at;
      header[this.headerHave++] = chunk[at++] as number;
    }
    const b0 = header[0] as number;
    const b1 = header[1] as number;
    this.fin = (b0 & 0x80) !== 0;
    this.opcode = b0 & 0x0f;
    this.masked = (b1 & 0x80) !== 0;
    if ((b0 & 0x70) !== 0) throw invalid('a reserved bit is set (no extension was agreed)');
    if (this.masked === this.client)
      throw invalid(this.client ? 'a masked frame from the server' : 'an unmasked frame from the client');
    const len7 = b1 & 0x7f;
    let length: number;
    let offset = 2;
    if (len7 === 126) {
      length = header.readUInt16BE(2);
      offset = 4;
    } else if (len7 === 127) {
      const high = header.readUInt32BE(2);
      // Checked before anything is buffered; also keeps the length a safe integer (2^53 - 1).
      if (high !== 0) throw invalid(`a frame of more than ${MAX_DATA_PAYLOAD} bytes`);
      length = header.readUInt32BE(6);
      offset = 10;
    } else {
      length = len7;
    }
    if (this.masked) header.copy(this.mask, 0, offset, offset + 4);
    this.validateFrame(length);
    this.headerHave = 0;
    this.remaining = length;
    this.seen = 0;
    this.control = [];
    this.state = PAYLOAD;
    if (length === 0 && this.opcode >= Opcode.CLOSE) {
      this.state = HEADER;
      this.onControl(Buffer.alloc(0));
    }
    return at;
  }

  private validateFrame(length: number): void {
    switch (this.opcode) {
      case Opcode.CLOSE:
      case Opcode.PING:
      case Opcode.PONG:
        if (!this.fin || length > MAX_CONTROL_PAYLOAD)
          throw invalid('a fragmented or oversized control frame');
        return;
      case Opcode.BINARY:
        if (this.inMessage) throw invalid('a new message inside a fragmented one');
        break;
      case Opcode.CONTINUATION:
        if (!this.inMessage) throw invalid('a continuation frame outside a message');
        break;
      case Opcode.TEXT:
        throw invalid('a text frame (the tunnel is binary)');
      default:
        throw invalid(`unknown opcode ${this.opcode}`);
    }
    if (length > MAX_DATA_PAYLOAD) throw invalid(`a frame of ${length} bytes (at most ${MAX_DATA_PAYLOAD})`);
    this.inMessage = !this.fin;
  }

  private onControl(payload: Buffer): void {
    this.control = [];
    if (this.opcode === Opcode.PING) {
      this.sendFrame(Opcode.PONG, payload);
    } else if (this.opcode === Opcode.CLOSE) {
      // The peer is done: answer its close (once) and end both directions.
      this.sendClose(CLOSE_NORMAL);
      this.socket.end();
      this.push(null);
    }
  }

  private output(payload: Buffer): void {
    if (this.deliver !== undefined) {
      this.deliver(payload);
      return;
    }
    // Backpressure: stop reading the socket until the reader wants more.
    if (!this.push(payload)) this.socket.pause();
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.closeSent || this.socket.destroyed) {
      callback(new Error('the WebSocket is closed'));
      return;
    }
    this.sendFrame(Opcode.BINARY, chunk, callback);
  }

  /** Writes queued while one was in flight leave together: one frame each, in one corked socket write. */
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (err?: Error | null) => void,
  ): void {
    if (this.closeSent || this.socket.destroyed) {
      callback(new Error('the WebSocket is closed'));
      return;
    }
    this.socket.cork();
    const last = chunks.length - 1;
    chunks.forEach(({ chunk }, i) => {
      this.sendFrame(Opcode.BINARY, chunk, i === last ? callback : undefined);
    });
    this.socket.uncork();
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.sendClose(CLOSE_NORMAL);
    this.socket.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.socket.off('end', this.onSocketEnd);
    this.socket.off('close', this.onSocketClose);
    this.socket.off('error', this.onSocketError);
    this.socket.destroy();
    callback(err);
  }

  /** Header (and the client's mask) then payload, corked into one socket write. */
  private sendFrame(opcode: Opcode, payload: Buffer, callback?: (err?: Error | null) => void): void {
    const length = payload.length;
    const extended = length < 126 ? 0 : length < 65536 ? 2 : 8;
    const header = Buffer.allocUnsafe(2 + extended + (this.client ? 4 : 0));
    header[0] = 0x80 | opcode;
    header[1] = (this.client ? 0x80 : 0) | (extended === 0 ? length : extended === 2 ? 126 : 127);
    if (extended === 2) header.writeUInt16BE(length, 2);
    else if (extended === 8) {
      header.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
      header.writeUInt32BE(length >>> 0, 6);
    }
    if (this.client) {
      // RFC 6455 5.3: a fresh, unpredictable key per frame.
      randomFillSync(this.outMask);
      this.outMask.copy(header, 2 + extended);
      applyMask(payload, this.outMask, 0);
    }
    this.socket.cork();
    this.socket.write(header);
    if (callback === undefined) this.socket.write(payload);
    else this.socket.write(payload, callback);
    this.socket.uncork();
  }

  private sendClose(code: number): void {
    if (this.closeSent || this.socket.destroyed || !this.socket.writable) return;
    this.closeSent = true;
    const body = Buffer.alloc(2);
    body.writeUInt16BE(code, 0);
    this.sendFrame(Opcode.CLOSE, body);
  }

  /** A protocol error: close with 1002 and fail the stream with the coded error. */
  private fail(err: Error): void {
    this.sendClose(CLOSE_PROTOCOL_ERROR);
    this.destroy(err);
  }

  private readonly onSocketEnd = (): void => {
    this.push(null);
  };

  private readonly onSocketClose = (): void => {
    if (!this.destroyed) this.destroy();
  };

  private readonly onSocketError = (err: Error): void => {
    this.destroy(err);
  };
}

function invalid(what: string): Error {
  return facadeError('WEBSOCKET_INVALID', [what]);
}
