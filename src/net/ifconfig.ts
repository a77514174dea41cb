// Interface configuration (addresses, MTU, link state, routes) through iproute2's `ip` command.
//
// Why `ip` and not rtnetlink in the addon: configuration happens a handful of times per process (at
// start-up, when a session's route is added), never per packet, so a process spawn costs nothing that
// matters. `ip` is on every Linux machine that can run a VPN, its error messages are the ones admins
// know, and every command we run can be pasted into a shell to debug. rtnetlink in C++ would be several
// hundred lines of message building for no gain on the data path.
//
// execFile, never a shell: arguments are passed as a vector, so a device name can never become a
// command. Every function accepts {netns} to run `ip -n NS ...` inside a named network namespace.

import { execFile } from 'node:child_process';
import { facadeError } from '../core/errors.js';
import { parseCidr } from './packet.js';

/** A configuration command that has not finished in this time is stuck (a hung netlink socket). */
const IP_COMMAND_TIMEOUT_MS = 10_000;

export interface NetnsOption {
  /** Name of a network namespace (as in `ip netns list`) to run the command in. */
  netns?: string;
}

export interface RouteOptions extends NetnsOption {
  dev?: string;
  via?: string;
  metric?: number;
}

export interface RouteInfo {
  dev: string;
  via?: string;
  src?: string;
}

/** Runs `ip [-n NS] args...`; resolves with stdout, rejects with FACADE_ERR_IFCONFIG naming `subject`. */
function runIp(subject: string, args: readonly string[], options: NetnsOption = {}): Promise<string> {
  const argv = options.netns === undefined ? [...args] : ['-n', options.netns, ...args];
  const command = `ip ${argv.join(' ')}`;
  return new Promise((resolve, reject) => {
    execFile('ip', argv, { timeout: IP_COMMAND_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const said = stderr.trim() || err.message;
        reject(facadeError('IFCONFIG', [subject, command, said], { cause: err, syscall: 'ip' }));
        return;
      }
      resolve(stdout);
    });
  });
}

function checkDevice(dev: string): void {
  if (dev.length === 0 || Buffer.byteLength(dev) > 15 || /[/:\s]/.test(dev)) {
    throw facadeError('IFCONFIG', [
      dev,
      '(not run)',
      'an interface name is 1..15 bytes without "/", ":" or spaces',
    ]);
  }
}

/** Adds an IPv4 or IPv6 address with prefix, e.g. '198.18.9.1/24' or 'fd00::1/64'. */
export async function addAddress(dev: string, cidr: string, options: NetnsOption = {}): Promise<void> {
  checkDevice(dev);
  const parsed = parseCidr(cidr);
  const args = ['addr', 'add', `${parsed.address}/${parsed.prefix}`, 'dev', dev];
  // A point-to-point tunnel has no neighbour to conflict with; DAD would only hold the address
  // "tentative" (unusable) for a second or more.
  if (parsed.family === 6) args.push('nodad');
  await runIp(dev, args, options);
}

/** Sets the MTU. The kernel enforces its own bounds (68 for IPv4, 1280 for IPv6 to stay enabled). */
/**
 * The TUN's transmit queue is the kernel's queue of packets waiting for us to read them. Linux gives a TUN
 * 500 packets; under a burst (a TCP window opening at once) it overflows before the next read and TCP
 * inside the tunnel sees loss. Ethernet's default of 1000 holds a burst at the MTU.
 */
export async function setTxQueueLength(
  dev: string,
  packets: number,
  options: NetnsOption = {},
): Promise<void> {
  checkDevice(dev);
  if (!Number.isInteger(packets) || packets < 1 || packets > 1_000_000) {
    throw facadeError('IFCONFIG', [dev, `ip link set ${dev} txqueuelen ${packets}`, 'expected 1..1000000']);
  }
  await runIp(dev, ['link', 'set', 'dev', dev, 'txqueuelen', String(packets)], options);
}

