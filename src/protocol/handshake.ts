// How a tunnel is asked for and granted, both sides. One definition of every header and token, so the
// client's request and the server's checks cannot drift apart.
//
// Over HTTP/1.1 (the "upgrade" transport):
//
//   client: GET <secret path> HTTP/1.1           server: HTTP/1.1 101 Switching Protocols
//           Host: <host>                                 Connection: Upgrade
//           Connection: Upgrade                          Upgrade: facade
//           Upgrade: facade
//           Authorization: <credentials.ts: signed, bound to this TLS connection, single use>
//           Facade-Capabilities: offload         then both sides speak frames (frame.ts) on the stream.
//
// Any other transport (an HTTP/2 stream, a WebSocket) carries the same Authorization and
// Facade-Capabilities headers; what the server makes of them (an identity) is transport-neutral.

/** The Upgrade token we send and answer with; the server accepts any non-empty client token. */
export const UPGRADE_TOKEN = 'facade';

/** Request header names (lower case, as parsed heads and HTTP/2 deliver them). */
export const Header = {
  AUTHORIZATION: 'authorization',
  CAPABILITIES: 'facade-capabilities',
  CONNECTION: 'connection',
  UPGRADE: 'upgrade',
  TRANSFER_ENCODING: 'transfer-encoding',
  CONTENT_LENGTH: 'content-length',
} as const;

/** Capability tokens a client may list in Facade-Capabilities. */
export const Capability = {
  /** DATA_OFFLOAD frames: virtio_net_hdr metadata and GSO super-packets (docs/PROTOCOL.md). */
  OFFLOAD: 'offload',
} as const;

/** Read access to a request's headers by lower-case name; a parsed head's Map and HTTP/2 headers fit. */
export interface HeaderLookup {
  get(name: string): string | undefined;
}

/** What every transport can tell about a tunnel request: its target (path), headers and binding. */
export interface TunnelRequest {
  readonly target: string;
  readonly headers: HeaderLookup;
  /**
   * The TLS exporter of the connection the request came on (credentials.ts connectionBinding), which the
   * credential's signature must cover; null when TLS does not end here (--plaintext, a reverse proxy in
   * front): then the zero binding, and only the credential's time and nonce stop a replay.
   */
  readonly binding: Buffer | null;
}

export interface TunnelCapabilities {
  readonly offload: boolean;
}

/** Who a tunnel request authenticated as, and what it can speak: all the engine needs to attach it. */
export interface TunnelIdentity {
  readonly user: string;
  readonly capabilities: TunnelCapabilities;
}

/** The transports a session can arrive on (status and logs show it). */
export type TransportName = 'upgrade';

/** True when a comma-separated header value lists `token` (case-insensitive), as Connection does. */
export function headerHasToken(value: string | undefined, token: string): boolean {
  if (value === undefined) return false;
  const wanted = token.toLowerCase();
  return value.split(',').some((item) => item.trim().toLowerCase() === wanted);
}

export function readCapabilities(headers: HeaderLookup): TunnelCapabilities {
  return { offload: headerHasToken(headers.get(Header.CAPABILITIES), Capability.OFFLOAD) };
}

/** The client's HTTP/1.1 upgrade request head, CRLFCRLF included. */
export function upgradeRequest(options: {
  readonly target: string;
  readonly host: string;
  readonly authorization: string;
  readonly capabilities: TunnelCapabilities;
}): string {
  return (
    `GET ${options.target} HTTP/1.1\r\n` +
    `Host: ${options.host}\r\n` +
    'Connection: Upgrade\r\n' +
    `Upgrade: ${UPGRADE_TOKEN}\r\n` +
    `Authorization: ${options.authorization}\r\n` +
    (options.capabilities.offload ? `Facade-Capabilities: ${Capability.OFFLOAD}\r\n` : '') +
    '\r\n'
  );
}

/** The server's answer to an accepted upgrade. */
export const UPGRADE_RESPONSE = `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${UPGRADE_TOKEN}\r\n\r\n`;

/** The status code of an HTTP/1.x response head, or 0 when the status line is not one. */
export function responseStatus(head: Buffer): number {
  const end = head.indexOf('\r\n');
  const statusLine = head.toString('latin1', 0, end === -1 ? head.length : end);
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  return match === null ? 0 : Number(match[1]);
}

/**
 * True for a request head shaped like an upgrade: GET, HTTP/1.1, `Connection: upgrade`, a non-empty
 * Upgrade token, no body. Credentials are checked elsewhere (users/authenticator.ts).
 */
export function isUpgradeRequest(head: {
  readonly method: string;
  readonly version: string;
  readonly headers: HeaderLookup & { has(name: string): boolean };
}): boolean {
  const { headers } = head;
  return (
    head.method === 'GET' &&
    head.version === 'HTTP/1.1' &&
    headerHasToken(headers.get(Header.CONNECTION), 'upgrade') &&
    (headers.get(Header.UPGRADE) ?? '') !== '' &&
    !headers.has(Header.TRANSFER_ENCODING) &&
    (headers.get(Header.CONTENT_LENGTH) ?? '0') === '0'
  );
}
