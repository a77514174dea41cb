// Typed face of the native addon built from src/native/tun.cc by `npm ci` (node-gyp). Loaded lazily, so
// code that never opens a TUN (the CLI's --help, unit tests) runs without a compiled addon.

import { createRequire } from 'node:module';
import { facadeError } from '../core/errors.js';

/** Thrown by the addon for a failed system call: the shape of Node's own system errors. */
export interface NativeSystemError extends Error {
  errno: string;
  code: string;
  syscall: string;
}

export interface NativeReader {
  start(): void;
  stop(): void;
  close(): void;
  ref(): void;
  unref(): void;
}

export interface NativeReaderConstructor {
  /**
   * `callback(count, error?)` runs once per wake-up that read packets or hit an error; packet i sits at
   * buffer[offsets[i] .. offsets[i] + lengths[i]) with `headroom` free bytes before it. After an error
   * the reader has stopped polling.
   */
  new (
    fd: number,
    buffer: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    headroom: number,
    maxPackets: number,
    maxRead: number,
    callback: (count: number, error?: NativeSystemError) => void,
  ): NativeReader;
}

export interface NativeTun {
  open(name: string, flags: { multiQueue?: boolean; vnetHdr?: boolean }): { fd: number; name: string };
  close(fd: number): void;
  /** Non-blocking write of each packet; stops at EAGAIN, skips packets the kernel refuses. */
  writePackets(fd: number, packets: readonly Uint8Array[], count: number): number;
  Reader: NativeReaderConstructor;
  /** Bytes of the virtio_net_hdr that IFF_VNET_HDR puts before each packet. */
  VNET_HDR_SIZE: number;
  /**
   * Queue steering (src/native/steering.cc): creates a BPF map (16-byte address → queue), loads the
   * program that looks packets up in it, attaches it to the device behind `tunFd`; returns the map's fd.
   * Needs CAP_BPF and CAP_NET_ADMIN; a refused program's error carries `verifierLog`.
   */
  steeringAttach(tunFd: number, maxEntries: number): number;
  steeringSet(mapFd: number, key: Uint8Array, queue: number): void;
  /** Whether the key was there. */
  steeringDelete(mapFd: number, key: Uint8Array): boolean;
  /** The queue for a key, or -1. */
  steeringLookup(mapFd: number, key: Uint8Array): number;
}

const ADDON_PATH = '../../../build/Release/facade_tun.node';

let addon: NativeTun | undefined;

/** The addon, loaded on first use; FACADE_ERR_TUN_ADDON when it was not built or does not load. */
export function nativeTun(): NativeTun {
  if (addon !== undefined) return addon;
  // dist/src/net/native.js -> <repo>/build/Release; the addon is never copied into dist.
  const require = createRequire(import.meta.url);
  try {
    addon = require(ADDON_PATH) as NativeTun;
  } catch (err) {
    throw facadeError('TUN_ADDON', [(err as Error).message], { cause: err });
  }
  return addon;
}

export function isNativeSystemError(err: unknown): err is NativeSystemError {
  return err instanceof Error && typeof (err as { errno?: unknown }).errno === 'string';
}