export async function setMtu(dev: string, mtu: number, options: NetnsOption = {}): Promise<void> {
  checkDevice(dev);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw facadeError('IFCONFIG', [
      dev,
      `ip link set ${dev} mtu ${mtu}`,
      'the MTU must be an integer in 68..65535',
    ]);
  }
  await runIp(dev, ['link', 'set', 'dev', dev, 'mtu', String(mtu)], options);
}

export async function setLinkUp(dev: string, options: NetnsOption = {}): Promise<void> {
  checkDevice(dev);
  await runIp(dev, ['link', 'set', 'dev', dev, 'up'], options);
}

export async function setLinkDown(dev: string, options: NetnsOption = {}): Promise<void> {
  checkDevice(dev);
  await runIp(dev, ['link', 'set', 'dev', dev, 'down'], options);
}

function routeArgs(cidr: string, options: RouteOptions): { subject: string; args: string[]; family: 4 | 6 } {
  const parsed = parseCidr(cidr);
  const args = [`${parsed.address}/${parsed.prefix}`];
  if (options.via !== undefined) args.push('via', options.via);
  if (options.dev !== undefined) {
    checkDevice(options.dev);
    args.push('dev', options.dev);
  }
  if (options.metric !== undefined) {
    if (!Number.isInteger(options.metric) || options.metric < 0 || options.metric > 0xffffffff) {
      throw facadeError('IFCONFIG', [
        cidr,
        '(not run)',
        `metric ${options.metric} is not an unsigned 32-bit integer`,
      ]);
    }
    args.push('metric', String(options.metric));
  }
  return { subject: options.dev ?? cidr, args, family: parsed.family };
}

/** Adds a route to cidr through a device and/or gateway. */
export async function addRoute(cidr: string, options: RouteOptions = {}): Promise<void> {
  const { subject, args, family } = routeArgs(cidr, options);
  await runIp(subject, [family === 6 ? '-6' : '-4', 'route', 'add', ...args], options);
}

/**
 * Deletes a route. A route that is already gone ("No such process", ESRCH from the kernel) is not an
 * error: the device it pointed at may have been deleted, which takes its routes with it.
 */
export async function delRoute(cidr: string, options: Omit<RouteOptions, 'metric'> = {}): Promise<void> {
  const { subject, args, family } = routeArgs(cidr, options);
  try {
    await runIp(subject, [family === 6 ? '-6' : '-4', 'route', 'del', ...args], options);
  } catch (err) {
    if (/No such process|Cannot find device/.test((err as Error).message)) return;
    throw err;
  }
}

/** The route the kernel would use for an address (`ip -j route get`). */
export async function routeGet(address: string, options: NetnsOption = {}): Promise<RouteInfo> {
  const stdout = await runIp(address, ['-j', 'route', 'get', address], options);
  let routes: Array<{ dev?: string; gateway?: string; prefsrc?: string }>;
  try {
    routes = JSON.parse(stdout);
  } catch (err) {
    throw facadeError(
      'IFCONFIG',
      [address, `ip -j route get ${address}`, `unparsable output: ${stdout.slice(0, 200)}`],
      {
        cause: err,
      },
    );
  }
  const route = routes[0];
  if (route?.dev === undefined) {
    throw facadeError('IFCONFIG', [
      address,
      `ip -j route get ${address}`,
      'no route with a device in the answer',
    ]);
  }
  const info: RouteInfo = { dev: route.dev };
  if (route.gateway !== undefined) info.via = route.gateway;
  if (route.prefsrc !== undefined) info.src = route.prefsrc;
  return info;
}

/**
 * Moves a device into another network namespace. Options.netns is the namespace it is in now; an open
 * TUN fd keeps working after the move.
 */
export async function moveToNetns(dev: string, ns: string, options: NetnsOption = {}): Promise<void> {
  checkDevice(dev);
  await runIp(dev, ['link', 'set', 'dev', dev, 'netns', ns], options);
}
