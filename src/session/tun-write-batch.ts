// Packets decoded from one socket chunk, gathered for one batched TUN write. Shared by server and client.
//
// Without IFF_VNET_HDR the packets are the decoder's own views: no copy. With it, every packet the kernel
// takes must start with a virtio_net_hdr, so each is staged behind its 10-byte header in a reused slab
// (the peer's offload header for DATA_OFFLOAD frames, zeros for plain DATA). The slab is reused as soon as
// the write returns: TUN writes are synchronous, so nothing keeps a view past flush().
//
// A TUN that fails (deleted under us: FACADE_ERR_TUN_IO) never throws into the socket listener that is
// flushing: the packets are counted as drops and the error goes to `onError`, whose owner decides (the
// server and the client stop; see the error table in core/errors.ts).

import { MAX_PACKET_SIZE } from '../core/limits.js';
import type { TunLike } from '../net/tun.js';
import { OFFLOAD_HEADER_SIZE, type OffloadHeader, writeOffloadHeader } from '../protocol/frame.js';

/** Staging slab: a socket chunk (64 KiB at most) plus one straddling frame fits with room to spare. */
const STAGING_BYTES = 4 * (MAX_PACKET_SIZE + OFFLOAD_HEADER_SIZE);

export class TunWriteBatch {
  private readonly packets: Buffer[] = [];
  private readonly slab: Buffer | null;
  private used = 0;
  /** Packets the kernel did not take (its queue was full, or it refused one). */
  drops = 0;

  constructor(
    private readonly tun: TunLike,
    readonly vnetHdr: boolean,
    private readonly onError: (err: unknown) => void,
  ) {
    this.slab = vnetHdr ? Buffer.allocUnsafeSlow(STAGING_BYTES) : null;
  }

  /** Adds a packet; returns the bytes that will be written (with the virtio header when there is one). */
  add(packet: Buffer, offload: OffloadHeader | null): Buffer {
    const slab = this.slab;
    if (slab === null) {
      this.packets.push(packet);
      return packet;
    }
    const needed = OFFLOAD_HEADER_SIZE + packet.length;
    if (slab.length - this.used < needed) this.flush();
    const start = this.used;
    if (offload === null) slab.fill(0, start, start + OFFLOAD_HEADER_SIZE);
    else writeOffloadHeader(slab, start, offload);
    packet.copy(slab, start + OFFLOAD_HEADER_SIZE);
    this.used += needed;
    const staged = slab.subarray(start, start + needed);
    this.packets.push(staged);
    return staged;
  }

  /** Writes everything gathered in one batch; the slab is free again afterwards. */
  flush(): void {
    const count = this.packets.length;
    if (count === 0) return;
    let written = 0;
    try {
      written = this.tun.writePackets(this.packets, count);
    } catch (err) {
      this.onError(err);
    } finally {
      this.drops += count - written;
      this.packets.length = 0;
      this.used = 0;
    }
  }
}
