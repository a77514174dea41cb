#!/usr/bin/env node
// facade: one binary, two modes. `facade server` serves a website and tunnels for those who know the way in;
// `facade client` connects to it. Commands: server, client, user, init, status.

import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { TunnelClient } from './client/client.js';
import { runUserCommand } from './commands/user.js';
import { type FlagSpec, loadSettings, renderFlagHelp } from './config/load.js';
import { validateClientConfig, validateServerConfig } from './config/schema.js';
import { FacadeError } from './core/errors.js';
import { createLogger, type Logger } from './core/log.js';
import { TunDevice } from './net/tun.js';
import { startServer } from './server/server.js';
import { UsersFile } from './users/users-file.js';

const HELP = `facade — a VPN whose server is an ordinary HTTPS website

Usage:
  facade init [--dir DIR]                 write a starter config, users file and secret tunnel path
  facade server [options]                 serve the decoy site on HTTPS and accept tunnels
  facade client https://HOST[:PORT]/PATH  connect to a facade server
  facade user add|del|list NAME --users FILE
  facade status [--state-dir DIR]         show the running server's sessions

Run \`facade COMMAND --help\` for the options of one command.
`;

const SERVER_FLAGS: Record<string, FlagSpec> = {
  listen: { key: 'listen', type: 'string', help: 'ADDR:PORT of the HTTPS site (default 0.0.0.0:443)' },
  cert: { key: 'cert', type: 'string', help: 'certificate chain file (PEM)' },
  key: { key: 'key', type: 'string', help: 'private key file (PEM)' },
  domain: {
    key: 'domain',
    type: 'string',
    help: "get a Let's Encrypt certificate for this name (ACME HTTP-01)",
  },
  email: { key: 'email', type: 'string', help: 'ACME account contact' },
  'acme-directory': { key: 'acmeDirectory', type: 'string', help: 'ACME directory URL (another CA)' },
  'acme-staging': { key: 'acmeStaging', type: 'boolean', help: "use Let's Encrypt staging" },
  'http-listen': {
    key: 'httpListen',
    type: 'string',
    help: 'ADDR:PORT of the plain-HTTP redirect/ACME listener (default port 80)',
  },
  pool: {
    key: 'pool',
    type: 'string',
    help: 'IPv4 prefix clients get addresses from; the first host is the server',
  },
  pool6: { key: 'pool6', type: 'string', help: 'IPv6 prefix clients get addresses from' },
  users: { key: 'users', type: 'string', help: 'users file (facade user add)' },
  'tunnel-path': { key: 'tunnelPath', type: 'string', help: 'secret path of the tunnel upgrade' },
  site: {
    key: 'site',
    type: 'string',
    help: 'static folder served as the website (default: the bundled site)',
  },
  upstream: {
    key: 'upstream',
    type: 'string',
    help: 'reverse-proxy the website to this local app (http://127.0.0.1:PORT)',
  },
  'state-dir': {
    key: 'stateDir',
    type: 'string',
    help: 'leases, certificates, status (default /var/lib/facade)',
  },
  plaintext: { key: 'plaintext', type: 'boolean', help: 'NO TLS: plain TCP, for debugging only' },
  'client-to-client': { key: 'clientToClient', type: 'boolean', help: 'let clients reach each other' },
  mtu: { key: 'mtu', type: 'string', help: 'tunnel MTU (default 1400)' },
  dns: { key: 'dns', type: 'string', help: 'DNS servers pushed to clients, comma-separated' },
  route: {
    key: 'routes',
    type: 'string',
    multiple: true,
    help: 'extra prefix pushed to clients (repeatable)',
  },
  tun: { key: 'tunName', type: 'string', help: 'TUN interface name (default facade0)' },
  'no-offload': {
    key: 'noOffload',
    type: 'boolean',
    help: 'no GSO super-packets (IFF_VNET_HDR) on the TUN and the wire',
  },
  keepalive: {
    key: 'keepalive',
    type: 'string',
    help: 'keepalive interval in seconds (default 10; 0 = off)',
  },
  'log-level': { key: 'logLevel', type: 'string', help: 'fatal|error|warn|info|debug|trace' },
};

