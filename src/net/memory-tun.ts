// A TUN device with no kernel behind it (after wireguard-go's tuntest): the "network" side is this
// object's methods. inject() plays packets arriving from the host; `written` keeps what the tunnel
// wrote to the host. It lets the engine and the client run without root: in unit tests, and in the
// bench's load test, which opens many sessions without a TUN each.
//
// Faithful to TunDevice where the engine can tell the difference:
//   - a batch is laid out as the native reader lays it out (src/native/tun.cc Drain): one reused buffer,
//     each packet `headroom` bytes after the end of the previous one, the 10-byte virtio_net_hdr in front
//     of it with vnetHdr (its length counted in `lengths`), a batch ending at batchPackets or when a
//     largest-possible read would no longer fit;
//   - nothing is delivered while paused or before onBatch(): packets wait, as in the kernel's queue (this
//     one is unbounded; the kernel would drop past txqueuelen), and arrive on resume();
//   - a read error stops reading before the error handler runs, and is thrown when there is none;
//   - writePackets() returns how many packets the "kernel" took and counts the rest as drops;
//   - after close() every method but close() throws FACADE_ERR_TUN_CLOSED.
// Unlike the native reader, delivery is synchronous: inject() returns after the handler ran.

import { facadeError } from '../core/errors.js';
import { MAX_PACKET_SIZE, TUN_BATCH_BYTES, TUN_BATCH_PACKETS } from '../core/limits.js';
import { emptyTunStats, type PacketBatch, type TunLike, type TunStats, VNET_HDR_SIZE } from './tun.js';

export interface MemoryTunOptions {
  /** What `name` reports (default "mem0"); no device of that name exists. */
  name?: string;
  /** Packets read and written start with a 10-byte virtio_net_hdr, as with IFF_VNET_HDR. */
  vnetHdr?: boolean;
  /** Free bytes before each packet in the batch buffer (TunOpenOptions.headroom). Default 0. */
  headroom?: number;
  /** Size of the batch buffer. Default TUN_BATCH_BYTES. */
  batchBytes?: number;
  /** Packets per batch at most. Default TUN_BATCH_PACKETS. */
  batchPackets?: number;
}

/** A packet waiting while reading is stopped: a copy, since the caller may reuse its buffer. */
interface HeldPacket {
  readonly packet: Buffer;
  readonly vnetHeader: Uint8Array | undefined;
}

interface WriteWaiter {
  readonly count: number;
  readonly resolve: (written: readonly Buffer[]) => void;
  readonly reject: (err: Error) => void;
}

export class MemoryTun implements TunLike {
  readonly name: string;
  readonly vnetHdr: boolean;
  readonly headroom: number;
  /**
   * Copies of the packets writePackets() took, in order, as the kernel would have received them (with
   * vnetHdr, each starts with its virtio_net_hdr). Long runs may empty it (`written.length = 0`).
   */
  readonly written: Buffer[] = [];
  /**
   * Packets one writePackets() call takes at most; the rest are refused, as by a full device queue.
   * Infinity (the default) takes everything; 0 refuses every write.
   */
  writeLimit = Number.POSITIVE_INFINITY;

  readonly #batch: PacketBatch;
  /** Bytes one read may need: the native reader stops a batch when this no longer fits. */
  readonly #maxRead: number;
  readonly #stats: TunStats = emptyTunStats();
  readonly #held: HeldPacket[] = [];
  readonly #waiters: WriteWaiter[] = [];
  #handler: ((batch: PacketBatch) => void) | undefined;
  #errorHandler: ((err: Error) => void) | undefined;
  #writeError: Error | undefined;
  #paused = false;
  /** A handler is running: the batch buffer is in use. */
  #delivering = false;
  #readFailed = false;
  #closed = false;

  constructor(options: MemoryTunOptions = {}) {
    this.name = options.name ?? 'mem0';
    this.vnetHdr = options.vnetHdr ?? false;
    this.headroom = options.headroom ?? 0;
    this.#maxRead = MAX_PACKET_SIZE + (this.vnetHdr ? VNET_HDR_SIZE : 0);
    const batchBytes = options.batchBytes ?? TUN_BATCH_BYTES;
    const batchPackets = options.batchPackets ?? TUN_BATCH_PACKETS;
    if (batchBytes < this.headroom + this.#maxRead || batchPackets < 1)
      throw facadeError('TUN_OPEN', [this.name, 'the batch buffer cannot hold one largest packet']);
    this.#batch = {
      buffer: Buffer.allocUnsafeSlow(batchBytes),
      offsets: new Uint32Array(batchPackets),
      lengths: new Uint32Array(batchPackets),
      count: 0,
    };
  }

