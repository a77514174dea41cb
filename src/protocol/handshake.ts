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

import { isWebSocketKey, WEBSOCKET_VERSION, webSocketAccept } from './websocket.js';

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
  WEBSOCKET_KEY: 'sec-websocket-key',
  WEBSOCKET_VERSION: 'sec-websocket-version',
  WEBSOCKET_ACCEPT: 'sec-websocket-accept',
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

/**
 * The transports a session can arrive on (status and logs show it): `upgrade`, the raw HTTP/1.1 upgrade
 * (`Upgrade: facade`); `websocket`, an RFC 6455 WebSocket on the same path, the frames in binary messages
 * (websocket.ts), which a CDN or a strict proxy carries; `h2`, an extended CONNECT stream on an HTTP/2
 * connection, as a browser's h2 connection to the site.
 */
export type TransportName = 'upgrade' | 'websocket' | 'h2';

/**
 * The `:protocol` of the h2 transport's extended CONNECT (RFC 8441): the same token as the raw upgrade's.
 * The stream is the tunnel once the server answers 200.
 */
export const H2_PROTOCOL = UPGRADE_TOKEN;

/** The Upgrade token of a WebSocket (RFC 6455 4.1). */
export const WEBSOCKET_TOKEN = 'websocket';

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

/** The client's WebSocket opening handshake (RFC 6455 4.1), CRLFCRLF included. */
export function webSocketRequest(options: {
  readonly target: string;
  readonly host: string;
  readonly authorization: string;
  readonly capabilities: TunnelCapabilities;
  readonly key: string;
}): string {
  return (
    `GET ${options.target} HTTP/1.1\r\n` +
    `Host: ${options.host}\r\n` +
    'Connection: Upgrade\r\n' +
    `Upgrade: ${WEBSOCKET_TOKEN}\r\n` +
    `Sec-WebSocket-Version: ${WEBSOCKET_VERSION}\r\n` +
    `Sec-WebSocket-Key: ${options.key}\r\n` +
    `Authorization: ${options.authorization}\r\n` +
    (options.capabilities.offload ? `Facade-Capabilities: ${Capability.OFFLOAD}\r\n` : '') +
    '\r\n'
  );
}

/** The server's answer to an accepted WebSocket handshake. */
export function webSocketResponse(key: string): string {
  return (
    'HTTP/1.1 101 Switching Protocols\r\n' +
    `Upgrade: ${WEBSOCKET_TOKEN}\r\n` +
    'Connection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${webSocketAccept(key)}\r\n\r\n`
  );
}

/**
 * Which transport an upgrade-shaped head asks for: `websocket` for a well-formed WebSocket handshake,
 * `upgrade` for any other Upgrade token, null for a WebSocket handshake that is not well formed (the site
 * answers it, as it answers every request it does not know).
 */
export function upgradeTransport(headers: HeaderLookup): TransportName | null {
  if ((headers.get(Header.UPGRADE) ?? '').trim().toLowerCase() !== WEBSOCKET_TOKEN) return 'upgrade';
  return headers.get(Header.WEBSOCKET_VERSION)?.trim() === WEBSOCKET_VERSION &&
    isWebSocketKey(headers.get(Header.WEBSOCKET_KEY)?.trim())
    ? 'websocket'
    : null;
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
