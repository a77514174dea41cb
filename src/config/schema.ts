// The typed settings of both modes, as the rest of facade uses them. Which settings exist, their flags,
// defaults and checks are in server-settings.ts and client-settings.ts.

import type { LogFormat } from '../core/log.js';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** What clients dial (invites): a name or address, and the port when it is not the one the server listens on. */
export interface DialAddress {
  readonly host: string;
  readonly port: number | undefined;
}

/** --nat: masquerade the pools out of `iface` (undefined: the interface of the default route). */
export interface NatChoice {
  readonly iface: string | undefined;
}

/** How log lines are written: for people at a terminal (auto), or always one kind (core/log.ts). */
export type { LogFormat };

export interface ServerConfig {
  readonly listen: ListenAddress;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  /** Names of the self-signed certificate (server.ts); empty: the listen address, else localhost. */
  readonly selfSignedNames: readonly string[];
  readonly domain?: string | undefined;
  readonly email?: string | undefined;
  readonly acmeDirectory?: string | undefined;
  readonly acmeStaging: boolean;
  readonly httpListen?: ListenAddress | undefined;
  readonly pool: string;
  readonly pool6?: string | undefined;
  readonly users: string;
  readonly tunnelPath: string;
  readonly site?: string | undefined;
  readonly upstream?: string | undefined;
  readonly stateDir: string;
  /** User the server switches to after start-up (server/privileges.ts); 'root' keeps root. */
  readonly runAs: string;
  readonly plaintext: boolean;
  /**
   * Plain HTTP on this address for a TLS-terminating reverse proxy in front (--behind-proxy); `listen` is
   * this address then, and there is no certificate, no port 80 and no TLS binding of credentials.
   */
  readonly behindProxy?: ListenAddress | undefined;
  readonly clientToClient: boolean;
  readonly mtu: number;
  readonly dns: readonly string[];
  readonly dnsDomains: readonly string[];
  readonly routes: readonly string[];
  readonly tunName: string;
  /** Worker processes (server/workers.ts); 1 runs everything in one process. */
  readonly workers: number;
  readonly keepaliveMs: number;
  /** TUN with IFF_VNET_HDR and DATA_OFFLOAD frames: GSO super-packets end to end. */
  readonly offload: boolean;
  readonly logLevel: string;
  readonly logFormat?: LogFormat | undefined;
  /** What clients dial, for invites (`facade init --host`, `facade user invite`); the server ignores it. */
  readonly host?: DialAddress | undefined;
  /** Forwarding and masquerading of the pools out of one interface (server/nat.ts). */
  readonly nat?: NatChoice | undefined;
  /** Prometheus metrics (GET /metrics) on this address (server/metrics.ts); off when absent. */
  readonly metrics?: ListenAddress | undefined;
}

/** How the client carries its tunnel (client/connect.ts); auto picks h2 where the server offers it. */
export const CLIENT_TRANSPORTS = ['auto', 'upgrade', 'websocket', 'h2'] as const;
export type ClientTransport = (typeof CLIENT_TRANSPORTS)[number];

export interface ClientConfig {
  readonly url: URL;
  readonly user: string;
  /** One of the two credentials: a file whose first line is the password, */
  readonly passwordFile?: string | undefined;
  /** or the key seed an invite carries (base64url; `--save` writes it into the client's config file). */
  readonly key?: string | undefined;
  readonly ca?: string | undefined;
  readonly pin?: string | undefined;
  readonly fullTunnel: boolean;
  readonly plaintext: boolean;
  readonly tunName: string;
  readonly keepaliveMs: number;
  readonly dns: boolean;
  /** Announce the offload capability (GSO super-packets through a TUN with IFF_VNET_HDR). */
  readonly offload: boolean;
  /** How the tunnel is carried (client/connect.ts); not given: auto. */
  readonly transport?: ClientTransport | undefined;
  readonly logLevel: string;
  readonly logFormat?: LogFormat | undefined;
}
