// One tunnel session: a socket speaking the frame protocol, shared by server and client.
//
//   inbound:  socket chunk ─► FrameDecoder ─► onPacket: validate, anti-spoof, count ─► sink.onPacket
//                                              (then sink.onChunkEnd: the engine writes its TUN batch)
//   outbound: engine ─► queuePacket: bound check, frame header + copy into the slab ─► flush (one write
//             per batch, scheduled as a microtask so a whole TUN batch leaves in one socket write)
//
// A session owns accounting, keepalive/dead-peer detection, its bounded output and its shaping (a user's
// rate limit: a token bucket each way, off unless set); it never touches the TUN and never routes. Closing is a state: close() is idempotent, sends DISCONNECT when it can, and
// reports to the sink exactly once.

import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { isFacadeError } from '../core/errors.js';
import {
  DEAD_PEER_INTERVALS,
  MAX_ECHO_REPLIES_PER_SECOND,
  MAX_PACKET_SIZE,
  MAX_SESSION_BUFFERED_BYTES,
} from '../core/limits.js';
import type { Logger } from '../core/log.js';
import { checkPacket, ipVersion, ipv4Source, ipv6SourceKey } from '../net/packet.js';
import { type BufferReads, switchToBufferReads } from '../net/socket-reads.js';
import {
  type ControlMessage,
  clampDisconnectText,
  DisconnectReason,
  decodeControl,
  describeReason,
  echoClock,
  encodeControlFrame,
  reasonForError,
} from '../protocol/control.js';
import { FrameDecoder, type FrameSink } from '../protocol/decoder.js';
import {
  FRAME_HEADER_SIZE,
  FrameType,
  OFFLOAD_HEADER_SIZE,
  type OffloadHeader,
  writeFrameHeader,
  writeOffloadHeader,
} from '../protocol/frame.js';
import { OffloadProblem, offloadProblem } from '../protocol/offload-check.js';
import { SessionBuffers } from './buffers.js';
import type { KeepaliveWheel } from './keepalive-wheel.js';

/** How long a closing session waits for its DISCONNECT frame to drain before the socket is destroyed. */
const CLOSE_LINGER_MS = 2_000;

/**
 * Shaping: the bucket holds at most SHAPING_BURST_SECONDS of the rate (at least two GSO super-packets),
 * and outbound frames wait at most SHAPING_QUEUE_SECONDS of it (at least as much) before they are
 * dropped: a short queue, as a router's, so TCP inside sees the limit as delay first, then as a loss.
 */
const SHAPING_BURST_SECONDS = 0.02;
const SHAPING_QUEUE_SECONDS = 0.05;
const SHAPING_MIN_BYTES = 128 * 1024;

export interface SessionSink {
  /**
   * A packet that passed the session's checks. The view stays valid (the decoder never reuses it);
   * `offload` is the decoder's reused object for DATA_OFFLOAD frames (copy it to keep it), else null.
   */
  onPacket(session: Session, packet: Buffer, offload: OffloadHeader | null): void;
  /** The socket chunk in hand is fully decoded: flush whatever was batched for it (TUN writes). */
  onChunkEnd(session: Session): void;
  /** A control message the session does not handle itself (CONFIG). */
  onControl(session: Session, message: ControlMessage): void;
  /** The session ended; called exactly once. */
  onClose(session: Session, reason: SessionCloseReason): void;
}

export interface SessionCloseReason {
  readonly code: number;
  readonly message: string;
  /** True when the peer ended it (its DISCONNECT, or the socket closing under us). */
  readonly byPeer: boolean;
}

/** Source addresses a peer may use; packets from any other source are dropped (anti-spoofing). */
export interface AllowedSources {
  readonly ipv4: number;
  readonly ipv6Key?: string | undefined;
}

