// Throwaway network namespaces and veth pairs for tests that need real interfaces, in the spirit of
// wireguard-go's tests/netns.sh: every test builds its own namespaces, pushes real traffic inside them
// and deletes them afterwards, also when it fails or the process is interrupted.
//
// Everything goes through iproute2 (`ip netns add`, `ip netns exec`, `ip -n NS ...`), so a test that
// fails leaves commands one can paste into a shell to look at what was built.

import { type ChildProcess, execFile, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';

/** Linux interface names are at most IFNAMSIZ - 1 = 15 characters. */
const MAX_IFNAME_LENGTH = 15;

/** A command inside a namespace that takes longer than this is stuck (a ping with no reply, say). */
const DEFAULT_EXEC_TIMEOUT_MS = 30_000;

let cachedSkipReason: string | null | undefined;

/**
 * null when this process may build namespaces and TUN devices (root, `ip netns add` works,
 * /dev/net/tun exists); otherwise a sentence saying what is missing, for `test(..., {skip})`.
 * The probe runs once per process.
 */
export function netnsSkipReason(): string | null {
  if (cachedSkipReason !== undefined) return cachedSkipReason;
  cachedSkipReason = probeNetns();
  return cachedSkipReason;
}

function probeNetns(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0)
    return 'needs root (network namespaces and TUN devices); run the suite as root';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing (modprobe tun, or --device /dev/net/tun)';
  const probe = uniqueName('probe');
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    return `cannot create a network namespace with \`ip netns add\`: ${stderr || String(err)}`;
  }
  try {
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch {
    // The probe namespace is empty; a failed delete leaves nothing that matters.
  }
  return null;
}

let nameCounter = 0;
// Two random characters guard against a leftover namespace from a crashed run whose pid is reused.
const runTag = Math.floor(Math.random() * 36 * 36)
  .toString(36)
  .padStart(2, '0');

/**
 * A name unique to this process and call, at most 15 characters (fits an interface name):
 * prefix (shortened if needed) + pid in base 36 + a random run tag + a counter.
 */
export function uniqueName(prefix: string): string {
  nameCounter += 1;
  const suffix = `${process.pid.toString(36)}${runTag}${nameCounter.toString(36)}`;
  const room = MAX_IFNAME_LENGTH - suffix.length;
  if (room < 1) throw new Error(`uniqueName: no room for a prefix in "${suffix}"`);
  return `${prefix.slice(0, room)}${suffix}`;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; null when the command was killed (timeout or signal). */
  code: number | null;
}

export interface ExecOptions {
  /** Kill the command after this many ms (default 30 s). */
  timeoutMs?: number;
  /** Reject with the command's stderr when it exits non-zero (default false: look at `code`). */
  check?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Runs a command to completion and resolves with its output; never rejects unless `check` is set. */
export function run(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS,
        maxBuffer: 16 * 1024 * 1024,
        env: opts.env ?? process.env,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        let code: number | null = 0;
        if (err) {
          const c = (err as { code?: unknown }).code;
          code = typeof c === 'number' ? c : null;
        }
        if (opts.check && code !== 0) {
          reject(
            new Error(`\`${cmd} ${args.join(' ')}\` exited with ${code ?? 'a signal'}: ${stderr.trim()}`, {
              cause: err,
            }),
          );
          return;
        }
        resolve({ stdout, stderr, code });
      },
    );
  });
}

/** `ip ...` in the current namespace; rejects with ip's message on failure. */
export async function ip(args: readonly string[]): Promise<string> {
  return (await run('ip', args, { check: true })).stdout;
}

// Namespaces still alive in this process, deleted synchronously on exit or interrupt if a test did not.
const liveNamespaces = new Set<Netns>();
let exitHooksInstalled = false;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', destroyAllSync);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      destroyAllSync();
      // Re-raise so the exit status still says "killed by signal".
      process.kill(process.pid, signal);
    });
  }
}

function destroyAllSync(): void {
  for (const ns of liveNamespaces) ns.destroySync();
}

export class Netns {
  readonly name: string;
  readonly #children = new Set<ChildProcess>();
  #destroyed = false;

  private constructor(name: string) {
    this.name = name;
  }

  /** Creates a namespace named uniqueName(prefix) with its loopback up. */
  static async create(prefix = 'fns'): Promise<Netns> {
    installExitHooks();
    const ns = new Netns(uniqueName(prefix));
    await ip(['netns', 'add', ns.name]);
    liveNamespaces.add(ns);
    try {
      await ip(['-n', ns.name, 'link', 'set', 'lo', 'up']);
    } catch (err) {
      await ns.destroy();
      throw err;
    }
    return ns;
  }

  /** Runs `ip netns exec NAME cmd args...` to completion. */
  exec(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** `ip -n NAME args...`; rejects with ip's message on failure. */
  ip(args: readonly string[]): Promise<string> {
    return ip(['-n', this.name, ...args]);
  }

  /**
   * Starts `cmd args...` inside the namespace (`ip netns exec` execs it, so the child's pid is the
   * command's own). destroy() kills it if it is still running.
   */
  spawn(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    if (this.#destroyed) throw new Error(`namespace ${this.name} is destroyed`);
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: 'pipe', ...opts });
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    child.once('error', () => this.#children.delete(child));
    return child;
  }

  /** Kills what spawn() started, then deletes the namespace (its veths go with it). Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const exits: Promise<void>[] = [];
    for (const child of this.#children) {
      if (child.exitCode === null && child.signalCode === null) {
        exits.push(new Promise((resolve) => child.once('exit', () => resolve())));
        child.kill('SIGKILL');
      }
    }
    await Promise.all(exits);
    this.#children.clear();
    await run('ip', ['netns', 'del', this.name]);
    liveNamespaces.delete(this);
  }

  /** For exit handlers, where nothing asynchronous runs any more. */
  destroySync(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const child of this.#children) child.kill('SIGKILL');
    this.#children.clear();
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
    liveNamespaces.delete(this);
  }
}

export interface VethAddresses {
  /** IPv4 address with prefix for side A, e.g. '198.18.7.1/24'. */
  addrA: string;
  addrB: string;
  /** Optional IPv6 addresses with prefix, e.g. 'fd00:7::1/64' (added with nodad, usable at once). */
  addr6A?: string;
  addr6B?: string;
}

/** A veth pair with unique names, one end in each namespace, addressed and up. */
export async function createVethPair(
  a: Netns,
  b: Netns,
  addrs: VethAddresses,
): Promise<{ ifA: string; ifB: string }> {
  const ifA = uniqueName('va');
  const ifB = uniqueName('vb');
  await ip(['link', 'add', ifA, 'netns', a.name, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  await a.ip(['addr', 'add', addrs.addrA, 'dev', ifA]);
  await b.ip(['addr', 'add', addrs.addrB, 'dev', ifB]);
  // Duplicate address detection would hold IPv6 addresses "tentative" for a second or more.
  if (addrs.addr6A) await a.ip(['addr', 'add', addrs.addr6A, 'dev', ifA, 'nodad']);
  if (addrs.addr6B) await b.ip(['addr', 'add', addrs.addr6B, 'dev', ifB, 'nodad']);
  await a.ip(['link', 'set', ifA, 'up']);
  await b.ip(['link', 'set', ifB, 'up']);
  return { ifA, ifB };
}

/** Creates a namespace whose deletion is registered in `t.after`, so it goes also when the test fails. */
export async function withNetns(t: TestContext, prefix = 'fns'): Promise<Netns> {
  const ns = await Netns.create(prefix);
  t.after(() => ns.destroy());
  return ns;
}
