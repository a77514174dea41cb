// The client: one TUN that lives as long as the process, one session at a time, reconnecting with
// backoff. Keeping the TUN across reconnects keeps the address and the applications' sockets alive.
//
//   TUN batch ─► onTunBatch ─► Session.queuePacket (frame into slab) ─► one socket write per batch
//   socket ─► Session (decode, count) ─► onPacket ─► batch ─► TUN (one write per socket chunk)

import { readFileSync } from 'node:fs';
import type { ClientConfig } from '../config/schema.js';
import { facadeError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { PacketBatch, TunLike } from '../net/tun.js';
import {
  type ConfigMessage,
  type ControlMessage,
  DisconnectReason,
  describeReason,
} from '../protocol/control.js';
import { deriveUserKey, keyFromSeed, passwordFromText, type UserKey } from '../protocol/credentials.js';
import type { OffloadHeader } from '../protocol/frame.js';
import type { TransportName } from '../protocol/handshake.js';
import { Session, type SessionCloseReason, type SessionSink } from '../session/session.js';
import { TunWriteBatch } from '../session/tun-write-batch.js';
import { Backoff } from './backoff.js';
import { connectTunnel, NameNotFoundError, PermanentConnectError, tunnelTarget } from './connect.js';
import { ClientNetwork } from './routes.js';

/** What the client needs of the host's network configuration: routes.ts's ClientNetwork by default. */
export interface ClientNetworkLike {
  /** Applies a CONFIG to the TUN (again on every reconnect); returns the routes now in place. */
  apply(
    config: ConfigMessage,
    options: { fullTunnel: boolean; serverAddress: string; dns: boolean },
  ): Promise<string[]>;
  /** Removes what apply() added. */
  undo(): Promise<void>;
}

export interface TunnelClientOptions {
  readonly config: ClientConfig;
  readonly logger: Logger;
  /** Opens the TUN; injected so tests and the CLI decide names and flags. */
  readonly openTun: (options: { vnetHdr: boolean }) => TunLike;
  /**
   * Configures the host for a TUN (addresses, routes, DNS). Default: ClientNetwork, which runs `ip` and
   * needs root; a TUN without a kernel device (net/memory-tun.ts) needs a network that does nothing.
   */
  readonly network?: (tunName: string, logger: Logger) => ClientNetworkLike;
}

const hostNetwork = (tunName: string, logger: Logger): ClientNetworkLike =>
  new ClientNetwork(tunName, logger);

export class TunnelClient implements SessionSink {
  private readonly config: ClientConfig;
  private readonly logger: Logger;
  private readonly openTun: (options: { vnetHdr: boolean }) => TunLike;
  private readonly createNetwork: (tunName: string, logger: Logger) => ClientNetworkLike;
  private readonly backoff = new Backoff();
  private tun: TunLike | undefined;
  private network: ClientNetworkLike | undefined;
  private session: Session | undefined;
  /** Sessions that have had their CONFIG. */
  private readonly configured = new WeakSet<Session>();
  private serverAddress = '';
  /** TLS ends before the server (a proxy in front): sign with the zero binding from the start. */
  private unbound = false;
  /** The transport of the current (or last) session, as connect.ts resolved it. */
  transport: TransportName | undefined;
  /** The user's key pair for this server (its tunnel path is the realm), derived once at start. */
  private userKey: UserKey | undefined;
  private toTun: TunWriteBatch | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** A session came up once: from then on a name that stops resolving is an outage to wait out. */
  private everConnected = false;
  private settleStop: (() => void) | undefined;
  /** Resolves when the client has stopped for good (stop(), or a permanent error). */
  readonly done: Promise<void>;
  /** Set when the client gave up for a reason another attempt cannot fix. */
  fatalError: Error | undefined;
  /** Packets read from the TUN while no session was up. */
  noSessionDrops = 0;

  constructor(options: TunnelClientOptions) {
    this.config = options.config;
    this.logger = options.logger;
    this.openTun = options.openTun;
    this.createNetwork = options.network ?? hostNetwork;
    this.done = new Promise((resolve) => {
      this.settleStop = resolve;
    });
  }

  async start(): Promise<void> {
    const { key, passwordFile, user, url } = this.config;
    if (key !== undefined) {
      // An invite's key: the seed itself, no scrypt.
      this.userKey = keyFromSeed(user, Buffer.from(key, 'base64url'));
    } else {
      const password = passwordFromText(readFileSync(passwordFile as string, 'utf8'));
      // Slow (scrypt) once; each connection then only signs (connect.ts).
      this.userKey = await deriveUserKey(tunnelTarget(url), user, password);
    }
    void this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    if (this.stopped) return;
    try {
      const connection = await connectTunnel(this.config, this.userKey as UserKey, { unbound: this.unbound });
      if (connection.unbound && !this.unbound && !this.config.plaintext)
        this.logger.info(
          'the server took the credential without our TLS binding: TLS ends at a proxy or CDN in front of it, which sees the tunnel in clear; time and nonce bind the credential',
        );
      this.unbound = connection.unbound;
      if (this.stopped) {
        connection.stream.destroy();
        return;
      }
      this.serverAddress = connection.serverAddress;
      this.transport = connection.transport;
      const session = new Session({
        socket: connection.stream,
        sink: this,
        logger: this.logger,
        keepaliveMs: this.config.keepaliveMs,
        initialBytes: connection.rest,
        // The socket reads into one reused buffer: no garbage per read on the way to the TUN.
        pushedReads: connection.pushedReads,
      });
      this.session = session;
      if (connection.pushedReads) connection.onRead(session.receive);
      connection.start();
    } catch (err) {
      // A name that does not exist and never did for us is a typo, not an outage: say so and stop.
      if (err instanceof PermanentConnectError || (err instanceof NameNotFoundError && !this.everConnected)) {
        await this.giveUp(err);
        return;
      }
      this.scheduleReconnect(err instanceof Error ? err.message : String(err));
    }
  }

  /** Stops for good on a failure another attempt cannot fix; the CLI exits non-zero with its message. */
  private async giveUp(err: Error): Promise<void> {
    this.fatalError = err;
    this.logger.error(err.message);
    await this.stop();
  }

  private scheduleReconnect(why: string): void {
    if (this.stopped) return;
    const delay = this.backoff.next();
    // One line that says what is wrong and that the client keeps trying (the msg must not contain
    // "connected:", which is what the line of a working tunnel says).
    this.logger.warn(
      { reason: why, retryInMs: delay },
      `not connected (${why}); will retry in ${(delay / 1000).toFixed(1)} s`,
    );
    this.reconnectTimer = setTimeout(() => void this.connectLoop(), delay);
  }

  // --- TUN → server ----------------------------------------------------------------------------------

  private readonly onTunBatch = (batch: PacketBatch): void => {
    const session = this.session;
    if (session === undefined || session.isClosed) {
      this.noSessionDrops += batch.count;
      return;
    }
    const { buffer, offsets, lengths, count } = batch;
    if (this.tun?.vnetHdr === true) {
      for (let i = 0; i < count; i++)
        session.queueVnetPacket(buffer, offsets[i] as number, lengths[i] as number);
    } else {
      for (let i = 0; i < count; i++) session.queuePacket(buffer, offsets[i] as number, lengths[i] as number);
    }
  };

  /** The TUN failed under us (deleted): nothing can pass any more, so the client stops with the error. */
  private readonly onTunError = (err: unknown): void => {
    if (this.stopped) return;
    void this.giveUp(err instanceof Error ? err : new Error(String(err)));
  };

  // --- server → TUN (SessionSink) --------------------------------------------------------------------

  onPacket(_session: Session, packet: Buffer, offload: OffloadHeader | null): void {
    // Before the TUN exists (CONFIG still being applied) there is nowhere to put a packet.
    if (this.toTun === undefined) return;
    this.toTun.add(packet, offload);
  }

  onChunkEnd(_session: Session): void {
    this.toTun?.flush();
  }

  onControl(session: Session, message: ControlMessage): void {
    if (message.type !== 'config') return;
    // A session is configured once: a second CONFIG (more routes, other DNS seconds later) is not a
    // refresh we take on trust but a protocol error that ends the session (docs/PROTOCOL.md).
    if (this.configured.has(session))
      throw facadeError('CONTROL_INVALID', [
        'a second CONFIG in one session (a server configures a session once)',
      ]);
    this.configured.add(session);
    // From the next frame on the server may send DATA_OFFLOAD: switch the decoder before returning.
    if (message.offload) session.enableOffload();
    void this.applyConfig(message).catch((err: unknown) => {
      this.logger.error({ err: String(err) }, 'could not apply the server configuration');
      this.session?.close(DisconnectReason.INTERNAL, 'client could not apply configuration');
    });
  }

  private async applyConfig(config: ConfigMessage): Promise<void> {
    if (this.tun !== undefined && this.tun.vnetHdr !== config.offload) {
      // The server changed its offload setting across a restart: the TUN must be opened anew.
      await this.network?.undo();
      this.tun.close();
      this.tun = undefined;
      this.toTun = undefined;
    }
    if (this.tun === undefined) {
      this.tun = this.openTun({ vnetHdr: config.offload });
      this.tun.onError(this.onTunError);
      this.tun.onBatch(this.onTunBatch);
      this.toTun = new TunWriteBatch(this.tun, this.tun.vnetHdr, this.onTunError);
      this.network = this.createNetwork(this.tun.name, this.logger);
    }
    const routes = await (this.network as ClientNetworkLike).apply(config, {
      fullTunnel: this.config.fullTunnel,
      serverAddress: this.serverAddress,
      dns: this.config.dns,
    });
    this.backoff.reset();
    this.everConnected = true;
    this.logger.info(
      {
        ipv4: config.ipv4 === undefined ? undefined : `${config.ipv4.address}/${config.ipv4.prefix}`,
        ipv6: config.ipv6 === undefined ? undefined : `${config.ipv6.address}/${config.ipv6.prefix}`,
        server: this.config.url.origin,
        serverTunnelAddress: config.serverIpv4,
        routes,
        mtu: config.mtu,
        dev: this.tun.name,
        transport: this.transport,
      },
      `connected: ${config.ipv4?.address ?? config.ipv6?.address} via ${this.config.url.host} (${this.transport}), routes ${routes.join(' ') || '(none)'}`,
    );
  }

  onClose(session: Session, reason: SessionCloseReason): void {
    if (this.session === session) this.session = undefined;
    this.logger.warn(
      {
        reason: describeReason(reason.code),
        message: reason.message,
        byPeer: reason.byPeer,
        ...session.stats,
      },
      'tunnel closed',
    );
    if (reason.code === DisconnectReason.REPLACED && reason.byPeer) {
      // Another client logged in as the same user. Reconnecting would push it out in turn, and the two
      // would take the address from each other forever: give way, and say why.
      void this.giveUp(new Error(`another client connected as "${this.config.user}"; this one stops`));
      return;
    }
    if (reason.code === DisconnectReason.POOL_EXHAUSTED) {
      // The server has no address for us now; retrying with backoff is right, but say it plainly.
      this.logger.error(`server has no free address: ${reason.message}`);
    }
    this.scheduleReconnect(reason.message);
  }

  /** Disconnects, removes the routes and DNS settings we added, closes the TUN. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.session?.close(DisconnectReason.NORMAL, 'client shutting down');
    await this.network?.undo();
    this.tun?.close();
    this.settleStop?.();
  }
}
