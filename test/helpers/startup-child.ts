// The in-process half of test/netns/startup.test.ts, run inside the test's namespace with
// `ip netns exec NS node startup-child.js JSON`: startServer() on settings that must fail at one step,
// then, at once, checks that nothing it opened is still open.
//
// Prints one JSON line (StartupChildReport) on stdout and then simply returns: it never calls
// process.exit, so the process ends only when its event loop drains. The test measures how long that takes
// after the report; a handle left open by the failed start-up (a listening socket, a TUN reader, a timer)
// keeps it alive, and the active resources are then printed to stderr to say which.
//
// pino logs go to stderr as JSON lines.

import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { pino } from 'pino';
import { validateServerConfig } from '../../src/config/server-settings.js';
import { FacadeError } from '../../src/core/errors.js';
import { startServer } from '../../src/server/server.js';

export interface StartupChildInput {
  /** Raw settings as a config file gives them (camelCase keys), validated by validateServerConfig. */
  readonly settings: Record<string, unknown>;
  /** Ports the failed start may have bound: each must be bindable again at once. */
  readonly ports: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  /** Interface to look for afterwards (the --tun name). */
  readonly tun: string;
}

export interface StartupChildReport {
  /** True when startServer resolved (the case did not fail as it should; the server was closed again). */
  readonly started: boolean;
  readonly code?: string | undefined;
  readonly errno?: string | undefined;
  readonly message?: string | undefined;
  /** Milliseconds startServer took to settle. */
  readonly ms: number;
  /** 'host:port' → 'free', or the errno of binding it again. */
  readonly ports: Record<string, string>;
  /** Whether an interface of the --tun name exists afterwards, and whether it is a TUN device. */
  readonly tunExists: boolean;
  readonly tunIsTun: boolean;
}

/** How long after the report the child prints what still keeps it alive (it should be gone by then). */
const DIAGNOSE_AFTER_MS = 3_000;

const input = JSON.parse(process.argv[2] as string) as StartupChildInput;
const logger = pino(
  { level: 'debug', base: { pid: process.pid } },
  pino.destination({ dest: 2, sync: true }),
);

function bindAgain(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve('free')));
  });
}

async function main(): Promise<void> {
  const began = Date.now();
  let report: Omit<StartupChildReport, 'ports' | 'tunExists' | 'tunIsTun'>;
  try {
    const server = await startServer(validateServerConfig(input.settings), logger);
    report = { started: true, ms: Date.now() - began };
    await server.close();
  } catch (err) {
    report = {
      started: false,
      code: err instanceof FacadeError ? err.code : `not a FacadeError: ${String(err)}`,
      errno: err instanceof FacadeError ? err.errno : undefined,
      message: err instanceof Error ? err.message : String(err),
      ms: Date.now() - began,
    };
  }
  // At once: no delay between the rejection and these checks.
  const ports: Record<string, string> = {};
  for (const { host, port } of input.ports) ports[`${host}:${port}`] = await bindAgain(host, port);
  // `ip netns exec` mounts this namespace's /sys.
  const sys = `/sys/class/net/${input.tun}`;
  const tunExists = existsSync(sys);
  const tunIsTun = tunExists && existsSync(`${sys}/tun_flags`);
  const full: StartupChildReport = { ...report, ports, tunExists, tunIsTun };
  process.stdout.write(`${JSON.stringify(full)}\n`);

  // Does not keep the process alive; fires only if something else does.
  setTimeout(() => {
    process.stderr.write(
      `${JSON.stringify({ stillOpen: process.getActiveResourcesInfo(), tun: readIfExists(`${sys}/uevent`) })}\n`,
    );
  }, DIAGNOSE_AFTER_MS).unref();
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

void main();
