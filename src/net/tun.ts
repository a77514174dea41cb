// A kernel TUN device as batches of IP packets. This is policy over the mechanism in src/native/tun.cc:
// defaults, validation, backpressure, statistics, coded errors, an idempotent close().
//
// Reading: one handler, not an EventEmitter. There is exactly one consumer (the tunnel engine), and a
// plain function call per batch costs less than emit(). The handler gets the same PacketBatch object
// every time; its buffer is overwritten by the next batch, so copy what you keep past the handler.
//
// Backpressure: pause() stops polling the fd. The kernel then queues packets for the device up to its
// txqueuelen (500 by default) and drops the rest, counted in the interface's TX drops: the sender's TCP
// slows down, the event loop never buffers without bound. resume() delivers what the kernel queued.
//
// Shutdown: close() stops reading and closes the fd; the kernel deletes a non-persistent device when its
// last queue closes, discarding queued packets. Packets handed to writePackets() before close() are
// already in the kernel. close() is idempotent; other methods throw FACADE_ERR_TUN_CLOSED after it.

import { facadeError } from '../core/errors.js';
import { MAX_PACKET_SIZE, TUN_BATCH_BYTES, TUN_BATCH_PACKETS } from '../core/limits.js';
import { isNativeSystemError, type NativeReader, type NativeSystemError, nativeTun } from './native.js';

/** Interface names are at most IFNAMSIZ - 1 bytes; the kernel also refuses "/", ":" and whitespace. */
const MAX_IFNAME_BYTES = 15;

/**
 * Largest headroom we reserve before each packet. Headroom is for in-place frame headers (4 bytes
 * today); 256 leaves room for growth without letting a typo waste the batch buffer.
 */
export const MAX_TUN_HEADROOM = 256;

/** Bytes of the virtio_net_hdr in front of each packet when the device was opened with vnetHdr. */
export const VNET_HDR_SIZE = 10;

export interface TunOpenOptions {
  /** Interface name; empty or absent lets the kernel choose (tun0, tun1, ...). */
  name?: string;
  /** IFF_MULTI_QUEUE: several fds (queues) on one device, for one reader per core. */
  multiQueue?: boolean;
  /** IFF_VNET_HDR with checksum and TSO offloads: GSO super-packets up to 64 KiB, each after a 10-byte virtio header. */
  vnetHdr?: boolean;
  /** Free bytes left before each packet in the batch buffer (for an in-place frame header). Default 0. */
  headroom?: number;
  /** Size of the batch buffer. Default TUN_BATCH_BYTES. */
  batchBytes?: number;
  /** Packets read per wake-up at most. Default TUN_BATCH_PACKETS. */
  batchPackets?: number;
}

/**
 * Packets read in one wake-up: packet i is buffer[offsets[i] .. offsets[i] + lengths[i]), preceded by
 * `headroom` free bytes. Valid only during the handler call: the buffer is reused for the next batch.
 */
export interface PacketBatch {
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  count: number;
}

export interface TunStats {
  packetsRead: number;
  bytesRead: number;
  batches: number;
  packetsWritten: number;
  /** Packets given to writePackets that the kernel did not take (queue full, malformed, link down). */
  writeDrops: number;
  largestBatch: number;
}

/** Counters that start at zero (a device's own, or a sum of several). */
export function emptyTunStats(): TunStats {
  return {
    packetsRead: 0,
    bytesRead: 0,
    batches: 0,
    packetsWritten: 0,
    writeDrops: 0,
    largestBatch: 0,
  };
}

/** What the tunnel engine needs of a TUN device; TunDevice implements it, tests may substitute. */
export interface TunLike {
  readonly name: string;
  /** Opened with IFF_VNET_HDR: every packet read or written starts with a 10-byte virtio_net_hdr. */
  readonly vnetHdr: boolean;
  onBatch(handler: (batch: PacketBatch) => void): void;
  /** Read failures (the device was deleted under us); reading has stopped when the handler runs. */
  onError(handler: (err: Error) => void): void;
  pause(): void;
  resume(): void;
  writePackets(packets: readonly Uint8Array[], count?: number): number;
  close(): void;
}

/** Turns the addon's errno into the sentence a user needs. */
export function openHint(err: NativeSystemError): string {
  switch (err.errno) {
    case 'EPERM':
    case 'EACCES':
      return `${err.syscall} returned ${err.errno}: needs root or CAP_NET_ADMIN`;
    case 'ENOENT':
    case 'ENODEV':
      return `${err.syscall} returned ${err.errno}: the tun kernel module is missing (modprobe tun; in a container pass --device /dev/net/tun)`;
    case 'EBUSY':
      return `${err.syscall} returned EBUSY: the name is in use by another device or process`;
    case 'EINVAL':
      return `${err.syscall} returned EINVAL: the name belongs to a device that is not a TUN, or to a TUN opened with other flags (multiQueue and vnetHdr must match)`;
    default:
      return `${err.syscall} returned ${err.errno}: ${err.message}`;
  }
}

