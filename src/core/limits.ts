// Every limit facade enforces lives here, with the reason for its value. Check a limit at the earliest
// point its value is known (a frame header, a request head), before buffering anything.

/** Largest IP packet (or GSO super-packet) a DATA frame carries: the IPv4/IPv6 total-length ceiling. */
export const MAX_PACKET_SIZE = 65535;

/** Default tunnel MTU: 1500 minus IPv6 (40) + TCP (20..32) + TLS record (~29) + frame header overhead. */
export const DEFAULT_TUNNEL_MTU = 1400;

/** Lowest MTU we accept: IPv6 requires links of at least 1280 bytes. */
export const MIN_TUNNEL_MTU = 1280;

/**
 * Bytes a session may have queued on its socket before further packets to it are dropped. A slow or
 * stalled client must never stall the others: we drop (TCP inside the tunnel recovers) instead of
 * buffering without bound. 4 MiB covers the bandwidth-delay product of ~300 Mbit/s at 100 ms.
 */
export const MAX_SESSION_BUFFERED_BYTES = 4 * 1024 * 1024;

/** Size of one TUN read batch buffer: up to 64 MTU-sized packets, or a few GSO super-packets. */
export const TUN_BATCH_BYTES = 256 * 1024;

/** TUN transmit queue (packets waiting for our read); Linux's TUN default of 500 overflows under bursts. */
export const TUN_TX_QUEUE_PACKETS = 1000;

/** Packets the native reader drains per wake-up at most, so one busy TUN cannot starve the event loop. */
export const TUN_BATCH_PACKETS = 256;

/** Time a client has to send a complete tunnel request head; matches Node's default headersTimeout. */
export const HANDSHAKE_TIMEOUT_MS = 60_000;

/** Largest request head we hold while deciding whether it is a tunnel request (Node's maxHeaderSize). */
export const MAX_REQUEST_HEAD_BYTES = 16 * 1024;

/** Default interval between keepalive echo requests when the link is otherwise idle. */
export const DEFAULT_KEEPALIVE_MS = 10_000;

/** Missed keepalive intervals after which a peer is declared dead. */
export const DEAD_PEER_INTERVALS = 3;

/** How long an address stays reserved for a user after they disconnect, so a reconnect gets it back. */
export const LEASE_GRACE_MS = 10 * 60_000;

/** Client reconnect backoff: first delay, ceiling, and jitter fraction. */
export const RECONNECT_INITIAL_MS = 500;
export const RECONNECT_MAX_MS = 30_000;
export const RECONNECT_JITTER = 0.3;

/** Renew a certificate once this fraction of its lifetime has passed (Let's Encrypt's own advice). */
export const CERT_RENEW_AT_FRACTION = 2 / 3;
