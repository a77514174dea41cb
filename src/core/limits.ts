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
 * buffering without bound. Every byte here is delay for the packets behind it (a ping behind a
 * transfer): 1 MiB is 2 ms at 4 Gbit/s, 80 ms at 100 Mbit/s; TCP inside the tunnel sees the drops and
 * backs off, so the queue stays short (bench/run.sh's "rtt loaded" column measures it).
 */
export const MAX_SESSION_BUFFERED_BYTES = 1024 * 1024;

/** Size of one TUN read batch buffer: up to 64 MTU-sized packets, or a few GSO super-packets. */
export const TUN_BATCH_BYTES = 256 * 1024;

/** TUN transmit queue (packets waiting for our read); Linux's TUN default of 500 overflows under bursts. */
export const TUN_TX_QUEUE_PACKETS = 1000;

/** Packets the native reader drains per wake-up at most, so one busy TUN cannot starve the event loop. */
export const TUN_BATCH_PACKETS = 256;

/**
 * HTTP/2 receive windows of a tunnel (the h2 transport, RFC 8441), both sides: per stream and per
 * connection. h2's default 64 KiB window lets a 64 KiB DATA_OFFLOAD frame stall every round trip; 4 MiB
 * covers a full-speed path's bandwidth-delay product (5 Gbit/s × 6 ms) and what the receiver's event loop
 * holds between reads, so the window is not the bottleneck. It bounds what a peer can make us buffer per
 * stream too, which is why it is not larger.
 */
export const H2_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
export const H2_SESSION_WINDOW_BYTES = 8 * 1024 * 1024;

/** Time a client has to send a complete tunnel request head; matches Node's default headersTimeout. */
export const HANDSHAKE_TIMEOUT_MS = 60_000;

/**
 * How far a tunnel credential's time may be from the server's clock, either way (docs/PROTOCOL.md 1.1). It
 * bounds how long a captured credential is worth anything where no TLS exporter binds it (a reverse proxy
 * in front of facade, --plaintext), and how long its nonce must be remembered. Two minutes admit the clock
 * drift of hosts without NTP for days and a slow connect (DNS, TCP, TLS retransmissions); a client whose
 * clock is further off gets the site's 404 like a wrong password.
 */
export const AUTH_WINDOW_SECONDS = 120;

/**
 * Nonces of accepted tunnel credentials the server remembers (each for the window on both sides of its
 * time, so up to 4 minutes). Only a valid signature gets a nonce stored, so only real users fill it; 16 times
 * MAX_CONNECTIONS is more connects than a full server sees in 4 minutes, even when every client reconnects at
 * once after a restart (backoff spreads them over seconds). At the cap a new credential is refused rather
 * than the memory grown or an old nonce forgotten early (that would reopen the replay); the client retries
 * with backoff and gets in once old nonces expire. ~100 bytes each: ~6.5 MiB at the cap.
 */
export const MAX_AUTH_NONCES = 65_536;

/** Largest request head we hold while deciding whether it is a tunnel request (Node's maxHeaderSize). */
export const MAX_REQUEST_HEAD_BYTES = 16 * 1024;

/** Default interval between keepalive echo requests when the link is otherwise idle. */
export const DEFAULT_KEEPALIVE_MS = 10_000;

/**
 * Echo requests a session answers per second at most; the rest are dropped and counted. Keepalive sends one
 * per interval (a second or more) and a latency probe a few a second; answering every request of a peer
 * that floods them would turn the session into an amplifier of its own output queue.
 */
export const MAX_ECHO_REPLIES_PER_SECOND = 10;

/** Missed keepalive intervals after which a peer is declared dead. */
export const DEAD_PEER_INTERVALS = 3;

/** How long an address stays reserved for a user after they disconnect, so a reconnect gets it back. */
export const LEASE_GRACE_MS = 10 * 60_000;

/**
 * Shortest IPv4 route a server may push to a client that did not ask for a full tunnel. /8 still admits the
 * large private prefixes companies push (10.0.0.0/8); anything shorter covers a large part of the internet,
 * and 0.0.0.0/1 + 128.0.0.0/1 would capture all traffic without touching the default route.
 */
export const MIN_PUSHED_ROUTE_PREFIX4 = 8;

/**
 * The same for IPv6. Sites number in /48s and the largest allocations are /19-/12 of global space, so /16 is
 * generous for any real internal network; ::/1 + 8000::/1, 2000::/3 and all of fd00::/8 are refused.
 */
export const MIN_PUSHED_ROUTE_PREFIX6 = 16;

/** Client reconnect backoff: first delay, ceiling, and jitter fraction. */
export const RECONNECT_INITIAL_MS = 500;
export const RECONNECT_MAX_MS = 30_000;
export const RECONNECT_JITTER = 0.3;

/** Renew a certificate once this fraction of its lifetime has passed (Let's Encrypt's own advice). */
export const CERT_RENEW_AT_FRACTION = 2 / 3;

/**
 * Connections the website holds open at once, in total (tunnels included); beyond it a new connection is
 * closed as soon as it is accepted, as Node's own `server.maxConnections` does on an overloaded site. One
 * idle TLS connection costs about 35 KB of memory, so 4096 of them cost ~140 MB, which a small VPS survives;
 * nginx's default is 512 per worker, a busy small site rarely holds more than a few hundred. The process
 * needs a file-descriptor limit (LimitNOFILE) above this plus the TUN queues.
 */
export const MAX_CONNECTIONS = 4096;

/**
 * Connections one source address (an IPv6 /64, which one household or host gets) may hold at once that are
 * not tunnels; beyond it a new one is closed as soon as it is accepted. A browser opens at most 6 HTTP/1.1
 * connections to a site (1 with h2), so 64 leaves room for about ten browsers behind one NAT, while one
 * address can no longer hold the whole MAX_CONNECTIONS with handshakes it never finishes. Accepted tunnels
 * stop counting against their address: an office of VPN users behind one NAT is bounded by the pool.
 */
export const MAX_CONNECTIONS_PER_ADDRESS = 64;

// --- offload metadata (virtio_net_hdr) a peer may hand our kernel: src/protocol/offload-check.ts ---------
//
// A GSO super-packet is cut by the kernel into ceil(payload / gso_size) segments, each carrying a copy of the
// headers. The peer chooses gso_size, so without a floor one 60 KB frame with gso_size 1 becomes 60,000
// packets of 41 bytes: 40x the bytes and 1,500x the packets that the same bytes as plain DATA frames give.
// The floors below are the smallest segment a conforming TCP sender uses: the version's minimum datagram
// (IPv4: 576, the size every host must accept, RFC 791, and the basis of TCP's default MSS 536, RFC 9293
// 3.7.1; IPv6: the 1280 minimum link MTU, RFC 8200) minus the smallest IP header and the largest TCP header
// (60 bytes: TCP options come out of the segment, so a peer advertising MSS 536 gets 524-byte segments with
// timestamps). With them a frame yields at most MAX_GSO_SEGMENTS segments and the headers add at most ~20%
// to the bytes, while a peer sending small DATA frames already gets one packet per ~45 bytes: GSO is no
// longer an amplifier. The cost: TSO traffic to a remote host that advertises an MSS below 536 (IPv4) or
// 1220 (IPv6), which Linux honours down to net.ipv4.tcp_min_snd_mss = 48, is dropped; such hosts are rare
// and non-conforming for IPv6. UDP GSO (UDP_L4) gets the same floors: QUIC, its main user, sends segments of
// at least 1200 bytes.

/** Smallest gso_size accepted on IPv4: 576 (RFC 791 minimum datagram) - 20 (IPv4 header) - 60 (TCP max). */
export const MIN_GSO_SIZE_IPV4 = 576 - 20 - 60;

/** Smallest gso_size accepted on IPv6: 1280 (RFC 8200 minimum MTU) - 40 (IPv6 header) - 60 (TCP max). */
export const MIN_GSO_SIZE_IPV6 = 1280 - 40 - 60;

/**
 * Most segments one GSO frame may yield: the largest IPv4 TCP super-packet (65535 bytes, 40 of them
 * headers) cut at MIN_GSO_SIZE_IPV4 = 133. Implied by the floor and the 16-bit length; checked anyway so
 * the bound holds if a floor is ever lowered. (Linux itself has no tighter bound for TCP: gso_max_segs is
 * 65535.)
 */
export const MAX_GSO_SEGMENTS = Math.ceil((MAX_PACKET_SIZE - 20 - 20) / MIN_GSO_SIZE_IPV4);

/**
 * Most segments of one UDP GSO (UDP_L4) super-packet: Linux's UDP_MAX_SEGMENTS (include/linux/udp.h), 64
 * in older kernels and 128 in recent ones (raised in 2024). A Linux sender never exceeds it (UDP_SEGMENT sends fail with EINVAL), and the
 * receiving kernel refuses more in virtio_net_hdr_to_skb; we take the newer, larger value.
 */
export const MAX_UDP_GSO_SEGMENTS = 128;
