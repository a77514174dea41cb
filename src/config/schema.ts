// The typed settings of both modes, as the rest of facade uses them. Which settings exist, their flags,
// defaults and checks are in server-settings.ts and client-settings.ts.

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface ServerConfig {
  readonly listen: ListenAddress;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
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
  readonly clientToClient: boolean;
  readonly mtu: number;
  readonly dns: readonly string[];
  readonly dnsDomains: readonly string[];
  readonly routes: readonly string[];
  readonly tunName: string;
  readonly keepaliveMs: number;
  /** TUN with IFF_VNET_HDR and DATA_OFFLOAD frames: GSO super-packets end to end. */
  readonly offload: boolean;
  readonly logLevel: string;
}

export interface ClientConfig {
  readonly url: URL;
  readonly user: string;
  readonly passwordFile: string;
  readonly ca?: string | undefined;
  readonly pin?: string | undefined;
  readonly fullTunnel: boolean;
  readonly plaintext: boolean;
  readonly tunName: string;
  readonly keepaliveMs: number;
  readonly dns: boolean;
  /** Announce the offload capability (GSO super-packets through a TUN with IFF_VNET_HDR). */
  readonly offload: boolean;
  readonly logLevel: string;
}
