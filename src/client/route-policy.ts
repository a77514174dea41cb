// Which of the routes a server pushes the client installs. A server is trusted with the traffic for its own
// prefixes, not with the host's whole routing table: a hostile or compromised server (any that holds a
// certificate the client trusts) must not pull every connection into the tunnel behind the user's back.
//
// Without --full-tunnel a pushed route is refused when it
//   - covers the default route or is shorter than MIN_PUSHED_ROUTE_PREFIX (0/1 and 128/1 would take
//     everything without touching the default route), or
//   - contains the server's own address (the tunnel would carry itself and collapse).
// With --full-tunnel the user asked for everything to go through the tunnel, so only the second rule holds.

import { MIN_PUSHED_ROUTE_PREFIX4, MIN_PUSHED_ROUTE_PREFIX6 } from '../core/limits.js';
import { addressBytes, clearHostBits } from '../net/packet.js';
import type { Route } from '../protocol/control.js';

export interface RefusedRoute {
  readonly cidr: string;
  readonly why: string;
}

export interface RouteDecision {
  readonly accepted: readonly Route[];
  readonly refused: readonly RefusedRoute[];
}

export function decideRoutes(
  routes: readonly Route[],
  options: { readonly fullTunnel: boolean; readonly serverAddress: string },
): RouteDecision {
  const accepted: Route[] = [];
  const refused: RefusedRoute[] = [];
  for (const route of routes) {
    const cidr = `${route.address}/${route.prefix}`;
    const minimum = route.family === 4 ? MIN_PUSHED_ROUTE_PREFIX4 : MIN_PUSHED_ROUTE_PREFIX6;
    if (!options.fullTunnel && route.prefix < minimum) {
      refused.push({
        cidr,
        why:
          route.prefix === 0
            ? 'it is a default route; use --full-tunnel to send everything through the tunnel'
            : `it is shorter than /${minimum} and would take over most of the host's traffic; use --full-tunnel if that is what you want`,
      });
    } else if (contains(route, options.serverAddress)) {
      refused.push({ cidr, why: `it contains the server's own address ${options.serverAddress}` });
    } else {
      accepted.push(route);
    }
  }
  return { accepted, refused };
}

/** True when `address` (of either family) lies inside `route`. */
function contains(route: Route, address: string): boolean {
  let bytes: Buffer;
  try {
    bytes = addressBytes(address);
  } catch {
    return false;
  }
  if (bytes.length !== (route.family === 4 ? 4 : 16)) return false;
  const network = addressBytes(route.address);
  return Buffer.from(clearHostBits(bytes, route.prefix)).equals(
    Buffer.from(clearHostBits(network, route.prefix)),
  );
}

/** How pushed DNS servers are used: for which domains, and whether as the host's default resolver. */
export type DnsDecision =
  | {
      readonly apply: true;
      readonly servers: readonly string[];
      /** systemd-resolved routing domains: '~.' for every name, else '~' + each pushed domain. */
      readonly domains: readonly string[];
      /** Whether the link may answer names no link claims (resolvectl default-route). */
      readonly defaultRoute: boolean;
    }
  | { readonly apply: false; readonly why: string };

/**
 * Pushed DNS servers see every name the host looks up only when the user chose a full tunnel; otherwise
 * they answer for the domains the server pushed with them, and nothing else (a hostile server would
 * otherwise learn, and could answer, every lookup).
 */
export function decideDns(
  pushed: { readonly dns: readonly string[]; readonly dnsDomains?: readonly string[] | undefined },
  options: { readonly fullTunnel: boolean; readonly dns: boolean },
): DnsDecision {
  if (!options.dns) return { apply: false, why: 'turned off with --no-dns' };
  if (pushed.dns.length === 0) return { apply: false, why: 'the server pushed no DNS servers' };
  if (options.fullTunnel) return { apply: true, servers: pushed.dns, domains: ['~.'], defaultRoute: true };
  const domains = pushed.dnsDomains ?? [];
  if (domains.length === 0) {
    return {
      apply: false,
      why: 'the server pushed DNS servers without domains; without --full-tunnel they would answer for every name, so they are not used',
    };
  }
  return { apply: true, servers: pushed.dns, domains: domains.map((d) => `~${d}`), defaultRoute: false };
}