const CLIENT_FLAGS: Record<string, FlagSpec> = {
  user: { key: 'user', type: 'string', help: 'user name' },
  'password-file': { key: 'passwordFile', type: 'string', help: 'file whose first line is the password' },
  ca: { key: 'ca', type: 'string', help: 'extra CA certificate (PEM) to trust besides the system CAs' },
  pin: {
    key: 'pin',
    type: 'string',
    help: 'trust exactly the server certificate with this fingerprint (sha256:…)',
  },
  'full-tunnel': { key: 'fullTunnel', type: 'boolean', help: 'send all traffic through the tunnel' },
  plaintext: { key: 'plaintext', type: 'boolean', help: 'NO TLS: plain TCP, for debugging only' },
  tun: { key: 'tunName', type: 'string', help: 'TUN interface name (default facade-c0)' },
  keepalive: {
    key: 'keepalive',
    type: 'string',
    help: 'keepalive interval in seconds (default 10; 0 = off)',
  },
  'no-dns': { key: 'noDns', type: 'boolean', help: 'do not apply DNS servers pushed by the server' },
  'no-offload': { key: 'noOffload', type: 'boolean', help: 'do not announce the offload capability' },
  'log-level': { key: 'logLevel', type: 'string', help: 'fatal|error|warn|info|debug|trace' },
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(HELP);
      return 0;
    case 'server':
      return runServer(rest);
    case 'client':
      return runClient(rest);
    case 'user':
      return runUserCommand(rest, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    case 'init':
      return runInit(rest);
    case 'status':
      return runStatus(rest);
    default:
      process.stderr.write(`facade: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

async function runServer(argv: string[]): Promise<number> {
  const { settings, help } = loadSettings('server', argv, SERVER_FLAGS);
  if (help) {
    process.stdout.write(
      `Usage: facade server [--config FILE] [options]\n\n${renderFlagHelp(SERVER_FLAGS)}\n`,
    );
    return 0;
  }
  if (settings.noOffload === true) settings.offload = false;
  delete settings.noOffload;
  const config = validateServerConfig(settings);
  const logger = createLogger({ level: config.logLevel });
  const server = await startServer(config, logger);
  // SIGHUP: renew the ACME certificate now (an operator's "reload"); the old one serves until it succeeds.
  process.on('SIGHUP', () => {
    if (server.certificates === undefined) {
      logger.info('SIGHUP: nothing to renew (no ACME certificate)');
      return;
    }
    logger.info('SIGHUP: renewing the certificate now');
    server.certificates.renewNow().catch((err: unknown) => {
      logger.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'forced renewal failed; the old certificate keeps serving',
      );
    });
  });
  await untilSignal(logger);
  await server.close();
  return 0;
}

async function runClient(argv: string[]): Promise<number> {
  const { settings, positionals, help } = loadSettings('client', argv, CLIENT_FLAGS);
  if (help) {
    process.stdout.write(
      `Usage: facade client https://HOST[:PORT]/PATH [--config FILE] [options]\n\n${renderFlagHelp(CLIENT_FLAGS)}\n`,
    );
    return 0;
  }
  if (positionals[0] !== undefined) settings.url = positionals[0];
  if (settings.noDns === true) settings.dns = false;
  delete settings.noDns;
  if (settings.noOffload === true) settings.offload = false;
  delete settings.noOffload;
  const config = validateClientConfig(settings);
  const logger = createLogger({ level: config.logLevel });
  if (config.plaintext)
    logger.warn('PLAINTEXT MODE: no TLS. Everything crosses the network in clear. Debugging only.');
  const client = new TunnelClient({
    config,
    logger,
    openTun: ({ vnetHdr }) => TunDevice.open({ name: config.tunName, vnetHdr }),
  });
  await client.start();
  await Promise.race([untilSignal(logger), client.done]);
  await client.stop();
  return client.fatalError === undefined ? 0 : 1;
}

function untilSignal(logger: Logger): Promise<void> {
  return new Promise((resolvePromise) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'shutting down');
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      resolvePromise();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

async function runInit(argv: string[]): Promise<number> {
  const { settings, help } = loadSettings('init', argv, {
    dir: { key: 'dir', type: 'string', help: 'where to write facade.json and users.json (default .)' },
  });
  if (help) {
    process.stdout.write('Usage: facade init [--dir DIR]\n');
    return 0;
  }
  const dir = resolve(typeof settings.dir === 'string' ? settings.dir : '.');
  const configPath = resolve(dir, 'facade.json');
  if (existsSync(configPath)) {
    process.stderr.write(`facade init: ${configPath} exists; not overwriting it\n`);
    return 1;
  }
  const tunnelPath = `/${randomBytes(12).toString('base64url')}`;
  const config = {
    listen: '0.0.0.0:443',
    pool: '10.89.0.0/24',
    users: resolve(dir, 'users.json'),
    tunnelPath,
    stateDir: resolve(dir, 'state'),
  };
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  const users = await UsersFile.load(config.users, { allowMissing: true });
  await users.save();
  process.stdout.write(
    `wrote ${configPath} (secret tunnel path ${tunnelPath})\n\n` +
      `next:\n  echo 'a-long-password' | npx facade user add alice --users ${config.users}\n` +
      `  sudo npx facade server --config ${configPath}\n` +
      `  # on a client: sudo npx facade client https://SERVER${tunnelPath} --user alice --password-file FILE --pin <fingerprint the server logs>\n`,
  );
  return 0;
}

async function runStatus(argv: string[]): Promise<number> {
  const { settings } = loadSettings('status', argv, {
    'state-dir': { key: 'stateDir', type: 'string', help: 'the server state directory' },
  });
  const stateDir = typeof settings.stateDir === 'string' ? settings.stateDir : '/var/lib/facade';
  const path = resolve(stateDir, 'status.json');
  let status: { pid: number; updated: string; listen: string; sessions: Array<Record<string, unknown>> };
  try {
    status = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    process.stderr.write(
      `facade status: no status at ${path}: is the server running with --state-dir ${stateDir}?\n`,
    );
    return 1;
  }
  let alive = true;
  try {
    process.kill(status.pid, 0);
  } catch {
    alive = false;
  }
  process.stdout.write(
    `server pid ${status.pid} ${alive ? 'running' : 'NOT running'}, listening on ${status.listen}, updated ${status.updated}\n`,
  );
  process.stdout.write(`${status.sessions.length} session(s)\n`);
  for (const s of status.sessions) {
    process.stdout.write(
      `  ${s.user}  ${s.ipv4}  from ${s.remote}  since ${s.since}  in ${s.bytesIn} B  out ${s.bytesOut} B\n`,
    );
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Everything of ours is closed by now; a third-party timer (acme-client's uncancellable retry wait)
    // must not hold a stopping server for a minute. Give pino's last lines a moment to drain.
    if (process.argv[2] === 'server' || process.argv[2] === 'client')
      setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => {
    const code = err instanceof FacadeError ? ` [${err.code}]` : '';
    process.stderr.write(`facade: ${err instanceof Error ? err.message : String(err)}${code}\n`);
    process.exitCode = 1;
  },
);