function ioHint(errno: string): string {
  switch (errno) {
    case 'EBADFD':
      return ': the device was deleted (ip link del, or its network namespace was removed)';
    case 'EBADF':
      return ': the fd was closed behind this TunDevice (double close elsewhere?)';
    default:
      return '';
  }
}

function checkName(name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_IFNAME_BYTES) {
    throw facadeError('TUN_OPEN', [name, `the name is ${bytes} bytes, the limit is ${MAX_IFNAME_BYTES}`]);
  }
  if (/[/:\s]/.test(name) || name === '.' || name === '..') {
    throw facadeError('TUN_OPEN', [name, 'interface names may not contain "/", ":" or whitespace']);
  }
}

function checkInteger(name: string, label: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw facadeError('TUN_OPEN', [name, `${label} is ${value}, expected an integer in ${min}..${max}`]);
  }
}

export class TunDevice implements TunLike {
  readonly name: string;
  readonly vnetHdr: boolean;
  readonly multiQueue: boolean;
  readonly headroom: number;

  readonly #fd: number;
  readonly #reader: NativeReader;
  readonly #batch: PacketBatch;
  readonly #stats: TunStats = emptyTunStats();
  #handler: ((batch: PacketBatch) => void) | undefined;
  #errorHandler: ((err: Error) => void) | undefined;
  #paused = false;
  #reading = false;
  #closed = false;