  /** A snapshot of the counters, as TunDevice.stats. */
  get stats(): TunStats {
    return { ...this.#stats };
  }

  get paused(): boolean {
    return this.#paused;
  }

  get closed(): boolean {
    return this.#closed;
  }

  // --- the host's side -----------------------------------------------------------------------------

  /**
   * Packets "from the host" for the tunnel: IP packets, without a virtio_net_hdr. With vnetHdr each is
   * given `vnetHeader` (the 10 raw bytes of a virtio_net_hdr; zeros when absent: a plain packet). The TUN
   * does not read the header, as the kernel's does not for us: it is the protocol's business. Delivered before this returns, in
   * as few batches as the batch buffer allows; held (copied) while reading is paused.
   */
  inject(packets: readonly Uint8Array[], vnetHeader?: Uint8Array): void {
    this.#assertOpen();
    if (vnetHeader !== undefined && vnetHeader.length !== VNET_HDR_SIZE)
      throw new RangeError(`a virtio_net_hdr has ${VNET_HDR_SIZE} bytes, not ${vnetHeader.length}`);
    for (const packet of packets) {
      if (packet.length < 1 || packet.length > MAX_PACKET_SIZE)
        throw new RangeError(`a TUN packet has 1..${MAX_PACKET_SIZE} bytes, not ${packet.length}`);
    }
    // Held packets go first; a handler injecting while it runs must not overwrite the batch it reads.
    if (this.#delivering || !this.#reading() || this.#held.length > 0) {
      this.#hold(packets, vnetHeader);
      this.#deliverHeld();
      return;
    }
    const delivered = this.#deliver(packets, vnetHeader);
    if (delivered < packets.length) {
      // The handler stopped reading: the rest waits, ahead of anything it injected meanwhile.
      const rest = packets.slice(delivered).map((packet) => ({ packet: Buffer.from(packet), vnetHeader }));
      this.#held.unshift(...rest);
    }
    this.#deliverHeld();
  }

  /** A read error, as when the device is deleted under a reader: reading stops, then onError's handler runs. */
  fail(err: Error = facadeError('TUN_IO', [this.name, 'read', 'EBADFD (simulated: device deleted)'])): void {
    this.#assertOpen();
    this.#readFailed = true;
    if (this.#errorHandler === undefined) throw err;
    this.#errorHandler(err);
  }

  /** Every later writePackets() throws `err`, as TunDevice does once the device is gone. */
  throwOnWrite(
    err: Error = facadeError('TUN_IO', [this.name, 'write', 'EBADFD (simulated: device deleted)']),
  ): void {
    this.#writeError = err;
  }

  /** Resolves with `written` once it holds at least `count` packets; rejects if the TUN closes first. */
  whenWritten(count: number): Promise<readonly Buffer[]> {
    if (this.written.length >= count) return Promise.resolve([...this.written]);
    if (this.#closed) return Promise.reject(facadeError('TUN_CLOSED', [this.name]));
    return new Promise((resolve, reject) => this.#waiters.push({ count, resolve, reject }));
  }

  // --- TunLike: the tunnel's side ------------------------------------------------------------------

  onBatch(handler: (batch: PacketBatch) => void): void {
    this.#assertOpen();
    this.#handler = handler;
    this.#deliverHeld();
  }

  onError(handler: (err: Error) => void): void {
    this.#errorHandler = handler;
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#deliverHeld();
  }

  writePackets(packets: readonly Uint8Array[], count = packets.length): number {
    this.#assertOpen();
    if (this.#writeError !== undefined) throw this.#writeError;
    const n = Math.min(count, packets.length);
    const taken = Math.min(n, this.writeLimit);
    for (let i = 0; i < taken; i++) this.written.push(Buffer.from(packets[i] as Uint8Array));
    this.#stats.packetsWritten += taken;
    this.#stats.writeDrops += n - taken;
    if (taken > 0) this.#wakeWaiters();
    return taken;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handler = undefined;
    this.#held.length = 0;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(facadeError('TUN_CLOSED', [this.name]));
  }

  // --- internals -----------------------------------------------------------------------------------

  #reading(): boolean {
    return this.#handler !== undefined && !this.#paused && !this.#readFailed && !this.#closed;
  }

  #hold(packets: readonly Uint8Array[], vnetHeader: Uint8Array | undefined): void {
    for (const packet of packets) this.#held.push({ packet: Buffer.from(packet), vnetHeader });
  }

  /** Delivers held packets while reading, in order; neighbours with the same header go in one call. */
  #deliverHeld(): void {
    const held = this.#held;
    while (!this.#delivering && this.#reading() && held.length > 0) {
      const vnetHeader = held[0]?.vnetHeader;
      let run = 1;
      while (run < held.length && held[run]?.vnetHeader === vnetHeader) run++;
      const delivered = this.#deliver(
        held.slice(0, run).map((h) => h.packet),
        vnetHeader,
      );
      held.splice(0, delivered);
    }
  }

  /**
   * Fills the batch buffer as the native reader does and hands it over, batch after batch, until every
   * packet went or the handler stopped reading. Returns how many packets were delivered.
   */
  #deliver(packets: readonly Uint8Array[], vnetHeader: Uint8Array | undefined): number {
    const batch = this.#batch;
    const { buffer, offsets, lengths } = batch;
    const header = this.vnetHdr ? VNET_HDR_SIZE : 0;
    let delivered = 0;
    this.#delivering = true;
    try {
      while (delivered < packets.length && this.#reading()) {
        let count = 0;
        let bytes = 0;
        let end = 0;
        while (delivered + count < packets.length && count < offsets.length) {
          const start = end + this.headroom;
          if (start + this.#maxRead > buffer.length) break;
          const packet = packets[delivered + count] as Uint8Array;
          if (header > 0) {
            if (vnetHeader === undefined) buffer.fill(0, start, start + header);
            else buffer.set(vnetHeader, start);
          }
          buffer.set(packet, start + header);
          offsets[count] = start;
          lengths[count] = header + packet.length;
          bytes += header + packet.length;
          end = start + header + packet.length;
          count++;
        }
        const stats = this.#stats;
        stats.packetsRead += count;
        stats.bytesRead += bytes;
        stats.batches++;
        if (count > stats.largestBatch) stats.largestBatch = count;
        batch.count = count;
        delivered += count;
        this.#handler?.(batch);
      }
    } finally {
      this.#delivering = false;
    }
    return delivered;
  }

  #wakeWaiters(): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const waiter = this.#waiters[i] as WriteWaiter;
      if (this.written.length < waiter.count) continue;
      this.#waiters.splice(i, 1);
      waiter.resolve([...this.written]);
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw facadeError('TUN_CLOSED', [this.name]);
  }
}
