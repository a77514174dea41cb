// Runs the real `facade` binary (dist/src/cli.js) inside test namespaces and waits for what it logs.

import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readStatusFile, type StatusSnapshot } from '../../src/server/status.js';
import type { Netns } from './netns.js';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface FacadeProcess {
  readonly child: ChildProcess;
  /** Every line written so far (pino JSON, or plain text). */
  readonly lines: string[];
  /** Resolves with the first line (present or future) matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Counts lines matching `pattern`. */
  count(pattern: RegExp): number;
  /** SIGTERM (or `signal`), then wait for exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `facade ARGS` inside `ns`, or in this process's own namespace when `ns` is null (for a server on
 * loopback; its TUN lives as long as the process, so stop() it in an after hook). `wrapper` is a command
 * that execs the rest of its arguments, put in front of node (e.g. setpriv dropping a capability); `cli` another build of facade's cli.js (the Docker image's, test/netns/docker-steps.test.ts).
 */
export function startFacade(
  ns: Netns | null,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; wrapper?: readonly string[]; cli?: string } = {},
): FacadeProcess {
  const spawnOptions = options.env === undefined ? {} : { env: options.env };
  const [cmd, ...cmdArgs] = [...(options.wrapper ?? []), process.execPath, options.cli ?? CLI, ...args] as [
    string,
    ...string[],
  ];
  const child =
    ns === null
      ? spawn(cmd, cmdArgs, { stdio: 'pipe', ...spawnOptions })
      : ns.spawn(cmd, cmdArgs, spawnOptions);
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];
  let partial = '';
  const onChunk = (chunk: Buffer): void => {
    partial += chunk.toString('utf8');
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      if (process.env.FACADE_TEST_VERBOSE) process.stderr.write(`[${args[0]}] ${line}\n`);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const waiter = waiters[i] as (typeof waiters)[number];
        if (waiter.pattern.test(line)) {
          waiters.splice(i, 1);
          waiter.resolve(line);
        }
      }
    }
  };
  child.stdout?.on('data', onChunk);
  child.stderr?.on('data', onChunk);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    waitFor(pattern, timeoutMs = 20_000) {
      const found = lines.find((line) => pattern.test(line));
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new Error(
              `timed out waiting for ${pattern} from facade ${args[0]}; it said:\n${lines.slice(-15).join('\n')}`,
            ),
          );
        }, timeoutMs);
        const onExit = (): void => {
          setTimeout(() => {
            clearTimeout(timer);
            reject(
              new Error(
                `facade ${args[0]} exited before ${pattern}; it said:\n${lines.slice(-15).join('\n')}`,
              ),
            );
          }, 100);
        };
        child.once('exit', onExit);
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            child.removeListener('exit', onExit);
            resolve(line);
          },
        });
      });
    },
    count(pattern) {
      return lines.filter((line) => pattern.test(line)).length;
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Polls `<stateDir>/status.json` until `predicate` holds. */
export async function waitForStatus(
  stateDir: string,
  predicate: (status: StatusSnapshot) => boolean,
  timeoutMs = 15_000,
): Promise<StatusSnapshot> {
  const deadline = Date.now() + timeoutMs;
  let last: StatusSnapshot | undefined;
  while (Date.now() < deadline) {
    last = await readStatusFile(stateDir);
    if (last !== undefined && predicate(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`status never matched; last: ${JSON.stringify(last)}`);
}

/**
 * `facade client` arguments as the namespace tests start it: the server's URL (tunnel path included), a
 * password file, the pinned certificate (omitted when `pin` is), a TUN of its own and a 1 s keepalive
 * (`keepalive: null` keeps the client's default), then `more`.
 */
export function clientArgs(options: {
  readonly url: string;
  readonly user: string;
  readonly passwordFile: string;
  readonly pin?: string | undefined;
  readonly tun: string;
  readonly keepalive?: string | null;
  readonly more?: readonly string[];
}): string[] {
  const keepalive = options.keepalive === undefined ? '1' : options.keepalive;
  return [
    'client',
    options.url,
    '--user',
    options.user,
    '--password-file',
    options.passwordFile,
    ...(options.pin === undefined ? [] : ['--pin', options.pin]),
    '--tun',
    options.tun,
    ...(keepalive === null ? [] : ['--keepalive', keepalive]),
    ...(options.more ?? []),
  ];
}

/** A pino line's field. */
export function field(line: string, name: string): unknown {
  try {
    return (JSON.parse(line) as Record<string, unknown>)[name];
  } catch {
    return undefined;
  }
}

/**
 * `facade user add NAME --users FILE --tunnel-path PATH` through the real CLI inside `ns`, the password on
 * stdin; rejects with what the command said when it fails.
 */
export async function addUser(
  ns: Netns,
  options: { users: string; tunnelPath: string; name: string; password: string },
): Promise<void> {
  const child = ns.spawn(process.execPath, [
    CLI,
    'user',
    'add',
    options.name,
    '--users',
    options.users,
    '--tunnel-path',
    options.tunnelPath,
  ]);
  let said = '';
  child.stdout?.on('data', (d: Buffer) => {
    said += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    said += d.toString();
  });
  child.stdin?.end(`${options.password}\n`);
  const code = await new Promise((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`facade user add ${options.name} exited ${String(code)}: ${said}`);
}
