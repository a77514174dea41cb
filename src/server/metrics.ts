// Prometheus metrics (prom-client), on a listener of their own (--metrics ADDR:PORT, loopback unless an
// address is given), never on the public site: a /metrics there would give the server away. Everything
// is read when scraped from what status, accounting and the workers' reports already hold; nothing is
// counted for the metrics alone. Names start with facade_. Refused logins are counted without names.

import { X509Certificate } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import type { LoginCounters } from '../users/authenticator.js';
import type { Accounting } from './accounting.js';
import type { EventLoopDelay } from './process-metrics.js';
import type { StatusSnapshot } from './status.js';

export interface MetricsInputs {
  status(): StatusSnapshot;
  readonly accounting: Accounting;
  /** Logins of every engine process, summed. */
  logins(): LoginCounters;
  /** Event-loop delay of each process: "primary" (the only one with --workers 1), "worker0", … */
  loopDelays(): { process: string; delay: EventLoopDelay }[];
  /** The served certificate (PEM, leaf first), if any. */
  certificate(): string | undefined;
}

/** notAfter of a PEM certificate in Unix seconds, or undefined when it does not parse. */
export function certificateExpiry(pem: string | undefined): number | undefined {
  if (pem === undefined) return undefined;
  try {
    return Math.floor(Date.parse(new X509Certificate(pem).validTo) / 1000);
  } catch {
    return undefined;
  }
}

export function createMetricsRegistry(inputs: MetricsInputs): Registry {
  const registry = new Registry();
  const registers = [registry];
  // A scrape reads the status once for every metric that needs it.
  let snapshot: StatusSnapshot | undefined;
  let snapshotAt = 0;
  const status = (): StatusSnapshot => {
    const now = Date.now();
    if (snapshot === undefined || now - snapshotAt > 100) {
      snapshot = inputs.status();
      snapshotAt = now;
    }
    return snapshot;
  };

  new Gauge({
    name: 'facade_sessions',
    help: 'Tunnel sessions open now',
    registers,
    collect() {
      this.set(status().sessions.length);
    },
  });
  new Counter({
    name: 'facade_logins_total',
    help: 'Tunnel logins with a facade credential, by result (refused: wrong key, unknown user, replay, clock, expired, over quota; never named)',
    labelNames: ['result'],
    registers,
    collect() {
      const logins = inputs.logins();
      this.reset();
      this.inc({ result: 'accepted' }, logins.accepted);
      this.inc({ result: 'refused' }, logins.refused);
    },
  });
  const perUser = (name: string, help: string, pick: 'bytes' | 'packets') =>
    new Counter({
      name,
      help,
      labelNames: ['user', 'direction'],
      registers,
      collect() {
        this.reset();
        for (const [user, totals] of inputs.accounting.totals()) {
          this.inc({ user, direction: 'in' }, pick === 'bytes' ? totals.bytesIn : totals.packetsIn);
          this.inc({ user, direction: 'out' }, pick === 'bytes' ? totals.bytesOut : totals.packetsOut);
        }
      },
    });
  perUser(
    'facade_user_bytes_total',
    'Tunnel bytes per user since the server started; direction in: from the client, out: to it',
    'bytes',
  );
  perUser('facade_user_packets_total', 'Tunnel packets per user since the server started', 'packets');
  new Gauge({
    name: 'facade_user_quota_used_bytes',
    help: 'Bytes both ways in the current quota period, for users with a quota',
    labelNames: ['user', 'period'],
    registers,
    collect() {
      this.reset();
      for (const [user, summary] of Object.entries(status().usage ?? {})) {
        if (summary.quotaUsed !== undefined)
          this.set({ user, period: summary.quotaPeriod ?? '' }, summary.quotaUsed);
      }
    },
  });
  new Counter({
    name: 'facade_drops_total',
    help: 'Packets dropped, by reason',
    labelNames: ['reason'],
    registers,
    collect() {
      const drops = inputs.accounting.drops();
      const engine = status().engine;
      this.reset();
      this.inc({ reason: 'spoof' }, drops.spoof);
      this.inc({ reason: 'queue_full' }, drops.queueFull);
      this.inc({ reason: 'rate_limit' }, drops.rateLimit);
      this.inc({ reason: 'invalid' }, drops.invalid);
      this.inc({ reason: 'offload' }, drops.offload);
      this.inc({ reason: 'unknown_destination' }, engine.unknownDestinationDrops);
      this.inc({ reason: 'client_to_client' }, engine.clientToClientDrops);
      this.inc({ reason: 'tun_write' }, engine.tunWriteDrops);
    },
  });
  new Counter({
    name: 'facade_tun_packets_read_total',
    help: 'Packets read from the TUN (divide by facade_tun_batches_total for the mean batch size)',
    registers,
    collect() {
      this.reset();
      this.inc(status().tunStats.packetsRead);
    },
  });
  new Counter({
    name: 'facade_tun_batches_total',
    help: 'Batches read from the TUN (one JavaScript call each)',
    registers,
    collect() {
      this.reset();
      this.inc(status().tunStats.batches);
    },
  });
  new Gauge({
    name: 'facade_tun_largest_batch_packets',
    help: 'The largest TUN batch seen, in packets',
    registers,
    collect() {
      this.set(status().tunStats.largestBatch);
    },
  });
  new Gauge({
    name: 'facade_event_loop_delay_seconds',
    help: 'Event-loop delay of each process since the previous report, by statistic (mean, p99, max)',
    labelNames: ['process', 'stat'],
    registers,
    collect() {
      this.reset();
      for (const { process, delay } of inputs.loopDelays()) {
        this.set({ process, stat: 'mean' }, delay.meanSeconds);
        this.set({ process, stat: 'p99' }, delay.p99Seconds);
        this.set({ process, stat: 'max' }, delay.maxSeconds);
      }
    },
  });
  new Gauge({
    name: 'facade_certificate_expiry_timestamp_seconds',
    help: 'When the served certificate expires (Unix time)',
    registers,
    collect() {
      this.reset();
      const expiry = certificateExpiry(inputs.certificate());
      if (expiry !== undefined) this.set(expiry);
    },
  });
  new Gauge({
    name: 'facade_pool_addresses',
    help: 'IPv4 pool addresses, by state (size: leasable; active: in a session; held: kept for a reconnect)',
    labelNames: ['state'],
    registers,
    collect() {
      const pool = status().pool;
      this.set({ state: 'size' }, pool.size);
      this.set({ state: 'active' }, pool.active);
      this.set({ state: 'held' }, pool.held);
      this.set({ state: 'reserved_idle' }, pool.reservedIdle);
    },
  });
  return registry;
}

/** Serves GET /metrics from `registry` at `where`; everything else is a bare 404. */
export function serveMetrics(
  registry: Registry,
  where: { readonly host: string; readonly port: number },
): Promise<{ server: Server; port: number }> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || (request.url ?? '').split('?')[0] !== '/metrics') {
      response.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
      (err: unknown) => response.writeHead(500).end(String(err)),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(where.port, where.host, () => {
      server.off('error', reject);
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address !== null ? address.port : 0 });
    });
  });
}