export interface SessionOptions {
  readonly socket: Duplex;
  readonly sink: SessionSink;
  readonly logger: Logger;
  /** Idle interval between keepalive echo requests; 0 disables keepalive and dead-peer detection. */
  readonly keepaliveMs: number;
  /**
   * Ticks the keepalive with many other sessions (an engine's, keepalive-wheel.ts) instead of a timer of
   * its own; its interval is keepaliveMs.
   */
  readonly keepaliveWheel?: KeepaliveWheel | undefined;
  /** Server side: the only source addresses this peer may send from. Client side: undefined. */
  readonly allowedSources?: AllowedSources | undefined;
  /** Largest DATA payload accepted (defaults to MAX_PACKET_SIZE). */
  readonly maxPacket?: number;
  /**
   * The socket was opened with `onread` (one reused read buffer, no 'data' events): its owner passes each
   * read to receive(), and the decoder copies what it cannot decode yet instead of keeping the view.
   */
  readonly pushedReads?: boolean;
  /**
   * The server's sockets: a net.Socket (plain or TLS) is switched to reading into the buffers' shared
   * read buffer (net/socket-reads.ts) instead of a fresh Buffer per read. Other streams read as usual.
   */
  readonly bufferReads?: boolean;
  /** Reused output slabs and straddle buffer, shared by an engine's sessions (default: the session's own). */
  readonly buffers?: SessionBuffers | undefined;
  /** Bytes that arrived together with the handshake and belong to the frame stream. */
  readonly initialBytes?: Buffer | undefined;
  /** DATA_OFFLOAD frames (virtio_net_hdr metadata, GSO super-packets) on from the start (server side). */
  readonly offload?: boolean;
  /**
   * Tunnel MTU, the bound on a peer's GSO segment size (offload-check.ts). Server side: its own; client
   * side: learnt from CONFIG. Until known, only the 64 KiB packet ceiling bounds it.
   */
  readonly mtu?: number;
}

export interface SessionStats {
  bytesIn: number;
  bytesOut: number;
  packetsIn: number;
  packetsOut: number;
  /** Inbound packets whose source address was not the peer's own. */
  spoofDrops: number;
  /** Inbound frames that did not hold a plausible IP packet. */
  invalidDrops: number;
  /** Outbound packets dropped because the peer's socket had too much queued (slow or stalled peer). */
  queueDrops: number;
  /**
   * Inbound DATA_OFFLOAD packets whose virtio_net_hdr was refused (offload-check.ts): metadata that would
   * make our kernel write a checksum outside the transport header or cut the packet into tiny segments.
   */
  offloadDrops: number;
  /** Echo requests not answered: the peer asked more often than MAX_ECHO_REPLIES_PER_SECOND. */
  echoDrops: number;
  /** Outbound packets dropped because the shaping queue of the user's rate limit was full. */
  rateDrops: number;
}

export class Session implements FrameSink {
  readonly stats: SessionStats = {
    bytesIn: 0,
    bytesOut: 0,
    packetsIn: 0,
    packetsOut: 0,
    spoofDrops: 0,
    invalidDrops: 0,
    queueDrops: 0,
    offloadDrops: 0,
    echoDrops: 0,
    rateDrops: 0,
  };
  readonly startedAt = Date.now();
  /**
   * When the peer was last heard from, to the keepalive interval (noted at each tick, never per packet):
   * what `facade status` shows as "last seen".
   */
  lastHeardAt = this.startedAt;

