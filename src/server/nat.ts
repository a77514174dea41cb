// `--nat`: the clients' way to the internet through the server. Forwarding on, and in facade's own
// nftables table: the pools masqueraded out of one interface, and TCP's MSS clamped to what fits the tunnel.
//
// The server gives up root right after start-up (privileges.ts), yet the rules must go at exit, even after a
// SIGKILL. So the table is made with `flags owner` (Linux 5.12+): it belongs to the netlink socket of the
// process that made it, no other process can change it, and the kernel deletes it when that socket closes.
// That process is a root `nft -i` started here, before the drop, that lives as long as the server:
//
//   server (drops root) ══ stdin pipe ══► sh (root): { print the rules; cat >/dev/null } ──► nft -i (root)
//
// sh hands nft the rules once, then only drains the server's pipe until it ends: the unprivileged server
// can never send nft a command. When the server closes the pipe, exits or is killed, cat sees the end,
// nft's input ends, nft exits and the table goes with its socket. Nothing needs root at exit.
//
// Forwarding (net.ipv4.ip_forward, and net.ipv6.conf.all.forwarding with --pool6) is turned on if it was
// off, and left on at exit: turning it off then would need root, and would cut off whatever else on this
// machine came to rely on it meanwhile (another VPN, Docker, a second facade). The log says so.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { facadeError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

const run = promisify(execFile);

/** nft answering the rules, or exiting at close, takes far less; more means it hangs. */
const NFT_TIMEOUT_MS = 10_000;
/** Bytes of the TCP and IP headers a segment carries besides its payload (no options): MSS = MTU - this. */
const TCP_IPV4_HEADERS = 40;
const TCP_IPV6_HEADERS = 60;
/** Names that go into nft rules between quotes: nothing that could end the quotes. */
const SAFE_NAME = /^[A-Za-z0-9_.@-]{1,15}$/;

export interface NatOptions {
  /** The interface towards the internet; undefined: that of the IPv4 default route. */
  readonly iface?: string | undefined;
  /** The pools, as prefixes without host bits (AddressPool's ipv4Cidr, ipv6Cidr). */
  readonly pool4: string;
  readonly pool6?: string | undefined;
  readonly tunName: string;
  /** The tunnel MTU: TCP segments through the TUN are clamped to fit it. */
  readonly mtu: number;
  readonly logger: Logger;
}

export interface Nat {
  readonly iface: string;
  /** `inet facade_<tun>`: what `nft list table inet …` shows while the server runs. */
  readonly table: string;
  /** Ends the rule holder; the kernel removes the table. Idempotent; needs no privilege. */
  close(): Promise<void>;
}

/** Sets up forwarding and the table (as root, before the drop); resolves once nft has them all. */
export async function startNat(options: NatOptions): Promise<Nat> {
  const { logger, tunName } = options;
  if (!SAFE_NAME.test(tunName))
    throw facadeError('NAT_IFACE', [`the TUN name "${tunName}" cannot go into a firewall rule`]);
  const iface = options.iface ?? (await defaultRouteInterface());
  await checkInterface(iface, tunName);
  await enableForwarding(options, iface);
  await warnAboutDroppingForwardChains(logger);

  const table = `facade_${tunName.replace(/[^A-Za-z0-9_]/g, '_')}`;
  const rules = natRules({ ...options, iface, table });
  // cat keeps the pipe into nft open on fd 3 (its output goes to /dev/null) until the server's pipe ends;
  // not through its stdout, which a shell may replace when it execs the group's last command. `kill 0`
  // ends the whole holder, its own process group, once nft exits for any reason, so the server hears of it.
  const holder = spawn(
    'sh',
    ['-c', '{ printf "%s\\n" "$1"; exec 3>&1; cat >/dev/null; } | { nft -i; kill 0; }', 'sh', rules],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
      // Its own process group: a Ctrl-C at the terminal is for the server, which then closes the holder
      // itself; the holder must not die first and leave a moment without rules, or log a false alarm.
      detached: true,
    },
  );
  // Ending stdin of a holder that is already gone must not become an unhandled EPIPE.
  holder.stdin?.on('error', () => undefined);
  let closing = false;
  const exited = new Promise<void>((resolve) => holder.once('close', () => resolve()));
  try {
    await nftAnswer(holder, rules);
  } catch (err) {
    holder.stdin?.end();
    await exited;
    throw err;
  }
  holder.once('close', (code, signal) => {
    if (!closing)
      logger.error(
        { table, code, signal },
        'the nft process holding the NAT rules exited: the rules are gone and clients lose the internet until the server restarts',
      );
  });
  logger.info(
    { iface, table: `inet ${table}`, pool: options.pool4, pool6: options.pool6 },
    `NAT on: clients reach the internet through ${iface} (nftables table inet ${table}, removed at exit)`,
  );

  return {
    iface,
    table: `inet ${table}`,
    close: async () => {
      if (closing) return exited;
      closing = true;
      holder.stdin?.end();
      const timer = setTimeout(() => {
        logger.warn(
          { table },
          'the nft process holding the NAT rules has not exited; the rules stay until it does',
        );
      }, NFT_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
      logger.info({ table: `inet ${table}` }, 'NAT rules removed');
    },
  };
}

