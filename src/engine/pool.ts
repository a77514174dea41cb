// The tunnel address pool: which inner IPv4 (and IPv6) address each connected user gets.
//
// Layout of a pool, e.g. 198.18.8.0/24 (and fd00:8::/64):
//   index 0            first host (198.18.8.1, fd00:8::1): the server's own tunnel address, never leased
//   index 1..count-1   leasable hosts, handed out lowest first, then least recently freed first
// IPv4 network and broadcast addresses lie outside the range by construction; for IPv6 the all-zero
// interface id (subnet-router anycast) does too. Both families lease from at most MAX_POOL_ADDRESSES hosts
// from the start of the prefix (a /64 has 2^64; no server holds more than a few thousand sessions).
//
// A lease is active while a session uses it. release() makes it "held" for graceMs, so a client that
// reconnects (network change, server restart) gets the same address back and its open connections survive;
// after that it is free again. Held leases expire lazily, oldest first, when the pool is next used.
//
// Allocation is O(1): a FIFO ring of free indices (each index queued at most once) plus a "taken" byte per
// index. Static addresses are reservations: taken out of the free ring for good, leased only to their user.
//
// With statePath, every change is written (coalesced, atomically, 0600) so a server that is killed and
// restarted gives reconnecting users their addresses back.

import { readFileSync, renameSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../core/atomic-file.js';
import { facadeError } from '../core/errors.js';
import { LEASE_GRACE_MS } from '../core/limits.js';
import { ipv6ToKey, keyToIpv6, numberToIpv4, ipv4ToNumber as packetIpv4ToNumber } from '../net/packet.js';

/**
 * Hosts (server included) one pool leases from, per family. Bounds the allocator state to ~400 KiB per
 * family and the start-up fill to a millisecond; 65535 clients is far more than one server carries.
 */
export const MAX_POOL_ADDRESSES = 65536;

/** Smallest IPv4 pool: a /30 has two hosts, the server and one client. */
export const MAX_IPV4_POOL_PREFIX = 30;
/** Smallest IPv6 pool: a /126 has three hosts after the anycast address, the server and two clients. */
export const MAX_IPV6_POOL_PREFIX = 126;

/** Largest lease state file we read; ~100 bytes a lease, so this is far beyond MAX_POOL_ADDRESSES. */
export const MAX_POOL_STATE_BYTES = 32 * 1024 * 1024;

/**
 * Lease file writes come at most this often. A write holds every lease, so a burst of N connects must not
 * cost N writes; a crash loses at most this much of who had which address (a courtesy, not a promise).
 */
export const LEASE_SAVE_INTERVAL_MS = 1_000;

const STATE_VERSION = 1;

export interface AddressPoolOptions {
  /** IPv4 pool, e.g. '198.18.8.0/24'. */
  ipv4: string;
  /** Optional IPv6 pool, e.g. 'fd00:8::/64'. */
  ipv6?: string | undefined;
  /** How long a released address stays reserved for its user. */
  graceMs?: number | undefined;
  /** Where leases are persisted; none when omitted. */
  statePath?: string | undefined;
  /** Clock in ms since the epoch (tests pass a fake one). */
  now?: (() => number) | undefined;
  /** Called when writing the state file fails; the pool keeps working from memory. */
  onSaveError?: ((err: Error) => void) | undefined;
}

export interface StaticAddressRequest {
  staticIpv4?: string | undefined;
  staticIpv6?: string | undefined;
}

export interface Lease {
  readonly user: string;
  readonly ipv4: string;
  /** The IPv4 address as an unsigned 32-bit number (for O(1) routing tables). */
  readonly ipv4Number: number;
  readonly ipv6?: string;
  /** Prefix lengths of the pools, for the client's interface configuration. */
  readonly prefix4: number;
  readonly prefix6?: number;
  /**
   * Changes on every lease() call, including a re-lease of the same addresses. Pass the lease to
   * release() so that an old session closing after its replacement leased does not release the new one.
   */
  readonly generation: number;
}

export interface LeaseInfo {
  readonly user: string;
  readonly ipv4: string;
  readonly ipv6?: string;
  readonly state: 'active' | 'held';
  /** For held leases: when the address becomes free (ms since the epoch). */
  readonly expiresAt?: number;
}

export interface PoolStats {
  /** Leasable IPv4 addresses (the server's excluded). */
  size: number;
  active: number;
  held: number;
  /** Static addresses reserved for users who hold no lease right now. */
  reservedIdle: number;
}

interface LeaseEntry {
  readonly user: string;
  v4: number;
  /** -1 when there is no IPv6 pool. */
  v6: number;
  state: 'active' | 'held';
  expiresAt: number;
  generation: number;
}

// --- address arithmetic ------------------------------------------------------------------------------

/** Dotted quad to unsigned 32-bit number; NaN when not an IPv4 address (src/net/packet.ts does the parsing). */
export function ipv4ToNumber(address: string): number {
  return isIPv4(address) ? packetIpv4ToNumber(address) : Number.NaN;
}

export { numberToIpv4 };

/** IPv6 text (any valid form, no zone) to a 128-bit bigint; undefined when not an IPv6 address. */
export function ipv6ToBigInt(address: string): bigint | undefined {
  if (!isIPv6(address) || address.includes('%')) return undefined;
  return BigInt(`0x${Buffer.from(ipv6ToKey(address), 'latin1').toString('hex')}`);
}

/** 128-bit bigint to the canonical RFC 5952 text (lower case, longest zero run compressed). */
export function bigIntToIpv6(value: bigint): string {
  return keyToIpv6(Buffer.from(value.toString(16).padStart(32, '0'), 'hex').toString('latin1'));
}

// --- one family's range and allocator -----------------------------------------------------------------

/** A contiguous run of host addresses: index 0 is the server, 1..count-1 are leasable. */
class HostRange {
  readonly family: 4 | 6;
  readonly cidr: string;
  readonly prefix: number;
  readonly first: bigint;
  readonly count: number;

  constructor(family: 4 | 6, cidr: string) {
    this.family = family;
    const bits = family === 4 ? 32 : 128;
    const maxPrefix = family === 4 ? MAX_IPV4_POOL_PREFIX : MAX_IPV6_POOL_PREFIX;
    const invalid = (why: string) => facadeError('POOL_INVALID', [cidr, why]);
    const slash = cidr.indexOf('/');
    if (slash === -1)
      throw invalid(`expected ADDRESS/PREFIX, e.g. ${family === 4 ? '198.18.8.0/24' : 'fd00:8::/64'}`);
    const addressText = cidr.slice(0, slash);
    const prefixText = cidr.slice(slash + 1);
    const network = family === 4 ? ipv4BigInt(addressText) : ipv6ToBigInt(addressText);
    if (network === undefined) throw invalid(`"${addressText}" is not an IPv${family} address`);
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits)
      throw invalid(`prefix length "${prefixText}" must be 0..${bits}`);
    const prefix = Number(prefixText);
    if (prefix > maxPrefix)
      throw invalid(
        `/${prefix} is too small; the pool needs the server and at least one client (/${maxPrefix} or larger)`,
      );
    const hostBits = BigInt(bits - prefix);
    const hostMask = (1n << hostBits) - 1n;
    if ((network & hostMask) !== 0n) {
      const base = network & ~hostMask;
      throw invalid(`host bits are set; did you mean ${this.format(base, family)}/${prefix}?`);
    }
    // v4 loses network and broadcast; v6 loses only the subnet-router anycast (all-zero interface id).
    const hosts = (1n << hostBits) - (family === 4 ? 2n : 1n);
    this.cidr = `${this.format(network, family)}/${prefix}`;
    this.prefix = prefix;
    this.first = network + 1n;
    this.count = hosts > BigInt(MAX_POOL_ADDRESSES) ? MAX_POOL_ADDRESSES : Number(hosts);
  }

  address(index: number): string {
    return this.format(this.first + BigInt(index), this.family);
  }

  /** Index of an address text in this range, or -1 when it is not an address of the range. */
  indexOf(address: string): number {
    const value = this.family === 4 ? ipv4BigInt(address) : ipv6ToBigInt(address);
    if (value === undefined || value < this.first || value >= this.first + BigInt(this.count)) return -1;
    return Number(value - this.first);
  }

  private format(value: bigint, family: 4 | 6): string {
    return family === 4 ? numberToIpv4(Number(value)) : bigIntToIpv6(value);
  }
}