  private readonly socket: Duplex;
  private readonly sink: SessionSink;
  private readonly logger: Logger;
  private readonly decoder: FrameDecoder;
  private readonly allowed: AllowedSources | undefined;
  private offload: boolean;
  /** Bounds gso_size in onPacket; the client's is set from CONFIG. */
  private offloadMtu: number;
  private readonly buffers: SessionBuffers;
  private slab: Buffer | null = null;
  /** The slab each socket write in flight came from, oldest first (writes complete in order). */
  private readonly inflight: Buffer[] = [];
  private inflightHead = 0;
  private slabUsed = 0;
  private flushFrom = 0;
  /**
   * The stream may still read a written buffer after its write callback (an HTTP/2 stream: nghttp2 sends
   * from the buffer later), so each write gets a copy and the slab is free at once. A TCP or TLS socket
   * is done with the bytes when it calls back: no copy.
   */
  private readonly copyWrites: boolean;
  private flushScheduled = false;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private leaveWheel: (() => void) | undefined;
  private bytesInAtLastTick = 0;
  private idleTicks = 0;
  private echoSeq = 0;
  private echoWindowStart = 0;
  private echoRepliesInWindow = 0;
  private closed = false;
  // Shaping (setRateLimit): bytes per second each way, 0 when off, so the data path pays one comparison.
  private rate = 0;
  private burst = 0;
  private shapingQueue = 0;
  private tokensIn = 0;
  private tokensOut = 0;
  private tokensInAt = 0;
  private tokensOutAt = 0;
  private inboundPaused = false;
  /** Set when the socket reads into the shared buffer: pausing acts on its handle. */
  private readonly bufferedReads: BufferReads | null = null;
  private readonly bufferReadsAsked: boolean = false;
  private resumeTimer: NodeJS.Timeout | undefined;
  private shapedFlushTimer: NodeJS.Timeout | undefined;
  private budget = Number.POSITIVE_INFINITY;
  private onBudgetSpent: (() => void) | undefined;

  constructor(options: SessionOptions) {
    this.socket = options.socket;
    this.copyWrites = !(options.socket instanceof Socket);
    this.sink = options.sink;
    this.logger = options.logger;
    this.allowed = options.allowedSources;
    this.offload = options.offload ?? false;
    this.offloadMtu = options.mtu ?? MAX_PACKET_SIZE;
    const buffers = options.buffers ?? new SessionBuffers();
    this.buffers = buffers;
    this.decoder = new FrameDecoder(
      this,
      {
        maxPayload: options.maxPacket ?? MAX_PACKET_SIZE,
        offload: this.offload,
      },
      () => buffers.straddle,
      // Transient always: with pushed reads the read buffer is reused; with 'data' events a kept chunk
      // would survive a scavenge, be promoted, and make the old space grow with every partial frame.
      buffers.stores,
    );
    // Pushed reads: the owner feeds receive() from the socket's reused onread buffer, no 'data' events.
    // Buffer reads: the same, set up here on a socket already open (the server's, after its upgrade).
    if (options.bufferReads === true && this.socket instanceof Socket) {
      this.bufferReadsAsked = true;
      this.bufferedReads = switchToBufferReads(this.socket, buffers.readBuffer, this.receive);
    }
    if (options.pushedReads !== true && this.bufferedReads === null)
      this.socket.on('data', this.onSocketData);
    this.socket.on('end', this.onSocketEnd);
    this.socket.on('close', this.onSocketEnd);
    this.socket.on('error', this.onSocketError);
    if (options.keepaliveMs > 0 && options.keepaliveWheel !== undefined) {
      this.leaveWheel = options.keepaliveWheel.add(this.onKeepaliveTick);
    } else if (options.keepaliveMs > 0) {
      this.keepaliveTimer = setInterval(this.onKeepaliveTick, options.keepaliveMs);
      this.keepaliveTimer.unref();
    }
    if (options.initialBytes !== undefined && options.initialBytes.length > 0) {
      const initial = options.initialBytes;
      queueMicrotask(() => this.onSocketData(initial));
    }
  }

