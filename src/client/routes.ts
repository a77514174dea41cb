// Applies the server's CONFIG to the client's TUN (addresses, MTU, routes, DNS) and undoes exactly what
// it added. What a server may push is limited by route-policy.ts: without --full-tunnel no route that
// takes over the host's traffic, and pushed DNS only for the pushed domains. Full tunnel uses two halves (0/1 and 128/1, ::/1 and 8000::/1), more specific than any default
// route, so the existing default route is never touched, plus a host route keeping the server itself
// reachable outside the tunnel.

import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { TUN_TX_QUEUE_PACKETS } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import {
  addAddress,
  addRoute,
  delRoute,
  routeGet,
  setLinkUp,
  setMtu,
  setTxQueueLength,
} from '../net/ifconfig.js';
import { addressBytes, clearHostBits } from '../net/packet.js';
import type { ConfigMessage } from '../protocol/control.js';
import { decideDns, decideRoutes } from './route-policy.js';

const run = promisify(execFile);

interface AddedRoute {
  readonly cidr: string;
  readonly dev?: string | undefined;
  readonly via?: string | undefined;
}

export class ClientNetwork {
  private readonly added: AddedRoute[] = [];
  private addressesApplied = false;
  private dnsApplied = false;

  constructor(
    private readonly dev: string,
    private readonly logger: Logger,
  ) {}

  /** Applies a CONFIG. Addresses and MTU are applied once per TUN; routes are re-applied idempotently. */
  async apply(
    config: ConfigMessage,
    options: { fullTunnel: boolean; serverAddress: string; dns: boolean },
  ): Promise<string[]> {
    if (!this.addressesApplied) {
      await setMtu(this.dev, config.mtu);
      await setTxQueueLength(this.dev, TUN_TX_QUEUE_PACKETS);
      if (config.ipv4 !== undefined)
        await addAddress(this.dev, `${config.ipv4.address}/${config.ipv4.prefix}`);
      if (config.ipv6 !== undefined)
        await addAddress(this.dev, `${config.ipv6.address}/${config.ipv6.prefix}`);
      await setLinkUp(this.dev);
      this.addressesApplied = true;
    }
    const wanted: AddedRoute[] = [];
    // The pushed prefixes get explicit routes, except the interface's own prefixes: the kernel made those
    // routes with the addresses (an IPv6 duplicate would even be accepted, at another metric).
    const own = [config.ipv4, config.ipv6]
      .filter((a) => a !== undefined)
      .map((a) => networkOf(a.address, a.prefix));
    const { accepted, refused } = decideRoutes(config.routes, options);
    for (const route of refused)
      this.logger.warn(
        { route: route.cidr, why: route.why },
        `pushed route ${route.cidr} refused: ${route.why}`,
      );
    for (const route of accepted) {
      const cidr = `${route.address}/${route.prefix}`;
      if (!own.includes(networkOf(route.address, route.prefix))) wanted.push({ cidr, dev: this.dev });
    }
    if (options.fullTunnel) {
      const family = isIP(options.serverAddress);
      const viaPath = await routeGet(options.serverAddress);
      wanted.unshift({
        cidr: `${options.serverAddress}/${family === 6 ? 128 : 32}`,
        dev: viaPath.dev,
        via: viaPath.via,
      });
      wanted.push({ cidr: '0.0.0.0/1', dev: this.dev }, { cidr: '128.0.0.0/1', dev: this.dev });
      if (config.ipv6 !== undefined)
        wanted.push({ cidr: '::/1', dev: this.dev }, { cidr: '8000::/1', dev: this.dev });
    }
    for (const route of wanted) {
      if (this.added.some((r) => r.cidr === route.cidr)) continue;
      try {
        await addRoute(route.cidr, { dev: route.dev, via: route.via });
        this.added.push(route);
      } catch (err) {
        // The kernel already has it (the interface prefix route, usually): not ours to remove later.
        if (!(err instanceof Error && /File exists/i.test(err.message))) throw err;
      }
    }
    if (!this.dnsApplied) {
      const dns = decideDns(config, options);
      if (dns.apply) await this.applyDns(dns.servers, dns.domains, dns.defaultRoute);
      else if (config.dns.length > 0)
        this.logger.info({ dns: config.dns }, `pushed DNS servers not used: ${dns.why}`);
    }
    return this.added.map((r) => r.cidr);
  }

  private async applyDns(
    servers: readonly string[],
    domains: readonly string[],
    defaultRoute: boolean,
  ): Promise<void> {
    try {
      await run('resolvectl', ['dns', this.dev, ...servers]);
      await run('resolvectl', ['domain', this.dev, ...domains]);
      await run('resolvectl', ['default-route', this.dev, defaultRoute ? 'yes' : 'no']);
      this.dnsApplied = true;
      this.logger.info(
        { dns: servers, domains },
        'DNS servers set on the tunnel interface (systemd-resolved)',
      );
    } catch {
      this.logger.warn(
        { dns: servers, domains },
        'the server pushed DNS servers but resolvectl is not available: set them by hand',
      );
    }
  }

  /** Removes the routes (and DNS settings) we added; the addresses go with the TUN when it closes. */
  async undo(): Promise<void> {
    for (const route of this.added.splice(0).reverse()) {
      await delRoute(route.cidr, { dev: route.dev, via: route.via }).catch((err: unknown) => {
        this.logger.warn({ route: route.cidr, err: String(err) }, 'could not remove route');
      });
    }
    if (this.dnsApplied) {
      await run('resolvectl', ['revert', this.dev]).catch(() => undefined);
      this.dnsApplied = false;
    }
  }
}

/** The network of `address/prefix` in a comparable form: the masked address bytes as hex, plus the prefix. */
function networkOf(address: string, prefix: number): string {
  return `${Buffer.from(clearHostBits(addressBytes(address), prefix)).toString('hex')}/${prefix}`;
}