function ipv4BigInt(address: string): bigint | undefined {
  const value = ipv4ToNumber(address);
  return Number.isNaN(value) ? undefined : BigInt(value);
}

/**
 * Free indices in a FIFO ring, least recently freed first. An index is "taken" while leased or reserved.
 * Taking a specific index (a static address, a lease restored from disk) leaves its ring slot behind; it
 * is skipped when reached, and `queued` keeps every index in the ring at most once, so the ring never
 * holds more than `count` entries and every operation is O(1) amortised.
 */
class IndexAllocator {
  readonly #taken: Uint8Array;
  readonly #queued: Uint8Array;
  readonly #ring: Uint32Array;
  #head = 0;
  #length = 0;
  /** Taken indices, the server's excluded. */
  inUse = 0;

  constructor(count: number) {
    this.#taken = new Uint8Array(count);
    this.#queued = new Uint8Array(count);
    this.#ring = new Uint32Array(count);
    this.#taken[0] = 1; // the server
    for (let i = 1; i < count; i++) this.#push(i);
  }

  isTaken(index: number): boolean {
    return this.#taken[index] === 1;
  }

  /** The next free index, or -1 when every index is taken. */
  take(): number {
    while (this.#length > 0) {
      const index = this.#ring[this.#head]!;
      this.#head = (this.#head + 1) % this.#ring.length;
      this.#length--;
      this.#queued[index] = 0;
      if (this.#taken[index] === 0) {
        this.#taken[index] = 1;
        this.inUse++;
        return index;
      }
    }
    return -1;
  }

