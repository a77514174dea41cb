// `facade init`: a starter config with a random secret tunnel path, a users file with a first user whose key
// is generated, the server's self-signed certificate made ahead of it, and that user's invite; then the
// next steps. Everything is checked before anything is written.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { ensureStateDir } from '../certs/cert-store.js';
import { loadOrCreateSelfSigned } from '../certs/self-signed.js';
import { renderHelp } from '../config/help.js';
import { text } from '../config/kinds.js';
import { loadSettings } from '../config/load.js';
import type { DialAddress } from '../config/schema.js';
import { SERVER_SETTINGS } from '../config/server-settings.js';
import { resolveSettings, withDefault } from '../config/setting.js';
import { facadeError } from '../core/errors.js';
import { keyFromSeed, randomSeed, validateUserName } from '../protocol/credentials.js';
import { formatInvite } from '../protocol/invite.js';
import { UsersFile } from '../users/users-file.js';
import { dialTarget, inviteText, selfSignedNames } from './invites.js';

const run = promisify(execFile);

const INIT_SETTINGS = {
  dir: withDefault(text('DIR'), '.', { flag: 'dir', help: 'where to write facade.json and users.json' }),
  host: {
    ...SERVER_SETTINGS.host,
    help: "the name or address clients dial (and a port, if not the server's 443); default: the ACME domain, else this machine's address on its default route",
  },
  domain: SERVER_SETTINGS.domain,
  email: SERVER_SETTINGS.email,
  user: withDefault(text('NAME'), 'user1', {
    flag: 'user',
    help: 'the first user, who gets a generated key and an invite',
  }),
};

const USAGE =
  'Usage: facade init [--dir DIR] [--host NAME_OR_IP[:PORT]] [--domain NAME --email ADDR] [--user NAME]';

/** What the defaults of a new installation are; the operator edits facade.json for the rest. */
const DEFAULT_LISTEN = '0.0.0.0:443';
const DEFAULT_POOL = '10.89.0.0/24';

export async function runInit(argv: string[]): Promise<number> {
  const { raw, help } = loadSettings('init', INIT_SETTINGS, argv, { configFile: false });
  if (help) {
    process.stdout.write(`${USAGE}\n\n${renderHelp(INIT_SETTINGS, { configFile: false })}\n`);
    return 0;
  }
  const options = resolveSettings(INIT_SETTINGS, raw, (input, problem) =>
    facadeError('CLI_USAGE', [`--${input.flag} ${problem}`, 'init']),
  );
  validateUserName(options.user);
  if (options.domain !== undefined && options.email === undefined)
    throw facadeError('CLI_USAGE', ['--domain needs --email ADDR (the ACME account contact)', 'init']);
  const dir = resolve(options.dir);
  const configPath = resolve(dir, 'facade.json');
  const usersPath = resolve(dir, 'users.json');
  for (const path of [configPath, usersPath])
    if (existsSync(path)) {
      process.stderr.write(`facade init: ${path} exists; not overwriting it\n`);
      return 1;
    }
  const guessed = options.host === undefined && options.domain === undefined;
  const host: DialAddress | undefined = guessed ? await defaultRouteAddress() : options.host;

  const tunnelPath = `/${randomBytes(12).toString('base64url')}`;
  const listen = SERVER_SETTINGS.listen.kind.read(DEFAULT_LISTEN);
  const config = {
    listen: DEFAULT_LISTEN,
    ...(host === undefined ? {} : { host: host.port === undefined ? host.host : dialText(host) }),
    ...(options.domain === undefined ? {} : { domain: options.domain, email: options.email }),
    pool: DEFAULT_POOL,
    users: usersPath,
    tunnelPath,
    stateDir: resolve(dir, 'state'),
  };
  const target = dialTarget({ ...config, host, listen, plaintext: false });
  await mkdir(dir, { recursive: true });
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600, flag: 'wx' });

  // The first user: a generated key, whose only copy is the invite (the users file keeps the public key).
  const seed = randomSeed();
  const users = await UsersFile.load(usersPath, { allowMissing: true, tunnelPath });
  users.addKey(options.user, keyFromSeed(options.user, seed).publicKey, tunnelPath);
  await users.save();

  // The certificate the server will serve, made now (with the names the server gives it) so that the
  // invite can carry its pin; with a domain, the system CAs vouch for the ACME certificate instead.
  let pin: string | undefined;
  if (options.domain === undefined) {
    await ensureStateDir(config.stateDir);
    pin = (await loadOrCreateSelfSigned(config.stateDir, { names: selfSignedNames({ listen }) })).fingerprint;
  }
  const link = formatInvite({
    user: options.user,
    seed,
    host: target.host,
    port: target.port,
    tunnelPath,
    pin,
  });

  const out = process.stdout;
  out.write(
    `wrote ${configPath} (secret tunnel path ${tunnelPath}), ${usersPath} with user ${options.user}` +
      `${pin === undefined ? '' : `, and the self-signed certificate in ${config.stateDir}`}\n`,
  );
  if (guessed)
    out.write(
      `clients will dial ${dialText(target)}, this machine's address on its default route` +
        `${privateAddress(target.host) ? ' (a private address: clients on the internet need your public name or address)' : ''}` +
        `; if that is not how clients reach it, run facade init again with --host NAME_OR_IP, or edit "host" in ${configPath}\n`,
    );
  out.write(`\n${await inviteText(link, options.user, { qr: out.isTTY === true })}\n`);
  out.write(
    `next:\n` +
      `  sudo npx facade server --config ${configPath} --nat    # --nat: clients reach the internet through this server\n` +
      `  # on the client (the link in quotes; --save keeps it in a 0600 file for later runs):\n` +
      `  sudo npx facade client --invite 'LINK' --full-tunnel --save /etc/facade/client.json\n` +
      `  # more users: npx facade user invite NAME --config ${configPath} --new-key\n`,
  );
  return 0;
}

/**
 * This machine's source address towards the internet, from the routing table (`ip route get` of a
 * documentation address: a lookup, nothing is sent). Refuses with the flag to use when there is no route.
 */
async function defaultRouteAddress(): Promise<DialAddress> {
  try {
    const { stdout } = await run('ip', ['-j', 'route', 'get', '192.0.2.1']);
    const [route] = JSON.parse(stdout) as { prefsrc?: string }[];
    if (route?.prefsrc !== undefined && isIP(route.prefsrc) === 4)
      return { host: route.prefsrc, port: undefined };
  } catch {
    // No default route, or no iproute2: said below.
  }
  throw facadeError('CLI_USAGE', [
    'cannot tell which address clients dial (this machine has no default route): give --host NAME_OR_IP[:PORT]',
    'init',
  ]);
}

function dialText(address: { host: string; port: number | undefined }): string {
  const host = isIP(address.host) === 6 ? `[${address.host}]` : address.host;
  return address.port === undefined ? host : `${host}:${address.port}`;
}

function privateAddress(host: string): boolean {
  return /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(host);
}
