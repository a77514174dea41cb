// A real ACME CA for tests: Debian's pebble and pebble-challtestsrv, started inside a namespace the test
// made. Debian ships no pebble configuration, so this writes one, with a self-signed certificate for
// pebble's own HTTPS listener (from tls-fixture.ts). challtestsrv is only the DNS server: every name
// resolves to the address the test gives (the server under test), so pebble's HTTP-01 validation
// reaches it for real (PEBBLE_VA_ALWAYS_VALID is not set).

import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Netns } from './netns.js';
import { makeTestCertificate, testCertificatePaths } from './tls-fixture.js';

export const PEBBLE_BIN = '/usr/bin/pebble';
export const CHALLTESTSRV_BIN = '/usr/bin/pebble-challtestsrv';

const PEBBLE_ACME_PORT = 14000;
const PEBBLE_MANAGEMENT_PORT = 15000;
const CHALLTESTSRV_DNS = '127.0.0.1:8053';
const CHALLTESTSRV_MANAGEMENT = '127.0.0.1:8055';
/** The SAN of pebble's listener certificate: its URLs use the address; 'localhost' as openssl's copy had. */
const PEBBLE_LISTENER_NAMES = ['127.0.0.1', 'localhost'];

/** How long pebble or challtestsrv may take to start listening. */
const READY_TIMEOUT_MS = 15_000;

/**
 * A reason to skip when pebble, challtestsrv, openssl or curl is missing; null when all are there. This
 * file no longer runs openssl, but acme.test.ts makes its own certificates with it and skips on this.
 */
export function pebbleSkipReason(): string | null {
  for (const bin of [PEBBLE_BIN, CHALLTESTSRV_BIN]) {
    if (!existsSync(bin)) return `${bin} is missing (apt-get install pebble)`;
  }
  for (const tool of ['openssl', 'curl']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is missing (apt-get install ${tool})`;
    }
  }
  return null;
}

export interface PebbleOptions {
  /** Working directory for the config, pebble's listener certificate and the fetched root. */
  dir: string;
  /** Address every DNS name resolves to (the server under test). */
  serverAddress: string;
  /** Port pebble's VA connects to for HTTP-01. */
  httpPort: number;
}

export class Pebble {
  readonly #ns: Netns;
  readonly #options: PebbleOptions;
  readonly #listenerDir: string;
  #pebble: ChildProcess | undefined;
  #challtestsrv: ChildProcess | undefined;
  /** Log of both, for failure messages. */
  output = '';

  /** pebble's listener certificate: what NODE_EXTRA_CA_CERTS must contain for a client to talk to it. */
  readonly listenerCertPath: string;
  readonly listenerKeyPath: string;
  readonly configPath: string;
  readonly directoryUrl = `https://127.0.0.1:${PEBBLE_ACME_PORT}/dir`;

  constructor(ns: Netns, options: PebbleOptions) {
    this.#ns = ns;
    this.#options = options;
    this.#listenerDir = join(options.dir, 'pebble-listener');
    const listener = testCertificatePaths(this.#listenerDir);
    this.listenerCertPath = listener.certPath;
    this.listenerKeyPath = listener.keyPath;
    this.configPath = join(options.dir, 'pebble-config.json');
  }

  /** Writes the config and listener certificate, starts challtestsrv and waits for it. */
  async prepare(): Promise<void> {
    await makeTestCertificate(this.#listenerDir, PEBBLE_LISTENER_NAMES);
    const config = {
      pebble: {
        listenAddress: `127.0.0.1:${PEBBLE_ACME_PORT}`,
        managementListenAddress: `127.0.0.1:${PEBBLE_MANAGEMENT_PORT}`,
        certificate: this.listenerCertPath,
        privateKey: this.listenerKeyPath,
        httpPort: this.#options.httpPort,
        tlsPort: 443,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
      },
    };
    await writeFile(this.configPath, JSON.stringify(config, null, 2));

    this.#challtestsrv = this.#spawn(CHALLTESTSRV_BIN, [
      '-defaultIPv4',
      this.#options.serverAddress,
      '-defaultIPv6',
      '',
      '-dns01',
      CHALLTESTSRV_DNS,
      '-management',
      CHALLTESTSRV_MANAGEMENT,
      '-http01',
      '',
      '-https01',
      '',
      '-tlsalpn01',
      '',
    ]);
    await this.#waitFor(
      ['-s', '-o', '/dev/null', `http://${CHALLTESTSRV_MANAGEMENT}/`],
      'pebble-challtestsrv',
    );
  }

  /** Starts pebble (again, after stop()) and waits until its directory answers. */
  async start(): Promise<void> {
    this.#pebble = this.#spawn(
      PEBBLE_BIN,
      ['-config', this.configPath, '-dnsserver', CHALLTESTSRV_DNS, '-strict=false'],
      {
        PEBBLE_VA_NOSLEEP: '1',
        // acme-client retries bad nonces, but each retry is noise in a failure log.
        PEBBLE_WFE_NONCEREJECT: '0',
      },
    );
    await this.#waitFor(
      ['-sf', '-o', '/dev/null', '--cacert', this.listenerCertPath, this.directoryUrl],
      'pebble',
    );
  }

  /** Stops pebble (challtestsrv keeps running) and waits for it to exit. */
  async stop(): Promise<void> {
    const pebble = this.#pebble;
    this.#pebble = undefined;
    if (pebble === undefined || pebble.exitCode !== null || pebble.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      pebble.once('exit', () => resolve());
      pebble.kill('SIGTERM');
    });
  }

  /** Stops pebble and challtestsrv (Netns.destroy() would kill them too; this waits for their exit). */
  async close(): Promise<void> {
    await this.stop();
    const challtestsrv = this.#challtestsrv;
    this.#challtestsrv = undefined;
    if (challtestsrv === undefined || challtestsrv.exitCode !== null || challtestsrv.signalCode !== null)
      return;
    await new Promise<void>((resolve) => {
      challtestsrv.once('exit', () => resolve());
      challtestsrv.kill('SIGTERM');
    });
  }

  /** pebble's issuing root (regenerated at every pebble start), written to `path`. */
  async fetchRoot(path: string): Promise<string> {
    const result = await this.#ns.exec(
      'curl',
      ['-sf', '--cacert', this.listenerCertPath, `https://127.0.0.1:${PEBBLE_MANAGEMENT_PORT}/roots/0`],
      { check: true },
    );
    await writeFile(path, result.stdout);
    return result.stdout;
  }

  #spawn(bin: string, args: string[], env: Record<string, string> = {}): ChildProcess {
    const child = this.#ns.spawn(bin, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
      cwd: this.#options.dir,
    });
    const name = bin.slice(bin.lastIndexOf('/') + 1);
    const collect = (chunk: Buffer) => {
      this.output += chunk
        .toString()
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => `[${name}] ${line}\n`)
        .join('');
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    return child;
  }

  async #waitFor(curlArgs: string[], what: string): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const result = await this.#ns.exec('curl', curlArgs);
      if (result.code === 0) return;
      if (Date.now() > deadline) throw new Error(`${what} did not start listening:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
