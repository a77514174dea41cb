// Addresses for every worker, in one place: the primary's AddressPool (leases, the 10-minute sticky
// address, leases.json) and the TUN's queue steering. A worker asks for a lease when a client has
// authenticated; the address is steered to that worker's queue before the answer goes back, so the
// client's first packet from the kernel already reaches the right process.
//
// The pool's generation rule carries over: a release names the lease it ends, so an old session closing
// after its user reconnected on another worker cannot take the new session's address or steering.

import type { AddressPool, Lease, StaticAddressRequest } from '../engine/pool.js';

/** What the service needs of the TUN: net/tun-queues.ts's TunQueues. */
export interface Steering {
  steer(address: string, queue: number): void;
  unsteer(address: string): void;
}

interface Holder {
  readonly worker: number;
  readonly lease: Lease;
}

export interface LeaseGrant {
  readonly lease: Lease;
  /** The worker that held this user's session until now, when another: it must end that session. */
  readonly replaces: number | undefined;
}

export class LeaseService {
  readonly pool: AddressPool;
  readonly #steering: Steering;
  readonly #holders = new Map<string, Holder>();

  constructor(pool: AddressPool, steering: Steering) {
    this.pool = pool;
    this.#steering = steering;
  }

  /** Leases `user`'s addresses for a session on `worker` and steers them there. Throws as pool.lease does. */
  lease(worker: number, user: string, request: StaticAddressRequest): LeaseGrant {
    const lease = this.pool.lease(user, request);
    const previous = this.#holders.get(user);
    if (previous !== undefined && previous.lease.ipv4 !== lease.ipv4) this.#unsteer(previous.lease);
    this.#steering.steer(lease.ipv4, worker);
    if (lease.ipv6 !== undefined) this.#steering.steer(lease.ipv6, worker);
    this.#holders.set(user, { worker, lease });
    return {
      lease,
      replaces: previous !== undefined && previous.worker !== worker ? previous.worker : undefined,
    };
  }

  /** The session of that lease ended: the address is held for its user (grace) and no longer steered. */
  release(user: string, generation: number): void {
    const holder = this.#holders.get(user);
    if (holder === undefined || holder.lease.generation !== generation) return;
    this.#holders.delete(user);
    this.pool.release(user, holder.lease);
    this.#unsteer(holder.lease);
  }

  /** A worker died: every lease it held is released as its sessions would have. Returns how many. */
  releaseWorker(worker: number): number {
    let released = 0;
    for (const [user, holder] of [...this.#holders]) {
      if (holder.worker !== worker) continue;
      this.release(user, holder.lease.generation);
      released++;
    }
    return released;
  }

  /** Which worker holds `user`'s session, if any. */
  workerOf(user: string): number | undefined {
    return this.#holders.get(user)?.worker;
  }

  #unsteer(lease: Lease): void {
    this.#steering.unsteer(lease.ipv4);
    if (lease.ipv6 !== undefined) this.#steering.unsteer(lease.ipv6);
  }
}