/** The nft commands, one per line (nft -i reads lines), ending in a listing of the table: the sign they are in. */
export function natRules(options: {
  iface: string;
  table: string;
  tunName: string;
  pool4: string;
  pool6?: string | undefined;
  mtu: number;
}): string {
  const { iface, table, tunName, pool4, pool6, mtu } = options;
  const t = `inet ${table}`;
  const lines = [
    `add table ${t} { flags owner; }`,
    `add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `add rule ${t} postrouting oifname "${iface}" ip saddr ${pool4} masquerade`,
    ...(pool6 === undefined
      ? []
      : [`add rule ${t} postrouting oifname "${iface}" ip6 saddr ${pool6} masquerade`]),
    // A server on the internet offers segments for a 1500-byte path; the tunnel carries less. The SYNs
    // both ways through the TUN are clamped so neither end sends what would have to be fragmented.
    `add chain ${t} forward { type filter hook forward priority mangle; policy accept; }`,
  ];
  for (const [family, mss] of [
    ['ipv4', mtu - TCP_IPV4_HEADERS],
    ['ipv6', mtu - TCP_IPV6_HEADERS],
  ] as const) {
    if (family === 'ipv6' && pool6 === undefined) continue;
    for (const direction of ['iifname', 'oifname'])
      lines.push(
        `add rule ${t} forward ${direction} "${tunName}" meta nfproto ${family} tcp flags & (syn | rst) == syn tcp option maxseg size > ${mss} tcp option maxseg size set ${mss}`,
      );
  }
  lines.push(`list table ${t}`);
  return lines.join('\n');
}

/** Waits for nft's listing of the table; refuses with what nft said when a rule is missing from it. */
function nftAnswer(holder: ChildProcess, rules: string): Promise<void> {
  const expected = rules.split('\n').filter((line) => line.startsWith('add rule')).length;
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err === null) resolve();
      else reject(err);
    };
    const fail = (why: string): void =>
      finish(
        facadeError('NAT_SETUP', [
          `nft refused the rules: ${why}${stderr.trim() === '' ? '' : `: ${stderr.trim()}`}`,
        ]),
      );
    const timer = setTimeout(() => fail(`no answer within ${NFT_TIMEOUT_MS / 1000} s`), NFT_TIMEOUT_MS);
    holder.stdout?.setEncoding('utf8');
    holder.stderr?.setEncoding('utf8');
    holder.stdout?.on('data', (chunk: string) => {
      stdout += chunk;
      if (!/^}$/m.test(stdout)) return;
      // The listing is complete; an error about an earlier line was written before it. Give its bytes a
      // moment to arrive, then count the rules the kernel has.
      setTimeout(() => {
        const present = stdout.split('\n').filter((line) => /masquerade|maxseg size set/.test(line)).length;
        if (present !== expected || stderr.trim() !== '')
          fail(`${present} of ${expected} rules are in place`);
        else finish(null);
      }, 50);
    });
    holder.stderr?.on('data', (chunk: string) => {
      stderr += chunk;
    });
    holder.once('error', (err) => finish(facadeError('NAT_SETUP', [`cannot start sh: ${err.message}`])));
    holder.once('close', (code) => {
      if (code === 127 || /nft: (not found|No such file)/.test(stderr))
        finish(facadeError('NAT_SETUP', ['nft (nftables) is not installed: apt-get install nftables']));
      else if (/Operation not permitted/.test(stderr))
        finish(facadeError('NAT_SETUP', ['nft needs root (CAP_NET_ADMIN): start the server as root']));
      else fail(`nft exited (code ${code})`);
    });
  });
}

/** The interface of the IPv4 default route. */
async function defaultRouteInterface(): Promise<string> {
  let routes: { dev?: string }[] = [];
  try {
    routes = JSON.parse((await run('ip', ['-j', '-4', 'route', 'show', 'default'])).stdout || '[]');
  } catch {
    // Said below.
  }
  const dev = routes.find((route) => route.dev !== undefined)?.dev;
  if (dev === undefined)
    throw facadeError('NAT_IFACE', [
      'this machine has no IPv4 default route, so there is no interface to the internet to pick: name one, --nat IFACE',
    ]);
  if (!SAFE_NAME.test(dev))
    throw facadeError('NAT_IFACE', [`the default route's interface "${dev}" cannot go into a firewall rule`]);
  return dev;
}

async function checkInterface(iface: string, tunName: string): Promise<void> {
  if (iface === tunName)
    throw facadeError('NAT_IFACE', [
      `"${iface}" is the tunnel itself; name the interface towards the internet`,
    ]);
  try {
    await run('ip', ['link', 'show', 'dev', iface]);
  } catch {
    throw facadeError('NAT_IFACE', [`there is no interface "${iface}" (ip link lists them)`]);
  }
}

/** Turns forwarding on where it is off; it stays on at exit (see the top of this file). */
async function enableForwarding(options: NatOptions, iface: string): Promise<void> {
  const { logger } = options;
  const switches = [['net.ipv4.ip_forward', '/proc/sys/net/ipv4/ip_forward']];
  if (options.pool6 !== undefined) {
    switches.push(['net.ipv6.conf.all.forwarding', '/proc/sys/net/ipv6/conf/all/forwarding']);
    // With forwarding on, an interface with accept_ra=1 stops taking router advertisements, and a server
    // configured by SLAAC would lose its own IPv6 default route. 2 takes them anyway.
    const acceptRa = `/proc/sys/net/ipv6/conf/${iface}/accept_ra`;
    const value = (await readFile(acceptRa, 'utf8').catch(() => '')).trim();
    if (value === '1') {
      await writeSysctl(`net.ipv6.conf.${iface}.accept_ra`, acceptRa, '2');
      logger.info(
        `net.ipv6.conf.${iface}.accept_ra set to 2: ${iface} keeps taking router advertisements with forwarding on`,
      );
    }
  }
  for (const [name, path] of switches as [string, string][]) {
    const value = (await readFile(path, 'utf8').catch(() => '')).trim();
    if (value === '1') continue;
    await writeSysctl(name, path, '1');
    logger.info(`${name} set to 1 (forwarding on); it stays on when facade stops`);
  }
}

async function writeSysctl(name: string, path: string, value: string): Promise<void> {
  try {
    await writeFile(path, value);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw facadeError('NAT_SETUP', [
      `cannot set ${name}=${value} (${code ?? String(err)}): start the server as root${code === 'EROFS' ? `; in a container, give it the setting (docker run --sysctl ${name}=${value})` : ''}`,
    ]);
  }
}

/**
 * Another table's forward chain whose policy is drop (ufw's default, Docker's FORWARD) drops the tunnel's
 * traffic whatever our table accepts: an accept in one table does not overrule a drop in another. Said
 * once at start, with what to do; the firewall stays the operator's.
 */
async function warnAboutDroppingForwardChains(logger: Logger): Promise<void> {
  let listing: {
    nftables?: { chain?: { family: string; table: string; name: string; hook?: string; policy?: string } }[];
  };
  try {
    listing = JSON.parse((await run('nft', ['-j', 'list', 'chains'])).stdout);
  } catch {
    return; // nft missing or refusing: startNat says so next.
  }
  for (const entry of listing.nftables ?? []) {
    const chain = entry.chain;
    if (chain?.hook === 'forward' && chain.policy === 'drop')
      logger.warn(
        { chain: `${chain.family} ${chain.table} ${chain.name}` },
        `the firewall chain ${chain.family} ${chain.table} ${chain.name} drops forwarded packets by default: allow the tunnel's traffic there (with ufw: ufw route allow in on <tun>), or clients will not reach the internet`,
      );
  }
}