  /**
   * Buffer reads were asked for on a net.Socket and this Node did not allow them (socket-reads.ts): the
   * session works, reading a fresh Buffer per read. Its owner says so once.
   */
  get bufferReadsMissed(): boolean {
    return this.bufferReadsAsked && this.bufferedReads === null;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes handed to the socket and not yet flushed to the kernel, plus frames not yet handed over. */
  get queuedBytes(): number {
    return this.socket.writableLength + (this.slabUsed - this.flushFrom);
  }

  /**
   * Shapes the session to `bytesPerSecond` each way (0: no limit), from now on, without reconnecting.
   * Inbound, reading pauses while the bucket is empty: the peer's TCP backs off. Outbound, frames wait in
   * the slab and leave as the bucket allows; beyond a short queue they are dropped (counted in rateDrops).
   */
  setRateLimit(bytesPerSecond: number): void {
    if (bytesPerSecond === this.rate) return;
    if (this.rate !== 0 && bytesPerSecond === 0) {
      this.rate = 0;
      clearTimeout(this.shapedFlushTimer);
      this.shapedFlushTimer = undefined;
      this.resumeInbound();
      this.flushNow();
      return;
    }
    const now = performance.now();
    this.rate = bytesPerSecond;
    this.burst = Math.max(SHAPING_MIN_BYTES, bytesPerSecond * SHAPING_BURST_SECONDS);
    this.shapingQueue = Math.max(SHAPING_MIN_BYTES, bytesPerSecond * SHAPING_QUEUE_SECONDS);
    this.tokensIn = Math.min(this.tokensIn === 0 ? this.burst : this.tokensIn, this.burst);
    this.tokensOut = Math.min(this.tokensOut === 0 ? this.burst : this.tokensOut, this.burst);
    this.tokensInAt = now;
    this.tokensOutAt = now;
  }

  /** The shaping rate in bytes per second (0: none). */
  get rateLimit(): number {
    return this.rate;
  }

  /**
   * Calls `spent` once, at the first read or flush after bytesIn + bytesOut reach `totalBytes` (a data
   * quota: the owner closes the session). Infinity (the default) turns it off.
   */
  setByteBudget(totalBytes: number, spent: () => void): void {
    this.budget = totalBytes;
    this.onBudgetSpent = spent;
    this.checkBudget();
  }

  private checkBudget(): void {
    if (this.stats.bytesIn + this.stats.bytesOut < this.budget) return;
    this.budget = Number.POSITIVE_INFINITY;
    const spent = this.onBudgetSpent;
    this.onBudgetSpent = undefined;
    // Not from inside a write or a read: the owner closes the session, which must not happen mid-frame.
    if (spent !== undefined) queueMicrotask(spent);
  }

  /** Turns DATA_OFFLOAD on from the next frame (the client, on a CONFIG that says so). */
  enableOffload(): void {
    this.offload = true;
    this.decoder.configure({ offload: true });
  }

  // --- outbound ------------------------------------------------------------------------------------

  /**
   * Frames one plain packet (DATA) for the peer. Returns false (and counts a drop) when the peer is too far
   * behind: a slow peer must never stall the others, and TCP inside the tunnel recovers from the loss.
   */
  queuePacket(source: Buffer, offset: number, length: number): boolean {
    const at = this.reserve(FRAME_HEADER_SIZE + length);
    if (at < 0) return false;
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, FrameType.DATA, length);
    source.copy(slab, at + FRAME_HEADER_SIZE, offset, offset + length);
    return true;
  }