  takeSpecific(index: number): void {
    if (this.#taken[index] === 1) return;
    this.#taken[index] = 1;
    this.inUse++;
  }

  free(index: number): void {
    if (index === 0 || this.#taken[index] === 0) return;
    this.#taken[index] = 0;
    this.inUse--;
    if (this.#queued[index] === 0) this.#push(index);
  }

  #push(index: number): void {
    this.#ring[(this.#head + this.#length) % this.#ring.length] = index;
    this.#length++;
    this.#queued[index] = 1;
  }
}

/** One family: its range, allocator, and who leases or reserves which index. */
class FamilyPool {
  readonly range: HostRange;
  readonly allocator: IndexAllocator;
  readonly leaseOwner = new Map<number, string>();
  readonly staticOwner = new Map<number, string>();

  constructor(range: HostRange) {
    this.range = range;
    this.allocator = new IndexAllocator(range.count);
  }

  /** Returns an index to the free ring once nobody leases or reserves it. */
  releaseIndex(index: number): void {
    if (index < 0 || this.leaseOwner.has(index) || this.staticOwner.has(index)) return;
    this.allocator.free(index);
  }

  /** Index of a static address for `user`: inside the range, not the server's. Throws POOL_INVALID. */
  staticIndex(user: string, address: string): number {
    const index = this.range.indexOf(address);
    if (index === -1) {
      throw facadeError('POOL_INVALID', [
        this.range.cidr,
        `static address ${address} of user "${user}" is not one of its ${this.range.count} leasable addresses`,
      ]);
    }
    if (index === 0)
      throw facadeError('POOL_INVALID', [
        this.range.cidr,
        `static address ${address} of user "${user}" is the server's`,
      ]);
    const owner = this.staticOwner.get(index);
    if (owner !== undefined && owner !== user) {
      throw facadeError('POOL_INVALID', [
        this.range.cidr,
        `static address ${address} is given to both "${owner}" and "${user}"`,
      ]);
    }
    return index;
  }
}

// --- the pool ------------------------------------------------------------------------------------------

export class AddressPool {
  readonly serverIpv4: string;
  readonly serverIpv6: string | undefined;
  readonly prefix4: number;
  readonly prefix6: number | undefined;
  readonly ipv4Cidr: string;
  readonly ipv6Cidr: string | undefined;
  /** Set when the state file could not be used; the pool started without (some) saved leases. */
  readonly loadWarning: string | undefined;

  readonly #v4: FamilyPool;
  readonly #v6: FamilyPool | undefined;
  readonly #graceMs: number;
  readonly #statePath: string | undefined;
  readonly #now: () => number;
  readonly #onSaveError: ((err: Error) => void) | undefined;
  readonly #entries = new Map<string, LeaseEntry>();
  /** Held entries in order of expiry (release order), so expiry stops at the first live one. */
  readonly #held = new Map<string, LeaseEntry>();
  readonly #statics = new Map<string, { v4: number; v6: number }>();
  #generation = 0;
  #dirty = false;
  #saving: Promise<void> | null = null;
  /** When the last write began (0: none yet), so writes come at most every LEASE_SAVE_INTERVAL_MS. */
  #lastWrite = 0;
  /** Ends the wait for the next write early (flush, close); #hurried makes the loop skip the wait. */
  #hurry: (() => void) | undefined;
  #hurried = false;
  #saveError: Error | undefined;
  #closed = false;

  constructor(options: AddressPoolOptions) {
    const graceMs = options.graceMs ?? LEASE_GRACE_MS;
    if (!Number.isFinite(graceMs) || graceMs < 0)
      throw facadeError('POOL_INVALID', [options.ipv4, `grace period ${graceMs} ms must be >= 0`]);
    this.#v4 = new FamilyPool(new HostRange(4, options.ipv4));
    this.#v6 = options.ipv6 === undefined ? undefined : new FamilyPool(new HostRange(6, options.ipv6));
    this.#graceMs = graceMs;
    this.#statePath = options.statePath;
    this.#now = options.now ?? Date.now;
    this.#onSaveError = options.onSaveError;
    this.ipv4Cidr = this.#v4.range.cidr;
    this.ipv6Cidr = this.#v6?.range.cidr;
    this.serverIpv4 = this.#v4.range.address(0);
    this.serverIpv6 = this.#v6?.range.address(0);
    this.prefix4 = this.#v4.range.prefix;
    this.prefix6 = this.#v6?.range.prefix;
    this.loadWarning = this.#statePath === undefined ? undefined : this.#loadState(this.#statePath);
  }

  /**
   * Reserves static addresses for `user` (replacing any earlier reservation; undefined = none). They are
   * never leased to anyone else. An address another user holds in grace is taken from them at once; one
   * another user is actively using stays theirs until they disconnect, and lease(user) fails meanwhile.
   * A static IPv6 address is ignored when the pool has no IPv6 range. Throws POOL_INVALID.
   */
  reserveStatic(user: string, request: StaticAddressRequest): void {
    const v4 = request.staticIpv4 === undefined ? -1 : this.#v4.staticIndex(user, request.staticIpv4);
    const v6 =
      request.staticIpv6 === undefined || this.#v6 === undefined
        ? -1
        : this.#v6.staticIndex(user, request.staticIpv6);
    const previous = this.#statics.get(user) ?? { v4: -1, v6: -1 };
    if (previous.v4 === v4 && previous.v6 === v6) return;
    this.#applyReservation(this.#v4, user, previous.v4, v4);
    if (this.#v6 !== undefined) this.#applyReservation(this.#v6, user, previous.v6, v6);
    if (v4 === -1 && v6 === -1) this.#statics.delete(user);
    else this.#statics.set(user, { v4, v6 });
  }

  /**
   * Addresses for `user`: the ones they already have (active or held in grace), their static ones, or
   * fresh ones. When `request` is given it is authoritative for the user's static addresses (none when
   * both are undefined); without it an earlier reservation stays in force. Throws POOL_EXHAUSTED when no
   * address is free, POOL_INVALID for a static address that is invalid or in use by someone else.
   */
  lease(user: string, request?: StaticAddressRequest): Lease {
    this.#expireHeld();
    if (request !== undefined) this.reserveStatic(user, request);
    const reservation = this.#statics.get(user);
    let entry = this.#entries.get(user);
    if (entry === undefined) {
      const v4 = this.#claim(this.#v4, user, reservation?.v4 ?? -1);
      let v6 = -1;
      if (this.#v6 !== undefined) {
        try {
          v6 = this.#claim(this.#v6, user, reservation?.v6 ?? -1);
        } catch (err) {
          this.#v4.leaseOwner.delete(v4);
          this.#v4.releaseIndex(v4);
          throw err;
        }
      }
      entry = { user, v4, v6, state: 'active', expiresAt: 0, generation: 0 };
      this.#entries.set(user, entry);
    } else {
      // A static address added since the lease was made wins over the dynamic one.
      this.#moveTo(this.#v4, entry, 'v4', reservation?.v4 ?? -1);
      if (this.#v6 !== undefined) this.#moveTo(this.#v6, entry, 'v6', reservation?.v6 ?? -1);
      this.#held.delete(user);
      entry.state = 'active';
      entry.expiresAt = 0;
    }
    entry.generation = ++this.#generation;
    this.#markDirty();
    return this.#toLease(entry);
  }

  /**
   * The session of `user` ended: keep their addresses for the grace period. With `lease`, only when it
   * is the user's current lease (see Lease.generation). Idempotent.
   */
  release(user: string, lease?: Lease): void {
    const entry = this.#entries.get(user);
    if (entry === undefined || entry.state === 'held') return;
    if (lease !== undefined && lease.generation !== entry.generation) return;
    entry.state = 'held';
    entry.expiresAt = this.#now() + this.#graceMs;
    this.#held.delete(user);
    this.#held.set(user, entry);
    this.#markDirty();
  }

  /** The user's current lease (active or held), if any. */
  get(user: string): Lease | undefined {
    this.#expireHeld();
    const entry = this.#entries.get(user);
    return entry === undefined ? undefined : this.#toLease(entry);
  }

  stats(): PoolStats {
    this.#expireHeld();
    let reservedIdle = 0;
    for (const [index] of this.#v4.staticOwner) if (!this.#v4.leaseOwner.has(index)) reservedIdle++;
    return {
      size: this.#v4.range.count - 1,
      active: this.#entries.size - this.#held.size,
      held: this.#held.size,
      reservedIdle,
    };
  }

  /** Every lease, for status output, sorted by IPv4 address. */
  snapshot(): LeaseInfo[] {
    this.#expireHeld();
    return [...this.#entries.values()].sort((a, b) => a.v4 - b.v4).map((entry) => this.#toInfo(entry));
  }

  /** Resolves once the state file reflects every change so far; rejects if the last write failed. */
  async flush(): Promise<void> {
    this.#hurried = true;
    this.#hurry?.();
    while (this.#saving !== null) await this.#saving;
    this.#hurried = false;
    if (this.#saveError !== undefined) throw this.#saveError;
  }

  /** Writes pending state and stops persisting. Idempotent; the pool still answers from memory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#hurried = true;
    this.#hurry?.();
    while (this.#saving !== null) await this.#saving;
    this.#hurried = false;
    this.#closed = true;
  }

  // --- internals ---------------------------------------------------------------------------------------

  /** Takes `reserved` (a static index the user owns) or the next free index; marks `user` as its lessee. */
  #claim(family: FamilyPool, user: string, reserved: number): number {
    let index = reserved;
    if (index !== -1) {
      let holder = family.leaseOwner.get(index);
      const held = holder === undefined ? undefined : this.#held.get(holder);
      // A grace period is a courtesy; the static owner's claim wins over it.
      if (held !== undefined && holder !== user) {
        this.#dropEntry(held);
        holder = undefined;
      }
      if (holder !== undefined && holder !== user) {
        throw facadeError('POOL_INVALID', [
          family.range.cidr,
          `static address ${family.range.address(index)} of user "${user}" is still in use by "${holder}"`,
        ]);
      }
    } else {
      index = family.allocator.take();
      if (index === -1) throw facadeError('POOL_EXHAUSTED', [family.range.cidr, family.allocator.inUse]);
    }
    family.leaseOwner.set(index, user);
    return index;
  }

  #moveTo(family: FamilyPool, entry: LeaseEntry, key: 'v4' | 'v6', reserved: number): void {
    const current = entry[key];
    if (current !== -1 && (reserved === -1 || reserved === current)) return;
    const next = this.#claim(family, entry.user, reserved);
    if (current !== -1) {
      family.leaseOwner.delete(current);
      family.releaseIndex(current);
    }
    entry[key] = next;
  }

  #applyReservation(family: FamilyPool, user: string, previous: number, next: number): void {
    if (previous === next) return;
    if (previous !== -1) {
      family.staticOwner.delete(previous);
      family.releaseIndex(previous);
    }
    if (next === -1) return;
    const holder = family.leaseOwner.get(next);
    const held = holder === undefined ? undefined : this.#held.get(holder);
    if (held !== undefined && holder !== user) this.#dropEntry(held);
    family.staticOwner.set(next, user);
    family.allocator.takeSpecific(next);
  }

  #dropEntry(entry: LeaseEntry): void {
    this.#entries.delete(entry.user);
    this.#held.delete(entry.user);
    this.#v4.leaseOwner.delete(entry.v4);
    this.#v4.releaseIndex(entry.v4);
    if (this.#v6 !== undefined && entry.v6 !== -1) {
      this.#v6.leaseOwner.delete(entry.v6);
      this.#v6.releaseIndex(entry.v6);
    }
    this.#markDirty();
  }

  #expireHeld(): void {
    if (this.#held.size === 0) return;
    const now = this.#now();
    for (const entry of this.#held.values()) {
      if (entry.expiresAt > now) break;
      this.#dropEntry(entry);
    }
  }

  #toLease(entry: LeaseEntry): Lease {
    const ipv4 = this.#v4.range.address(entry.v4);
    const lease: { -readonly [K in keyof Lease]: Lease[K] } = {
      user: entry.user,
      ipv4,
      ipv4Number: ipv4ToNumber(ipv4),
      prefix4: this.prefix4,
      generation: entry.generation,
    };
    if (this.#v6 !== undefined && entry.v6 !== -1) {
      lease.ipv6 = this.#v6.range.address(entry.v6);
      lease.prefix6 = this.#v6.range.prefix;
    }
    return lease;
  }

  #toInfo(entry: LeaseEntry): LeaseInfo {
    const info: { -readonly [K in keyof LeaseInfo]: LeaseInfo[K] } = {
      user: entry.user,
      ipv4: this.#v4.range.address(entry.v4),
      state: entry.state,
    };
    if (this.#v6 !== undefined && entry.v6 !== -1) info.ipv6 = this.#v6.range.address(entry.v6);
    if (entry.state === 'held') info.expiresAt = entry.expiresAt;
    return info;
  }

  // --- persistence -------------------------------------------------------------------------------------

  #markDirty(): void {
    if (this.#statePath === undefined || this.#closed) return;
    this.#dirty = true;
    if (this.#saving === null) this.#saving = this.#saveLoop(this.#statePath);
  }

  /** One writer at a time; changes made while a write is in flight are written right after it. */
  async #saveLoop(path: string): Promise<void> {
    try {
      // Let the current tick's changes (a burst of connects) land in one write.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.#dirty) {
        // Every write serializes every lease: a mass connect of N clients would cost N writes of up to N
        // leases each. At most one write per interval (a crash loses at most that much of lease history).
        const wait = this.#lastWrite + LEASE_SAVE_INTERVAL_MS - Date.now();
        if (wait > 0 && !this.#hurried) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, wait);
            timer.unref();
            this.#hurry = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.#hurry = undefined;
        }
        this.#dirty = false;
        this.#lastWrite = Date.now();
        try {
          await writeFileAtomic(path, this.#serializeState());
          this.#saveError = undefined;
        } catch (err) {
          const error = facadeError(
            'STATE_DIR',
            [dirname(path), `cannot save leases to ${path}: ${String(err)}`],
            {
              cause: err,
            },
          );
          this.#saveError = error;
          this.#onSaveError?.(error);
        }
      }
    } finally {
      this.#saving = null;
    }
  }

  #serializeState(): string {
    const leases = [...this.#entries.values()].map((entry) => this.#toInfo(entry));
    const state: Record<string, unknown> = { version: STATE_VERSION, ipv4: this.ipv4Cidr };
    if (this.ipv6Cidr !== undefined) state.ipv6 = this.ipv6Cidr;
    state.leases = leases;
    return `${JSON.stringify(state)}\n`;
  }

  /**
   * Restores leases from a previous run. The sessions of that run are gone, so its active leases become
   * held for a fresh grace period. Never throws: an unusable file is moved aside (path.corrupt) and the
   * pool starts empty, with the reason returned for the server to log.
   */
  #loadState(path: string): string | undefined {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      return `lease state ${path} cannot be read (${String(err)}); starting with no saved leases`;
    }
    let records: unknown[];
    try {
      if (text.length > MAX_POOL_STATE_BYTES) throw new Error(`larger than ${MAX_POOL_STATE_BYTES} bytes`);
      const state = JSON.parse(text) as unknown;
      if (typeof state !== 'object' || state === null) throw new Error('not a JSON object');
      const { version, leases } = state as { version?: unknown; leases?: unknown };
      if (version !== STATE_VERSION)
        throw new Error(`version ${JSON.stringify(version)}, expected ${STATE_VERSION}`);
      if (!Array.isArray(leases)) throw new Error('"leases" is not an array');
      records = leases;
    } catch (err) {
      const aside = `${path}.corrupt`;
      let moved: string;
      try {
        renameSync(path, aside);
        moved = `moved it to ${aside}`;
      } catch (renameErr) {
        moved = `could not move it aside (${String(renameErr)})`;
      }
      return `lease state ${path} is unusable (${err instanceof Error ? err.message : String(err)}); ${moved} and started with no saved leases`;
    }

    const now = this.#now();
    const restored: LeaseEntry[] = [];
    let skipped = 0;
    for (const record of records) {
      const entry = this.#restoreEntry(record, now);
      if (entry === undefined) skipped++;
      else restored.push(entry);
    }
    // Held map order must be expiry order for #expireHeld's early stop.
    restored.sort((a, b) => a.expiresAt - b.expiresAt);
    for (const entry of restored) this.#held.set(entry.user, entry);
    if (restored.length > 0 || skipped > 0) this.#markDirty();
    if (skipped === 0) return undefined;
    return `lease state ${path}: ignored ${skipped} of ${records.length} saved leases (expired, duplicated, malformed or outside pool ${this.ipv4Cidr}${this.ipv6Cidr === undefined ? '' : ` / ${this.ipv6Cidr}`})`;
  }

  #restoreEntry(record: unknown, now: number): LeaseEntry | undefined {
    if (typeof record !== 'object' || record === null) return undefined;
    const { user, ipv4, ipv6, state, expiresAt } = record as Record<string, unknown>;
    if (typeof user !== 'string' || user.length === 0 || this.#entries.has(user)) return undefined;
    if (typeof ipv4 !== 'string') return undefined;
    let expiry: number;
    if (state === 'active') expiry = now + this.#graceMs;
    else if (state === 'held' && typeof expiresAt === 'number' && expiresAt > now) expiry = expiresAt;
    else return undefined;
    const v4 = this.#v4.range.indexOf(ipv4);
    if (v4 <= 0 || this.#v4.allocator.isTaken(v4)) return undefined;
    let v6 = -1;
    if (this.#v6 !== undefined && typeof ipv6 === 'string') {
      const index = this.#v6.range.indexOf(ipv6);
      // An IPv6 address that no longer fits is dropped; the user gets a new one on reconnect.
      if (index > 0 && !this.#v6.allocator.isTaken(index)) v6 = index;
    }
    this.#v4.allocator.takeSpecific(v4);
    this.#v4.leaseOwner.set(v4, user);
    if (v6 !== -1) {
      this.#v6!.allocator.takeSpecific(v6);
      this.#v6!.leaseOwner.set(v6, user);
    }
    const entry: LeaseEntry = { user, v4, v6, state: 'held', expiresAt: expiry, generation: 0 };
    this.#entries.set(user, entry);
    return entry;
  }
}
