// The router maps inner addresses to sessions: O(1) by destination address, IPv4 by its 32-bit number and
// IPv6 by its 16 raw bytes as a string key. It knows nothing of sockets or file descriptors, and holds no
// global state: one router per engine (per worker, when sessions are spread over threads).

import { ipVersion, ipv4Destination, ipv6DestinationKey } from '../net/packet.js';

export class Router<T> {
  private readonly byIpv4 = new Map<number, T>();
  private readonly byIpv6 = new Map<string, T>();

  /** Routes `ipv4` (and `ipv6Key`, 16 raw bytes as latin1) to `target`, replacing any earlier owner. */
  add(target: T, ipv4: number, ipv6Key?: string): void {
    this.byIpv4.set(ipv4, target);
    if (ipv6Key !== undefined) this.byIpv6.set(ipv6Key, target);
  }

  /** Removes the routes, but only where they still point at `target` (a replacement keeps its own). */
  remove(target: T, ipv4: number, ipv6Key?: string): void {
    if (this.byIpv4.get(ipv4) === target) this.byIpv4.delete(ipv4);
    if (ipv6Key !== undefined && this.byIpv6.get(ipv6Key) === target) this.byIpv6.delete(ipv6Key);
  }

  /** The owner of the packet's destination address, or undefined (unknown destination, or not IP). */
  lookupDestination(packet: Buffer, offset: number): T | undefined {
    const version = ipVersion(packet, offset);
    if (version === 4) return this.byIpv4.get(ipv4Destination(packet, offset));
    if (version === 6) return this.byIpv6.get(ipv6DestinationKey(packet, offset));
    return undefined;
  }
}
