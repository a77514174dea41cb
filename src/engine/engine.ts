// The server's tunnel engine. One TUN, one router, many sessions; the data path reads in one direction
// each way:
//
//   client ─TLS─► Session (decode, anti-spoof, count) ─► onPacket ─► router: another client? ─► its Session
//                                                                     └─ else ─► batch ─► TUN (one write per chunk)
//   TUN batch ─► onBatch ─► router.lookupDestination ─► Session.queuePacket (frame into slab) ─► one socket
//                                                          write per session per batch (microtask flush)
//
// All state lives on the instance (no module globals): with --workers N each worker process builds one
// engine on its own queue of a multi-queue TUN (server/worker.ts), and leases come from the primary
// (AddressLeases returns a promise there); in one process the pool answers at once.
//
// The engine takes any Duplex that finished a tunnel handshake (attach), whatever transport carried it;
// it implements front/acceptor.ts's TunnelHost by shape, without importing the front.
//
// Failures: a session's own errors end that session (session.ts). The TUN failing under us (deleted, its
// namespace gone) ends every session at once, so the engine stops and reports it to `onFatal`: the owner
// (server/server.ts) shuts the server down and exits non-zero.

import type { Duplex } from 'node:stream';
import { facadeError, isFacadeError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { addressBytes, ipv4ToNumber, ipv6ToKey, parseCidr } from '../net/packet.js';
import type { PacketBatch, TunLike } from '../net/tun.js';
import { type ControlMessage, DisconnectReason, describeReason, type Route } from '../protocol/control.js';
import { OFFLOAD_HEADER_SIZE, type OffloadHeader } from '../protocol/frame.js';
import type { TransportName, TunnelIdentity } from '../protocol/handshake.js';
import { SessionBuffers } from '../session/buffers.js';
import { KeepaliveWheel } from '../session/keepalive-wheel.js';
import {
  type AllowedSources,
  Session,
  type SessionCloseReason,
  type SessionSink,
  type SessionStats,
} from '../session/session.js';
import { TunWriteBatch } from '../session/tun-write-batch.js';
import type { Lease, StaticAddressRequest } from './pool.js';
import { Router } from './router.js';

/** The pool's shape: prefixes and the server's addresses (what CONFIG pushes). AddressPool has it. */
export interface PoolShape {
  readonly serverIpv4: string;
  readonly serverIpv6: string | undefined;
  readonly prefix4: number;
  readonly prefix6: number | undefined;
  readonly ipv4Cidr: string;
  readonly ipv6Cidr: string | undefined;
}

/** Just the shape of a pool, as plain data (for a worker's init message). */
export function poolShape(pool: PoolShape): PoolShape {
  const { serverIpv4, serverIpv6, prefix4, prefix6, ipv4Cidr, ipv6Cidr } = pool;
  return { serverIpv4, serverIpv6, prefix4, prefix6, ipv4Cidr, ipv6Cidr };
}

/**
 * Where the engine gets client addresses: the AddressPool itself in one process; in a worker, the
 * primary's lease service over IPC (a promise). The pool's shape (prefixes, the server's addresses) is
 * what CONFIG pushes.
 */
export interface AddressLeases extends PoolShape {
  /** Throws (or rejects with) FACADE_ERR_POOL_EXHAUSTED / POOL_INVALID with the reason. */
  lease(user: string, request: StaticAddressRequest): Lease | Promise<Lease>;
  release(user: string, lease: Lease): void;
}

export interface EngineOptions {
  readonly tun: TunLike;
  readonly pool: AddressLeases;
  readonly logger: Logger;
  readonly mtu: number;
  readonly keepaliveMs: number;
  /** Let clients reach each other through the server (default off). */
  readonly clientToClient: boolean;
  /** Extra prefixes pushed to clients as routes (the pools themselves always are). */
  readonly routes: readonly string[];
  readonly dns: readonly string[];
  /** Domains the pushed DNS servers answer for. */
  readonly dnsDomains: readonly string[];
  /** A user's static addresses (facade user add --static-ipv4), if any. */
  readonly staticAddresses: (user: string) => StaticAddresses | undefined;
  /** The engine stopped on a failure no session can survive (the TUN failed); called once. */
  readonly onFatal: (err: Error) => void;
  /** A user's shaping rate in bytes per second each way, 0 for none (their policy); default none. */
  readonly rateLimitOf?: ((user: string) => number) | undefined;
}

/** One user's traffic through this engine since it started, ended sessions included. */
export interface UserCounters {
  bytesIn: number;
  bytesOut: number;
  packetsIn: number;
  packetsOut: number;
}

/** Packets dropped by the sessions of this engine since it started, by reason (ended sessions included). */
export interface DropCounters {
  spoof: number;
  queueFull: number;
  rateLimit: number;
  invalid: number;
  offload: number;
}

/** What accounting and metrics read of an engine: cumulative, so a reader takes differences. */
export interface EngineCounters {
  readonly users: Record<string, UserCounters>;
  readonly drops: DropCounters;
}

/**
 * A user's data allowance on this engine: their session ends (with `message`) once the user's
 * bytesIn + bytesOut through this engine (UserCounters, cumulative) reach `limit`.
 */
export interface ByteAllowance {
  readonly limit: number;
  readonly message: string;
}

/** What a reload may change for the sessions that start after it. */
export interface PushedSettings {
  readonly routes: readonly string[];
  readonly dns: readonly string[];
  readonly dnsDomains: readonly string[];
  readonly keepaliveMs: number;
}

export interface StaticAddresses {
  readonly staticIpv4?: string | undefined;
  readonly staticIpv6?: string | undefined;
}

/** Where a stream came from, as the transport that carried it tells (front/acceptor.ts's AttachMeta). */
export interface AttachMeta {
  readonly remote: string;
  readonly transport: TransportName;
}

/** One session as `facade status`, status.json and logs show it. */
export interface SessionStatus extends SessionStats {
  readonly user: string;
  readonly remote: string;
  readonly transport: TransportName;
  readonly ipv4: string;
  readonly ipv6: string | undefined;
  /** ISO 8601. */
  readonly since: string;
  /** ISO 8601: when the client was last heard from, to the keepalive interval. */
  readonly lastSeen: string;
}

/** Per-session data the engine keeps beside the session. */
interface Peer {
  readonly session: Session;
  readonly user: string;
  readonly meta: AttachMeta;
  readonly lease: Lease;
  readonly ipv4: number;
  readonly ipv6Key: string | undefined;
}

export interface EngineStats {
  sessions: number;
  /** Packets from the TUN for an address no session holds. */
  unknownDestinationDrops: number;
  /** Client-to-client packets refused because clientToClient is off. */
  clientToClientDrops: number;
  /** Packets the TUN did not take (its queue was full). */
  tunWriteDrops: number;
}

export class TunnelEngine implements SessionSink {
  private unknownDestinationDrops = 0;
  private clientToClientDrops = 0;
  private readonly options: EngineOptions;
  /** The pools as prefixes: a client's packet to another pool address is client-to-client traffic. */
  private readonly pool4: { network: number; mask: number; server: number };
  private readonly pool6: { server: Buffer; bits: number } | undefined;
  private readonly router = new Router<Peer>();
  private readonly peers = new Map<Session, Peer>();
  private readonly byUser = new Map<string, Peer>();
  /** Packets decoded from one socket chunk, written to the TUN in one batch. */
  private readonly toTun: TunWriteBatch;
  /** Output slabs and the straddle buffer, reused by every session of this engine. */
  private readonly buffers = new SessionBuffers();
  /** The sessions' keepalives, one timer per interval in use (a reload may change it for new sessions). */
  private readonly keepaliveWheels = new Map<number, KeepaliveWheel>();
  /** The engine said once that a socket could not read into the shared buffer. */
  private bufferReadsMissedSaid = false;
  /** The TUN has IFF_VNET_HDR: packets carry virtio_net_hdr metadata and may be GSO super-packets. */
  private readonly vnetHdr: boolean;
  private closed = false;
  /** What CONFIG gives a new session; reconfigure() changes it for sessions that start later. */
  private pushed: PushedSettings;
  /** Counts sessions started and ended: a status reader (a worker's report) sees a change without diffing. */
  private sessionChanges = 0;
  /** Traffic of ended sessions, per user, and their drops: counters() adds the live sessions'. */
  private readonly endedUsers = new Map<string, UserCounters>();
  private readonly endedDrops: DropCounters = {
    spoof: 0,
    queueFull: 0,
    rateLimit: 0,
    invalid: 0,
    offload: 0,
  };
  /** Data quotas in force (setAllowances). */
  private allowances: ReadonlyMap<string, ByteAllowance> = new Map();

  constructor(options: EngineOptions) {
    this.options = options;
    this.pushed = {
      routes: options.routes,
      dns: options.dns,
      dnsDomains: options.dnsDomains,
      keepaliveMs: options.keepaliveMs,
    };
    this.vnetHdr = options.tun.vnetHdr;
    const v4 = parseCidr(options.pool.ipv4Cidr);
    const mask = v4.prefix === 0 ? 0 : (0xffffffff << (32 - v4.prefix)) >>> 0;
    const server = ipv4ToNumber(options.pool.serverIpv4);
    this.pool4 = { network: (ipv4ToNumber(v4.address) & mask) >>> 0, mask, server };
    const v6 = options.pool.ipv6Cidr === undefined ? undefined : parseCidr(options.pool.ipv6Cidr);
    const server6 = options.pool.serverIpv6;
    this.pool6 =
      v6 === undefined || server6 === undefined
        ? undefined
        : { server: addressBytes(server6), bits: v6.prefix };
    this.toTun = new TunWriteBatch(options.tun, this.vnetHdr, this.fail);
    options.tun.onError(this.fail);
    options.tun.onBatch(this.vnetHdr ? this.onTunVnetBatch : this.onTunBatch);
  }

  /** A snapshot of the engine's counters (sessions and drops are read where they live). */
  get stats(): EngineStats {
    return {
      sessions: this.peers.size,
      unknownDestinationDrops: this.unknownDestinationDrops,
      clientToClientDrops: this.clientToClientDrops,
      tunWriteDrops: this.toTun.drops,
    };
  }

  /** New pushed routes, DNS and keepalive (a reload): sessions that start from now get them. */
  reconfigure(pushed: PushedSettings): void {
    this.pushed = pushed;
  }

  /** Every user's traffic and the drops by reason since the engine started (monotonic). */
  counters(): EngineCounters {
    const users: Record<string, UserCounters> = Object.create(null);
    for (const [user, ended] of this.endedUsers) users[user] = { ...ended };
    const drops = { ...this.endedDrops };
    for (const peer of this.peers.values()) {
      const stats = peer.session.stats;
      const total = users[peer.user] ?? { bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0 };
      addUserCounters(total, stats);
      users[peer.user] = total;
      addDrops(drops, stats);
    }
    return { users, drops };
  }

  /** Changes a user's shaping rate (bytes per second each way, 0: none) on their running session. */
  setRateLimit(user: string, bytesPerSecond: number): void {
    this.byUser.get(user)?.session.setRateLimit(bytesPerSecond);
  }

  /** The users with a running session here. */
  users(): string[] {
    return [...this.byUser.keys()];
  }

  /** Data quotas: each listed user's session ends once their counters reach the limit; others have none. */
  setAllowances(allowances: ReadonlyMap<string, ByteAllowance>): void {
    const before = this.allowances;
    this.allowances = allowances;
    for (const [user, peer] of this.byUser) {
      if (allowances.get(user) !== before.get(user)) this.applyAllowance(peer);
    }
  }

  private applyAllowance(peer: Peer): void {
    const allowance = this.allowances.get(peer.user);
    if (allowance === undefined) {
      peer.session.setByteBudget(Number.POSITIVE_INFINITY, () => undefined);
      return;
    }
    const ended = this.endedUsers.get(peer.user);
    const before = ended === undefined ? 0 : ended.bytesIn + ended.bytesOut;
    const session = peer.session;
    session.setByteBudget(allowance.limit - before, () =>
      session.close(DisconnectReason.ADMIN, allowance.message),
    );
  }

  /** Grows whenever a session starts or ends. */
  get changes(): number {
    return this.sessionChanges;
  }

  /** Every session, for `facade status` (server/status.ts). */
  sessions(): SessionStatus[] {
    return [...this.peers.values()].map((peer) => ({
      user: peer.user,
      remote: peer.meta.remote,
      transport: peer.meta.transport,
      ipv4: peer.lease.ipv4,
      ipv6: peer.lease.ipv6,
      since: new Date(peer.session.startedAt).toISOString(),
      lastSeen: new Date(peer.session.lastHeardAt).toISOString(),
      ...peer.session.stats,
    }));
  }

  /** The wheel for `intervalMs`; one whose sessions have all ended stops its timer and is dropped later. */
  private keepaliveWheel(intervalMs: number): KeepaliveWheel | undefined {
    if (intervalMs <= 0) return undefined;
    for (const [ms, wheel] of this.keepaliveWheels) {
      if (ms !== intervalMs && wheel.size === 0) this.keepaliveWheels.delete(ms);
    }
    let wheel = this.keepaliveWheels.get(intervalMs);
    if (wheel === undefined) {
      wheel = new KeepaliveWheel(intervalMs);
      this.keepaliveWheels.set(intervalMs, wheel);
    }
    return wheel;
  }

  /**
   * Takes an authenticated stream whose handshake is done (the 101 or its equivalent was sent). Leases an
   * address, pushes CONFIG. On pool exhaustion the client is told why, in a DISCONNECT, and the session ends.
   */
  attach(stream: Duplex, identity: TunnelIdentity, initialBytes: Buffer, meta: AttachMeta): void {
    const request = { user: identity.user, offload: identity.capabilities.offload };
    const logger = this.options.logger.child({
      user: request.user,
      remote: meta.remote,
      transport: meta.transport,
    });
    if (this.closed) {
      stream.destroy();
      return;
    }
    const open = (allowedSources: AllowedSources): Session =>
      new Session({
        socket: stream,
        sink: this,
        logger,
        keepaliveMs: this.pushed.keepaliveMs,
        keepaliveWheel: this.keepaliveWheel(this.pushed.keepaliveMs),
        allowedSources,
        initialBytes,
        offload: this.vnetHdr,
        mtu: this.options.mtu,
        buffers: this.buffers,
        bufferReads: true,
      });
    if (this.vnetHdr && !request.offload) {
      // Our TUN hands over GSO super-packets and partial checksums; a peer without offload could not
      // take them. Every facade client announces the capability: this is a foreign or outdated one.
      // Refused before anything changes, so it cannot push out the user's working session.
      logger.warn('client lacks the offload capability this server uses; refused');
      open(NO_SOURCES).close(
        DisconnectReason.PROTOCOL_ERROR,
        'this server requires the offload capability (Facade-Capabilities: offload)',
      );
      return;
    }
    let leased: Lease | Promise<Lease>;
    try {
      leased = this.options.pool.lease(request.user, this.options.staticAddresses(request.user) ?? {});
    } catch (err) {
      if (!isFacadeError(err)) throw err;
      this.refuse(open, logger, err.message);
      return;
    }
    if (!(leased instanceof Promise)) {
      this.start(open, logger, request.user, meta, leased);
      return;
    }
    // A worker asks the primary. The stream is not read meanwhile (no listener yet): what the client
    // sends waits in the socket. A stream that ended, or an engine that closed, gives the address back.
    leased.then(
      (lease) => {
        if (this.closed || stream.destroyed) {
          this.options.pool.release(request.user, lease);
          stream.destroy();
          return;
        }
        this.start(open, logger, request.user, meta, lease);
      },
      (err: unknown) => {
        if (this.closed || stream.destroyed) {
          stream.destroy();
          return;
        }
        this.refuse(open, logger, err instanceof Error ? err.message : String(err));
      },
    );
  }

  /** No address for this client: it is told why in a DISCONNECT and the session ends. */
  private refuse(open: (sources: AllowedSources) => Session, logger: Logger, reason: string): void {
    logger.warn({ reason }, 'no address for client: pool exhausted');
    open(NO_SOURCES).close(DisconnectReason.POOL_EXHAUSTED, reason);
  }

  /** The client has its addresses: the session starts, routes to it, and CONFIG goes out. */
  private start(
    open: (sources: AllowedSources) => Session,
    logger: Logger,
    user: string,
    meta: AttachMeta,
    lease: Lease,
  ): void {
    // Same user again: the newer connection wins (a client that lost its link reconnects before the old
    // session's dead-peer detection fires).
    this.closeUser(user);
    const ipv4 = ipv4ToNumber(lease.ipv4);
    const ipv6Key = lease.ipv6 === undefined ? undefined : ipv6ToKey(lease.ipv6);
    const session = open({ ipv4, ipv6Key });
    if (session.bufferReadsMissed && !this.bufferReadsMissedSaid) {
      this.bufferReadsMissedSaid = true;
      logger.warn(
        'tunnel socket reads a fresh Buffer per read: this Node did not allow reads into the shared buffer (net/socket-reads.ts); it works, with more garbage',
      );
    }
    const peer: Peer = { session, user, meta, lease, ipv4, ipv6Key };
    this.peers.set(session, peer);
    this.byUser.set(user, peer);
    this.sessionChanges++;
    this.router.add(peer, peer.ipv4, peer.ipv6Key);
    const rate = this.options.rateLimitOf?.(user) ?? 0;
    if (rate !== 0) session.setRateLimit(rate);
    if (this.allowances.has(user)) this.applyAllowance(peer);
    const pool = this.options.pool;
    const routes = [pool.ipv4Cidr, ...this.pushed.routes];
    if (lease.ipv6 !== undefined && pool.ipv6Cidr !== undefined) routes.push(pool.ipv6Cidr);
    session.sendControl({
      type: 'config',
      ipv4: { address: lease.ipv4, prefix: pool.prefix4 },
      ipv6: lease.ipv6 === undefined ? undefined : { address: lease.ipv6, prefix: pool.prefix6 ?? 64 },
      serverIpv4: pool.serverIpv4,
      serverIpv6: lease.ipv6 === undefined ? undefined : pool.serverIpv6,
      mtu: this.options.mtu,
      routes: routes.map(toRoute),
      dns: [...this.pushed.dns],
      dnsDomains: [...this.pushed.dnsDomains],
      keepaliveMs: this.pushed.keepaliveMs,
      offload: this.vnetHdr,
    });
    logger.info({ ipv4: lease.ipv4, ipv6: lease.ipv6 }, 'client connected, address assigned');
  }

  /**
   * Ends `user`'s session here, if any, as replaced: they connected again (here, or on another worker,
   * which the primary tells this one).
   */
  closeUser(
    user: string,
    reason: number = DisconnectReason.REPLACED,
    message = 'the same user connected again',
  ): void {
    const previous = this.byUser.get(user);
    if (previous !== undefined) previous.session.close(reason, message);
  }

  // --- TUN → clients -------------------------------------------------------------------------------

  private readonly onTunBatch = (batch: PacketBatch): void => {
    const { buffer, offsets, lengths, count } = batch;
    for (let i = 0; i < count; i++) {
      const offset = offsets[i] as number;
      const peer = this.router.lookupDestination(buffer, offset);
      if (peer === undefined) {
        this.unknownDestinationDrops++;
        continue;
      }
      peer.session.queuePacket(buffer, offset, lengths[i] as number);
    }
  };

  /** The same with IFF_VNET_HDR: each packet is its 10-byte virtio_net_hdr, then the IP packet. */
  private readonly onTunVnetBatch = (batch: PacketBatch): void => {
    const { buffer, offsets, lengths, count } = batch;
    for (let i = 0; i < count; i++) {
      const offset = offsets[i] as number;
      const peer = this.router.lookupDestination(buffer, offset + OFFLOAD_HEADER_SIZE);
      if (peer === undefined) {
        this.unknownDestinationDrops++;
        continue;
      }
      peer.session.queueVnetPacket(buffer, offset, lengths[i] as number);
    }
  };

  // --- clients → TUN (SessionSink) --------------------------------------------------------------------

  onPacket(_session: Session, packet: Buffer, offload: OffloadHeader | null): void {
    const other = this.router.lookupDestination(packet, 0);
    if (other !== undefined) {
      if (this.options.clientToClient) other.session.queueFrom(packet, offload);
      else this.clientToClientDrops++;
      return;
    }
    // Another client's address that no session here holds (it is on another worker, or offline): with
    // client-to-client off the kernel must not get it either, or a forwarding host would deliver it.
    if (!this.options.clientToClient && this.toOtherClient(packet)) {
      this.clientToClientDrops++;
      return;
    }
    this.toTun.add(packet, offload);
  }

  /** Whether the packet's destination is in a pool and is not the server's own address there. */
  private toOtherClient(packet: Buffer): boolean {
    const version = packet[0]! >> 4;
    if (version === 4) {
      const destination = packet.readUInt32BE(16);
      const { network, mask, server } = this.pool4;
      return (destination & mask) >>> 0 === network && destination !== server;
    }
    const pool6 = this.pool6;
    if (version !== 6 || pool6 === undefined) return false;
    const whole = pool6.bits >> 3;
    if (packet.compare(pool6.server, 0, whole, 24, 24 + whole) !== 0) return false;
    const rest = pool6.bits & 7;
    if (rest !== 0 && ((packet[24 + whole]! ^ pool6.server[whole]!) & (0xff00 >> rest) & 0xff) !== 0)
      return false;
    return packet.compare(pool6.server, 0, 16, 24, 40) !== 0;
  }

  onChunkEnd(_session: Session): void {
    this.toTun.flush();
  }

  /** Echo and DISCONNECT are the session's own business; anything else from a client (CONFIG) is an error. */
  onControl(_session: Session, message: ControlMessage): void {
    throw facadeError('CONTROL_INVALID', [`a client may not send ${message.type.toUpperCase()}`]);
  }

  onClose(session: Session, reason: SessionCloseReason): void {
    const peer = this.peers.get(session);
    if (peer === undefined) return;
    this.peers.delete(session);
    this.sessionChanges++;
    if (this.byUser.get(peer.user) === peer) this.byUser.delete(peer.user);
    this.router.remove(peer, peer.ipv4, peer.ipv6Key);
    const ended = this.endedUsers.get(peer.user) ?? { bytesIn: 0, bytesOut: 0, packetsIn: 0, packetsOut: 0 };
    addUserCounters(ended, session.stats);
    this.endedUsers.set(peer.user, ended);
    addDrops(this.endedDrops, session.stats);
    // The lease names its generation: a replaced session closing late cannot release its successor's.
    this.options.pool.release(peer.user, peer.lease);
    this.options.logger.info(
      {
        user: peer.user,
        remote: peer.meta.remote,
        transport: peer.meta.transport,
        ipv4: peer.lease.ipv4,
        reason: describeReason(reason.code),
        message: reason.message,
        byPeer: reason.byPeer,
        ...session.stats,
        seconds: Math.round((Date.now() - session.startedAt) / 1000),
      },
      'client disconnected',
    );
  }

  /** The TUN failed (read or write): every session ends with INTERNAL and the owner hears of it once. */
  private readonly fail = (err: unknown): void => {
    if (this.closed) return;
    const error = err instanceof Error ? err : new Error(String(err));
    this.options.logger.error({ err: isFacadeError(error) ? error.code : undefined }, error.message);
    this.closeAll(DisconnectReason.INTERNAL, 'server error: its network device failed');
    this.options.onFatal(error);
  };

  /** Ends every session with SERVER_SHUTDOWN. In-flight packets still queued on sockets are flushed. */
  close(): void {
    this.closeAll(DisconnectReason.SERVER_SHUTDOWN, 'server shutting down');
  }

  private closeAll(reason: number, message: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const session of [...this.peers.keys()]) session.close(reason, message);
  }
}

function addUserCounters(total: UserCounters, stats: SessionStats): void {
  total.bytesIn += stats.bytesIn;
  total.bytesOut += stats.bytesOut;
  total.packetsIn += stats.packetsIn;
  total.packetsOut += stats.packetsOut;
}

function addDrops(total: DropCounters, stats: SessionStats): void {
  total.spoof += stats.spoofDrops;
  total.queueFull += stats.queueDrops;
  total.rateLimit += stats.rateDrops;
  total.invalid += stats.invalidDrops;
  total.offload += stats.offloadDrops;
}

/** A session that never gets an address may send from none (-1 is no IPv4 address's number). */
const NO_SOURCES: AllowedSources = { ipv4: -1 };

function toRoute(cidr: string): Route {
  const parsed = parseCidr(cidr);
  return { family: parsed.family, address: parsed.address, prefix: parsed.prefix };
}
