// A multi-queue TUN for several worker processes, and the steering that sends each client's packets to
// the queue of the worker holding its session.
//
// The primary opens the device with IFF_MULTI_QUEUE, one fd (queue) per worker, and never reads them:
// each worker inherits its fd and wraps it (TunDevice.fromFd). Packets a worker writes go into the
// kernel from any queue; packets the kernel sends to the device are steered by a BPF program
// (native/steering.cc) that looks the destination address up in a map: address → queue. The lease
// service (server/lease-service.ts) sets an entry when it gives a worker's client an address and removes
// it when the lease ends; an address without an entry goes to queue 0, whose engine drops what no
// session of its own holds.
//
// Why not one TUN per worker with a host route per client: moving a route needs CAP_NET_ADMIN for the
// life of the server, and a second privileged process to run `ip`; a map entry needs only its fd, which
// the unprivileged primary keeps (Linux ≥ 6.5 checks BPF capabilities at map creation, not on update).
// One device also keeps one name for firewall and NAT rules.
//
// Queue indexes stay stable because the primary keeps every queue fd open for the life of the server: a
// crashed worker's copy closing does not detach its queue, and its restarted successor inherits the same.

import { isIPv4 } from 'node:net';
import { facadeError } from '../core/errors.js';
import { isNativeSystemError, nativeTun } from './native.js';
import { addressBytes } from './packet.js';
import { openHint } from './tun.js';

export interface TunQueuesOptions {
  readonly name: string;
  readonly queues: number;
  readonly vnetHdr: boolean;
  /** Addresses the steering map can hold (both families). */
  readonly maxAddresses: number;
}

export class TunQueues {
  readonly name: string;
  readonly vnetHdr: boolean;
  /** One fd per queue, index = queue number = worker index. */
  readonly fds: readonly number[];
  readonly #mapFd: number;
  #closed = false;

  private constructor(name: string, vnetHdr: boolean, fds: number[], mapFd: number) {
    this.name = name;
    this.vnetHdr = vnetHdr;
    this.fds = fds;
    this.#mapFd = mapFd;
  }

  /** Opens `queues` queues of one device and attaches the steering program. Needs root (start-up). */
  static open(options: TunQueuesOptions): TunQueues {
    const native = nativeTun();
    const fds: number[] = [];
    let name = options.name;
    try {
      for (let i = 0; i < options.queues; i++) {
        const opened = native.open(name, { multiQueue: true, vnetHdr: options.vnetHdr });
        name = opened.name;
        fds.push(opened.fd);
      }
    } catch (err) {
      for (const fd of fds) native.close(fd);
      if (!isNativeSystemError(err)) throw err;
      throw facadeError('TUN_OPEN', [name || 'tun%d', openHint(err)], {
        cause: err,
        errno: err.errno,
        syscall: err.syscall,
      });
    }
    try {
      const mapFd = native.steeringAttach(fds[0] as number, Math.max(1, options.maxAddresses));
      return new TunQueues(name, options.vnetHdr, fds, mapFd);
    } catch (err) {
      for (const fd of fds) native.close(fd);
      const log = (err as { verifierLog?: string }).verifierLog;
      throw facadeError(
        'TUN_OPEN',
        [
          name,
          `queue steering could not be attached (${err instanceof Error ? err.message : String(err)})${
            log ? `; verifier: ${log.trim().split('\n').slice(-3).join(' | ')}` : ''
          }; run with --workers 1`,
        ],
        { cause: err },
      );
    }
  }

  /** Packets to `address` go to `queue` from now on. */
  steer(address: string, queue: number): void {
    if (this.#closed) return;
    nativeTun().steeringSet(this.#mapFd, steeringKey(address), queue);
  }

  /** Packets to `address` go to queue 0 again. */
  unsteer(address: string): void {
    if (this.#closed) return;
    nativeTun().steeringDelete(this.#mapFd, steeringKey(address));
  }

  /** The queue the kernel sends `address`'s packets to, or undefined for the default (0). */
  queueOf(address: string): number | undefined {
    const queue = nativeTun().steeringLookup(this.#mapFd, steeringKey(address));
    return queue < 0 ? undefined : queue;
  }

  /** Closes every queue (the device goes away with the last) and the map. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const native = nativeTun();
    for (const fd of this.fds) native.close(fd);
    native.close(this.#mapFd);
  }
}

/** The map's key for an address: IPv6 as it is, IPv4 as ::ffff:a.b.c.d (what steering.cc builds). */
export function steeringKey(address: string): Uint8Array {
  const key = new Uint8Array(16);
  if (isIPv4(address)) {
    key[10] = 0xff;
    key[11] = 0xff;
    key.set(addressBytes(address), 12);
  } else {
    key.set(addressBytes(address));
  }
  return key;
}