  /**
   * Frames a packet read from a TUN opened with IFF_VNET_HDR: `source[offset .. offset+length)` is the
   * 10-byte virtio_net_hdr followed by the packet, exactly the DATA_OFFLOAD body, so it is copied as is.
   * Only for sessions with offload on (the engine refuses others when its TUN has offloads).
   */
  queueVnetPacket(source: Buffer, offset: number, length: number): boolean {
    const packetLength = length - OFFLOAD_HEADER_SIZE;
    const at = this.reserve(FRAME_HEADER_SIZE + length);
    if (at < 0) return false;
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, FrameType.DATA_OFFLOAD, packetLength);
    source.copy(slab, at + FRAME_HEADER_SIZE, offset, offset + length);
    return true;
  }

  /** Frames a packet that came from another session (client-to-client), keeping its offload metadata. */
  queueFrom(packet: Buffer, offload: OffloadHeader | null): boolean {
    if (offload === null || !this.offload) return this.queuePacket(packet, 0, packet.length);
    const at = this.reserve(FRAME_HEADER_SIZE + OFFLOAD_HEADER_SIZE + packet.length);
    if (at < 0) return false;
    const slab = this.slab as Buffer;
    writeFrameHeader(slab, at, FrameType.DATA_OFFLOAD, packet.length);
    writeOffloadHeader(slab, at + FRAME_HEADER_SIZE, offload);
    packet.copy(slab, at + FRAME_HEADER_SIZE + OFFLOAD_HEADER_SIZE);
    return true;
  }

  /** Room for one frame in the output slab: its offset, or -1 (drop counted) when the peer is behind. */
  private reserve(frameLength: number): number {
    if (this.closed) return -1;
    if (this.rate !== 0 && this.slabUsed - this.flushFrom + frameLength > this.shapingQueue) {
      this.stats.rateDrops++;
      return -1;
    }
    if (
      this.socket.writableLength + (this.slabUsed - this.flushFrom) + frameLength >
      MAX_SESSION_BUFFERED_BYTES
    ) {
      this.stats.queueDrops++;
      return -1;
    }
    let slab = this.slab;
    if (slab === null || slab.length - this.slabUsed < frameLength) {
      // Shaped or not, what the full slab holds leaves now (a shaped session pays for it in debt).
      this.flushNow();
      // The full slab goes back to the pool when its last write completes (onWritten); only forward.
      const old = slab;
      slab = this.buffers.slabs.take();
      this.slab = slab;
      this.slabUsed = 0;
      this.flushFrom = 0;
      if (old !== null && !this.writing(old)) this.buffers.slabs.give(old);
    }
    const at = this.slabUsed;
    this.slabUsed += frameLength;
    this.stats.packetsOut++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flush);
    }
    return at;
  }

  /**
   * Writes every framed packet not yet written, in one socket write; when shaped and the bucket is in
   * debt, later (a timer set for when it is paid).
   */
  readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.rate !== 0 && !this.outboundAllowed()) return;
    this.flushNow();
  };

  private flushNow(): void {
    if (this.slab === null || this.slabUsed === this.flushFrom || this.closed) return;
    const bytes = this.slab.subarray(this.flushFrom, this.slabUsed);
    this.flushFrom = this.slabUsed;
    this.stats.bytesOut += bytes.length;
    if (this.rate !== 0) this.tokensOut -= bytes.length;
    if (this.copyWrites) {
      this.socket.write(Buffer.from(bytes));
      // All of it copied out: the slab goes back now, as an idle socket session's does on its callback.
      this.buffers.slabs.give(this.slab);
      this.slab = null;
      this.slabUsed = 0;
      this.flushFrom = 0;
      if (this.budget !== Number.POSITIVE_INFINITY) this.checkBudget();
      return;
    }
    this.inflight.push(this.slab);
    this.socket.write(bytes, this.onWritten);
    if (this.budget !== Number.POSITIVE_INFINITY) this.checkBudget();
  }

  /** Refills the outbound bucket; true when it is not in debt, else a flush is set for when it is not. */
  private outboundAllowed(): boolean {
    const now = performance.now();
    this.tokensOut = Math.min(this.burst, this.tokensOut + ((now - this.tokensOutAt) * this.rate) / 1000);
    this.tokensOutAt = now;
    if (this.tokensOut >= 0) return true;
    if (this.shapedFlushTimer === undefined) {
      this.shapedFlushTimer = setTimeout(this.onShapedFlush, Math.ceil((-this.tokensOut * 1000) / this.rate));
    }
    return false;
  }

  private readonly onShapedFlush = (): void => {
    this.shapedFlushTimer = undefined;
    if (!this.flushScheduled) this.flush();
  };

  /** Inbound shaping: takes a read's bytes from the bucket; in debt, stops reading until it is paid. */
  private shapeInbound(length: number): void {
    const now = performance.now();
    this.tokensIn =
      Math.min(this.burst, this.tokensIn + ((now - this.tokensInAt) * this.rate) / 1000) - length;
    this.tokensInAt = now;
    if (this.tokensIn >= 0 || this.inboundPaused) return;
    this.inboundPaused = true;
    if (this.bufferedReads !== null) this.bufferedReads.pause();
    else this.socket.pause();
    this.resumeTimer = setTimeout(this.resumeInbound, Math.ceil((-this.tokensIn * 1000) / this.rate));
  }

  private readonly resumeInbound = (): void => {
    clearTimeout(this.resumeTimer);
    this.resumeTimer = undefined;
    if (!this.inboundPaused) return;
    this.inboundPaused = false;
    if (this.closed) return;
    if (this.bufferedReads !== null) this.bufferedReads.resume();
    else this.socket.resume();
  };

  /**
   * A socket write finished (or failed: the socket is going away): its slab is free again once no later
   * write uses it. The current slab, all written and idle, goes back too, so an idle session holds none.
   */
  private readonly onWritten = (): void => {
    const slab = this.inflight[this.inflightHead];
    if (slab === undefined) return;
    this.inflight[this.inflightHead] = undefined as unknown as Buffer;
    this.inflightHead++;
    if (this.inflightHead === this.inflight.length) {
      this.inflight.length = 0;
      this.inflightHead = 0;
    }
    if (this.writing(slab)) return;
    if (slab !== this.slab) {
      this.buffers.slabs.give(slab);
    } else if (this.slabUsed === this.flushFrom && !this.flushScheduled) {
      this.slab = null;
      this.slabUsed = 0;
      this.flushFrom = 0;
      this.buffers.slabs.give(slab);
    }
  };

  /** True while a socket write in flight still reads from `slab`. */
  private writing(slab: Buffer): boolean {
    return this.inflightHead < this.inflight.length && this.inflight[this.inflight.length - 1] === slab;
  }

  /**
   * Sends a control message after the packets already framed, under the same output bound as packets: a
   * peer that never reads cannot make us buffer replies without limit. False when it was dropped.
   */
  sendControl(message: ControlMessage): boolean {
    if (this.closed || this.socket.destroyed) return false;
    const frame = encodeControlFrame(message);
    if (this.queuedBytes + frame.length > MAX_SESSION_BUFFERED_BYTES) {
      this.stats.queueDrops++;
      return false;
    }
    this.flush();
    this.stats.bytesOut += frame.length;
    this.socket.write(frame);
    return true;
  }

  // --- inbound (FrameSink) ---------------------------------------------------------------------------

  onPacket(packet: Buffer, offload: OffloadHeader | null): void {
    if (checkPacket(packet, 0, packet.length) !== null) {
      this.stats.invalidDrops++;
      return;
    }
    const allowed = this.allowed;
    if (allowed !== undefined) {
      const version = ipVersion(packet, 0);
      const ok =
        version === 4
          ? ipv4Source(packet, 0) === allowed.ipv4
          : allowed.ipv6Key !== undefined && ipv6SourceKey(packet, 0) === allowed.ipv6Key;
      if (!ok) {
        this.stats.spoofDrops++;
        return;
      }
    }
    // The kernel acts on the peer's virtio_net_hdr after the checks above: a checksum written at a
    // csum_start of the peer's choosing can rewrite the source address just checked, and gso_size 1
    // turns one frame into a packet per byte. Only what a Linux sender produces for this packet passes.
    if (offload !== null && offloadProblem(packet, offload, this.offloadMtu) !== OffloadProblem.OK) {
      this.stats.offloadDrops++;
      return;
    }
    this.stats.packetsIn++;
    this.sink.onPacket(this, packet, offload);
  }

  onControl(payload: Buffer): void {
    const message = decodeControl(payload);
    switch (message.type) {
      case 'echo-request': {
        // Answered at a bounded rate: enough for keepalive and a latency probe, not an amplifier.
        const now = Date.now();
        if (now - this.echoWindowStart >= 1000) {
          this.echoWindowStart = now;
          this.echoRepliesInWindow = 0;
        }
        if (this.echoRepliesInWindow >= MAX_ECHO_REPLIES_PER_SECOND) {
          this.stats.echoDrops++;
          return;
        }
        this.echoRepliesInWindow++;
        this.sendControl({ type: 'echo-reply', seq: message.seq, timestamp: message.timestamp });
        return;
      }
      case 'echo-reply':
        return; // its bytes already proved the peer alive
      case 'disconnect':
        this.finish({ code: message.reason, message: message.message, byPeer: true });
        return;
      default:
        // The client learns the tunnel MTU here, before the first DATA_OFFLOAD frame can follow.
        if (message.type === 'config') this.offloadMtu = message.mtu;
        this.sink.onControl(this, message);
    }
  }

  /** One read of the socket, for sessions with pushedReads; the view is only valid during the call. */
  readonly receive = (chunk: Buffer): void => this.onSocketData(chunk);

  private readonly onSocketData = (chunk: Buffer): void => {
    if (this.closed) return;
    this.stats.bytesIn += chunk.length;
    if (this.rate !== 0) this.shapeInbound(chunk.length);
    if (this.budget !== Number.POSITIVE_INFINITY) this.checkBudget();
    if (this.closed) return;
    try {
      this.decoder.push(chunk);
      this.sink.onChunkEnd(this);
    } catch (err) {
      this.failed(err);
    }
  };

  /**
   * Something thrown on this session's inbound path ends this session only, as the error table says
   * (core/errors.ts): the peer's violations as PROTOCOL_ERROR, anything else (a bug, a sink that failed)
   * as INTERNAL, logged as ours. Packets already decoded from the chunk are still flushed.
   */
  private failed(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const reason = reasonForError(err);
    const code = isFacadeError(err) ? err.code : undefined;
    if (reason === DisconnectReason.PROTOCOL_ERROR)
      this.logger.warn({ err: code }, `protocol error: ${message}`);
    else this.logger.error({ err: code ?? message }, `session failed: ${message}`);
    try {
      this.sink.onChunkEnd(this);
    } catch {
      // The flush failed too; the sink counted and reported it. The session ends either way.
    }
    this.close(reason, reason === DisconnectReason.PROTOCOL_ERROR ? message : 'internal error');
  }

  private readonly onSocketEnd = (): void => {
    this.finish({ code: DisconnectReason.NORMAL, message: 'connection closed by peer', byPeer: true });
  };

  private readonly onSocketError = (err: Error): void => {
    this.finish({ code: DisconnectReason.NORMAL, message: `connection error: ${err.message}`, byPeer: true });
  };

  private readonly onKeepaliveTick = (): void => {
    if (this.stats.bytesIn !== this.bytesInAtLastTick) {
      this.bytesInAtLastTick = this.stats.bytesIn;
      this.lastHeardAt = Date.now();
      this.idleTicks = 0;
      return;
    }
    this.idleTicks++;
    if (this.idleTicks >= DEAD_PEER_INTERVALS) {
      this.close(DisconnectReason.DEAD_PEER, `peer silent for ${this.idleTicks} keepalive intervals`);
      return;
    }
    this.sendControl({ type: 'echo-request', seq: this.echoSeq++ >>> 0, timestamp: echoClock() });
  };

  // --- closing ---------------------------------------------------------------------------------------

  /** Ends the session from our side: tells the peer why (best effort), then closes the socket. */
  close(reason: number, message: string): void {
    if (this.closed) return;
    if (!this.socket.destroyed && this.socket.writable) {
      this.flush();
      this.socket.write(
        encodeControlFrame({ type: 'disconnect', reason, message: clampDisconnectText(message) }),
      );
    }
    this.finish({ code: reason, message, byPeer: false });
  }

  private finish(reason: SessionCloseReason): void {
    if (this.closed) return;
    this.closed = true;
    if (this.keepaliveTimer !== undefined) clearInterval(this.keepaliveTimer);
    this.leaveWheel?.();
    clearTimeout(this.shapedFlushTimer);
    clearTimeout(this.resumeTimer);
    this.socket.removeListener('data', this.onSocketData);
    if (!this.socket.destroyed) {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
    }
    this.slab = null;
    this.logger.debug({ reason: describeReason(reason.code) }, 'session finished');
    this.sink.onClose(this, reason);
  }
}