  private constructor(
    fd: number,
    name: string,
    options: Required<
      Pick<TunOpenOptions, 'multiQueue' | 'vnetHdr' | 'headroom' | 'batchBytes' | 'batchPackets'>
    >,
  ) {
    const native = nativeTun();
    this.#fd = fd;
    this.name = name;
    this.vnetHdr = options.vnetHdr;
    this.multiQueue = options.multiQueue;
    this.headroom = options.headroom;
    const maxRead = MAX_PACKET_SIZE + (options.vnetHdr ? VNET_HDR_SIZE : 0);
    // allocUnsafeSlow: a buffer of its own, not a slice of Node's shared pool, because it lives as long
    // as the device and the kernel writes into it.
    this.#batch = {
      buffer: Buffer.allocUnsafeSlow(options.batchBytes),
      offsets: new Uint32Array(options.batchPackets),
      lengths: new Uint32Array(options.batchPackets),
      count: 0,
    };
    this.#reader = new native.Reader(
      fd,
      this.#batch.buffer,
      this.#batch.offsets,
      this.#batch.lengths,
      options.headroom,
      options.batchPackets,
      maxRead,
      (count, error) => this.#onRead(count, error),
    );
  }

  /** Opens (creating if needed) a TUN device. Throws FACADE_ERR_TUN_OPEN with what to do about it. */
  static open(options: TunOpenOptions = {}): TunDevice {
    const requested = options.name ?? '';
    checkName(requested);
    const vnetHdr = options.vnetHdr ?? false;
    const multiQueue = options.multiQueue ?? false;
    const headroom = options.headroom ?? 0;
    const batchPackets = options.batchPackets ?? TUN_BATCH_PACKETS;
    const batchBytes = options.batchBytes ?? TUN_BATCH_BYTES;
    checkInteger(requested, 'headroom', headroom, 0, MAX_TUN_HEADROOM);
    checkInteger(requested, 'batchPackets', batchPackets, 1, 65536);
    // One read must always fit whole: the kernel truncates a packet read into a shorter buffer.
    const minBytes = headroom + MAX_PACKET_SIZE + (vnetHdr ? VNET_HDR_SIZE : 0);
    checkInteger(requested, 'batchBytes', batchBytes, minBytes, 64 * 1024 * 1024);

    const native = nativeTun();
    let opened: { fd: number; name: string };
    try {
      opened = native.open(requested, { multiQueue, vnetHdr });
    } catch (err) {
      if (!isNativeSystemError(err)) throw err;
      throw facadeError('TUN_OPEN', [requested || 'tun%d', openHint(err)], {
        cause: err,
        errno: err.errno,
        syscall: err.syscall,
      });
    }
    try {
      return new TunDevice(opened.fd, opened.name, {
        multiQueue,
        vnetHdr,
        headroom,
        batchBytes,
        batchPackets,
      });
    } catch (err) {
      native.close(opened.fd);
      throw err;
    }
  }

  /**
   * Wraps a TUN queue fd opened by another process (a worker's queue, inherited from the primary: see
   * tun-queues.ts). `name` and `vnetHdr` must be what the fd was opened with; closing it closes only this
   * process's copy.
   */
  static fromFd(
    fd: number,
    options: { name: string; vnetHdr: boolean } & Pick<
      TunOpenOptions,
      'headroom' | 'batchBytes' | 'batchPackets'
    >,
  ): TunDevice {
    return new TunDevice(fd, options.name, {
      multiQueue: true,
      vnetHdr: options.vnetHdr,
      headroom: options.headroom ?? 0,
      batchBytes: options.batchBytes ?? TUN_BATCH_BYTES,
      batchPackets: options.batchPackets ?? TUN_BATCH_PACKETS,
    });
  }

  /** Sets the one batch handler and starts reading (unless paused). A second call replaces the handler. */
  onBatch(handler: (batch: PacketBatch) => void): void {
    this.#assertOpen();
    this.#handler = handler;
    this.#updateReading();
  }

  /**
   * Sets the handler for read errors (the device was deleted under us, say); reading has stopped when it
   * runs. Without one, a read error is thrown as an uncaught exception, like an unhandled 'error' event.
   */
  onError(handler: (err: Error) => void): void {
    this.#errorHandler = handler;
  }

  /** Stops reading until resume(). Idempotent. */
  pause(): void {
    this.#paused = true;
    this.#updateReading();
  }

  /** Reads again after pause(); packets the kernel queued meanwhile arrive in the next batches. Idempotent. */
  resume(): void {
    this.#paused = false;
    this.#updateReading();
  }

  get paused(): boolean {
    return this.#paused;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A snapshot of the counters. */
  get stats(): TunStats {
    return { ...this.#stats };
  }

  /**
   * Writes packets[0 .. count) to the kernel, one non-blocking write each. Returns how many the kernel
   * took; the others are dropped (queue full, malformed, link down) and counted in stats.writeDrops.
   * With vnetHdr, each packet must start with a virtio_net_hdr (10 zero bytes for a plain packet).
   */
  writePackets(packets: readonly Uint8Array[], count = packets.length): number {
    this.#assertOpen();
    const n = Math.min(count, packets.length);
    let written: number;
    try {
      written = nativeTun().writePackets(this.#fd, packets, n);
    } catch (err) {
      throw this.#ioError('write', err);
    }
    this.#stats.packetsWritten += written;
    this.#stats.writeDrops += n - written;
    return written;
  }

  /** Lets the process exit while this device is the only thing left reading. */
  unref(): void {
    if (!this.#closed) this.#reader.unref();
  }

  ref(): void {
    if (!this.#closed) this.#reader.ref();
  }

  /** Stops reading and closes the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reading = false;
    this.#handler = undefined;
    // The reader first: it takes the fd out of epoll, so closing the fd cannot confuse the poller.
    this.#reader.close();
    nativeTun().close(this.#fd);
  }

  #updateReading(): void {
    if (this.#closed) return;
    const shouldRead = !this.#paused && this.#handler !== undefined;
    if (shouldRead === this.#reading) return;
    this.#reading = shouldRead;
    if (shouldRead) this.#reader.start();
    else this.#reader.stop();
  }

  #onRead(count: number, error?: NativeSystemError): void {
    if (count > 0) {
      const stats = this.#stats;
      const lengths = this.#batch.lengths;
      let bytes = 0;
      for (let i = 0; i < count; i++) bytes += lengths[i]!;
      stats.packetsRead += count;
      stats.bytesRead += bytes;
      stats.batches += 1;
      if (count > stats.largestBatch) stats.largestBatch = count;
      this.#batch.count = count;
      this.#handler?.(this.#batch);
    }
    if (error !== undefined) {
      // The native reader stopped polling on error.
      this.#reading = false;
      const err = this.#ioError('read', error);
      if (this.#errorHandler) this.#errorHandler(err);
      else throw err;
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw facadeError('TUN_CLOSED', [this.name]);
  }

  #ioError(operation: string, err: unknown) {
    if (!isNativeSystemError(err)) return err instanceof Error ? err : new Error(String(err));
    return facadeError(
      'TUN_IO',
      [this.name, operation, `${err.errno} (${err.message})${ioHint(err.errno)}`],
      {
        cause: err,
        errno: err.errno,
        syscall: err.syscall,
      },
    );
  }
}
