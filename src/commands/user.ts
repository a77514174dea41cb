// `facade user add|del|list`: manage the users file.
//
// The password is read from stdin, never from the command line (argv is visible to every local user in
// /proc and lands in shell history). From a pipe or file: the first line, line ending stripped. From a
// terminal: a prompt with echo turned off, asked twice.

import { isIPv4, isIPv6 } from 'node:net';
import type { ReadStream } from 'node:tty';
import { renderHelp } from '../config/help.js';
import { type Kind, onOff, text, where } from '../config/kinds.js';
import { loadSettings } from '../config/load.js';
import { SERVER_SETTINGS } from '../config/server-settings.js';
import { optional, resolveSettings, withDefault } from '../config/setting.js';
import { FacadeError, facadeError, isFacadeError } from '../core/errors.js';
import {
  deriveUserSeed,
  keyFromSeed,
  MAX_PASSWORD_BYTES,
  passwordFromText,
  randomSeed,
  userNameProblem,
} from '../protocol/credentials.js';
import { formatInvite } from '../protocol/invite.js';
import { Accounting } from '../server/accounting.js';
import {
  formatBytes,
  formatRate,
  parseExpiry,
  parseRate,
  parseSize,
  type QuotaPeriod,
  type UserPolicy,
} from '../users/policy.js';
import { type UserRecord, UsersFile } from '../users/users-file.js';
import { dialTarget, type InviteSource, inviteText, trustOf } from './invites.js';

export interface CommandIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export const USER_USAGE = `Usage:
  facade user add NAME --config FILE [--static-ipv4 ADDR] [--static-ipv6 ADDR]
  facade user add NAME --users FILE --tunnel-path PATH [--static-ipv4 ADDR] [--static-ipv6 ADDR]
  facade user add NAME ... [--expires ISO-8601|never] [--quota SIZE|none [--quota-period day|month]]
                          [--rate RATE|none] [--max-sessions 1]
  facade user set NAME (--users FILE | --config FILE) [the same policy options]
  facade user invite NAME --config FILE [--new-key] [--host NAME_OR_IP[:PORT]] [--state-dir DIR]
  facade user del NAME (--users FILE | --config FILE)
  facade user list (--users FILE | --config FILE) [--state-dir DIR]

--config takes the users file and the tunnel path from the server's config (facade.json).
add   reads the password from stdin: the first line of a pipe or file (e.g.
      \`facade user add alice --config facade.json < alice.pass\`), or, on a terminal,
      asks for it twice without echo. The file is created (mode 0600) if missing.
      It stores only a public key, derived from the password and the tunnel path:
      after changing the tunnel path, add every user again (into a new file).
invite prints a facade:// link with everything a client needs (server, tunnel path,
      user, key, certificate pin), and its QR code on a terminal: the client runs
      \`facade client --invite LINK\`. The link carries the user's key, never the
      password, and is a secret like one. For a user with a password: the password
      on stdin, as for add (checked against the users file). --new-key instead gives
      the user a generated key (adding the user if missing): their old password
      or invite stops working. Clients dial "host" of the config (or --host), else
      its ACME domain; self-signed servers are pinned by the certificate in the
      state directory.
del   removes the user; their running tunnel is not cut, the next connect fails.
set   changes a user's policy; a running server applies it within seconds, without
      dropping anyone: a new rate to the running session, an expiry or quota
      already passed ends it. --expires 2027-01-01 (or a full ISO 8601 time;
      never: no expiry); --quota 50GB (sizes: 500MB, 50GB, 1.5GiB; both ways
      together, per --quota-period, default month, in UTC; none: no quota);
      --rate 20mbit (bits per second, each way: kbit, mbit, gbit; none: no limit).
      An expired user, or one over quota, is refused at login like a wrong
      password, and a running session of theirs ends with the reason.
      --max-sessions: 1 is the only value: a user holds one address and a second
      login replaces the first.
list  prints one user per line, with static addresses, policy, and the bytes used
      today and this month (from usage.json in --state-dir, which the server saves).

The server re-reads the users file when it changes; no restart is needed.
`;

/** Exit codes: success, the operation failed, the command line was wrong. */
const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

function address(family: 4 | 6): Kind<string> {
  return where(text('ADDR'), (value) =>
    (family === 4 ? isIPv4(value) : isIPv6(value)) ? null : `"${value}" is not an IPv${family} address`,
  );
}

// The users file and the tunnel path come from flags or from the server's config file (--config): the
// same keys as the server's settings, so `facade user add NAME --config facade.json` finds both.
const USER_SETTINGS = {
  users: optional(text('FILE'), { flag: 'users', help: 'the users file' }),
  tunnelPath: optional(SERVER_SETTINGS.tunnelPath.kind, {
    flag: 'tunnel-path',
    help: "add: the server's secret tunnel path (the users' keys are derived from it)",
  }),
  staticIpv4: optional(address(4), {
    flag: 'static-ipv4',
    help: 'add: the IPv4 address this user always gets',
  }),
  staticIpv6: optional(address(6), {
    flag: 'static-ipv6',
    help: 'add: the IPv6 address this user always gets',
  }),
  expires: optional(text('ISO-8601|never'), {
    flag: 'expires',
    help: 'add, set: when the account expires (2027-01-01 or a full ISO 8601 time, UTC unless an offset is given); never: no expiry',
  }),
  quota: optional(text('SIZE|none'), {
    flag: 'quota',
    help: 'add, set: data both ways per quota period (500MB, 50GB, 1.5GiB); none: no quota',
  }),
  quotaPeriod: optional(text('day|month'), {
    flag: 'quota-period',
    help: 'add, set: the quota period, a calendar day or month in UTC (default month)',
  }),
  rate: optional(text('RATE|none'), {
    flag: 'rate',
    help: 'add, set: rate limit each way in bits per second (512kbit, 20mbit, 1gbit); none: no limit',
  }),
  maxSessions: optional(text('N'), {
    flag: 'max-sessions',
    help: 'add, set: sessions at once; 1 is the only value (one address a user; a second login replaces the first)',
  }),
  newKey: withDefault(onOff, false, {
    flag: 'new-key',
    help: 'invite: give the user a generated key (added if missing); their old password or invite stops working',
  }),
  host: SERVER_SETTINGS.host,
  stateDir: { ...SERVER_SETTINGS.stateDir, help: `invite: ${SERVER_SETTINGS.stateDir.help}` },
  // From the server's config only: how clients trust it, and its port.
  listen: {
    ...SERVER_SETTINGS.listen,
    flag: undefined,
    help: "invite: the config's listen, whose port clients dial when host names none",
  },
  domain: {
    ...SERVER_SETTINGS.domain,
    flag: undefined,
    help: "invite: the config's domain, dialled without host, its certificate trusted through the system CAs",
  },
  cert: {
    ...SERVER_SETTINGS.cert,
    flag: undefined,
    help: "invite: the config's cert, pinned when self-signed, else trusted through the system CAs",
  },
  plaintext: {
    ...SERVER_SETTINGS.plaintext,
    flag: undefined,
    help: "invite: the config's plaintext, for which there are no invites",
  },
};

/** Policy changes from the command line: undefined leaves a field as it is, null clears it. */
interface PolicyChanges {
  expires?: string | null;
  quotaBytes?: number | null;
  quotaPeriod?: QuotaPeriod;
  rateBitsPerSecond?: number | null;
}

interface ParsedArgs {
  action: 'add' | 'del' | 'list' | 'invite' | 'set';
  policy: PolicyChanges;
  name?: string;
  usersPath: string;
  tunnelPath?: string | undefined;
  staticIpv4?: string | undefined;
  staticIpv6?: string | undefined;
  newKey: boolean;
  invite: InviteSource;
}

const ACTIONS = ['add', 'set', 'del', 'list', 'invite'] as const;

const usage = (problem: string): FacadeError => facadeError('CLI_USAGE', [problem, 'user']);

/** Runs `facade user ...` with `argv` = the arguments after `user`; resolves to the exit code. */
export async function runUserCommand(argv: string[], io: CommandIo): Promise<number> {
  let args: ParsedArgs | undefined;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!isFacadeError(err, 'CLI_USAGE')) throw err;
    io.stderr.write(`facade user: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (args === undefined) {
    // --config is explained in the usage; its file is the server's, so no "config key" notes here.
    io.stdout.write(`${USER_USAGE}\nOptions:\n${renderHelp(USER_SETTINGS, { configFile: false })}\n`);
    return EXIT_OK;
  }
  try {
    switch (args.action) {
      case 'add':
        return await addUser(args, io);
      case 'del':
        return await deleteUser(args, io);
      case 'list':
        return await listUsers(args, io);
      case 'invite':
        return await inviteUser(args, io);
      case 'set':
        return await setUser(args, io);
    }
  } catch (err) {
    if (!(err instanceof FacadeError)) throw err;
    io.stderr.write(`facade user ${args.action}: ${err.message}\n`);
    // A bad name or password, or a users file to be made anew, is for the caller to fix, like a usage
    // error; the rest are failures.
    const callers = [
      'USER_NAME',
      'USER_PASSWORD',
      'USERS_FILE_V1',
      'USERS_FILE_REALM',
      'INVITE_UNAVAILABLE',
      'CLI_USAGE',
    ] as const;
    return callers.some((code) => isFacadeError(err, code)) ? EXIT_USAGE : EXIT_FAILED;
  }
}

/** The command line, or undefined when it asks for help. */
function parseArgs(argv: string[]): ParsedArgs | undefined {
  if (argv[0] === 'help') return undefined;
  const { raw, positionals, help } = loadSettings('user', USER_SETTINGS, argv, {
    configFile: SERVER_SETTINGS,
  });
  if (help) return undefined;
  const options = resolveSettings(USER_SETTINGS, raw, (input, problem) =>
    usage(`--${input.flag} ${problem}`),
  );

  const [action, name, ...extra] = positionals;
  if (action === undefined) throw usage('missing action: add, set, invite, del or list');
  if (!(ACTIONS as readonly string[]).includes(action))
    throw usage(`unknown action "${action}": expected add, set, invite, del or list`);
  if (options.users === undefined)
    throw usage("missing --users FILE (or --config FILE, the server's facade.json)");

  if (action === 'list') {
    if (name !== undefined) throw usage(`list takes no user name, got "${name}"`);
  } else {
    if (name === undefined) throw usage(`${action} needs a user name`);
    const problem = userNameProblem(name);
    if (problem !== null) throw usage(`user name "${name}" is not allowed: ${problem}`);
  }
  if (extra.length > 0) throw usage(`unexpected argument "${extra[0]}"`);
  if ((options.staticIpv4 !== undefined || options.staticIpv6 !== undefined) && action !== 'add')
    throw usage('--static-ipv4/--static-ipv6 only go with add');
  if (options.newKey && action !== 'invite') throw usage('--new-key only goes with invite');
  const policy = policyChanges(options);
  if (Object.keys(policy).length > 0 && action !== 'add' && action !== 'set')
    throw usage('--expires, --quota, --quota-period, --rate and --max-sessions only go with add or set');
  if (action === 'set' && Object.keys(policy).length === 0 && options.maxSessions === undefined)
    throw usage('set needs at least one of --expires, --quota, --quota-period, --rate, --max-sessions');
  if ((action === 'add' || action === 'invite') && options.tunnelPath === undefined)
    throw usage(
      `${action} needs the server's tunnel path (keys are derived from it): --config FILE (the server's facade.json) or --tunnel-path PATH`,
    );

  const parsed: ParsedArgs = {
    action: action as ParsedArgs['action'],
    policy,
    usersPath: options.users,
    tunnelPath: options.tunnelPath,
    staticIpv4: options.staticIpv4,
    staticIpv6: options.staticIpv6,
    newKey: options.newKey,
    invite: {
      host: options.host,
      domain: options.domain,
      listen: options.listen,
      stateDir: options.stateDir,
      cert: options.cert,
      plaintext: options.plaintext,
    },
  };
  if (name !== undefined) parsed.name = name;
  return parsed;
}

/** The policy options, checked; a bad value is a usage error naming the flag. */
function policyChanges(options: {
  expires?: string | undefined;
  quota?: string | undefined;
  quotaPeriod?: string | undefined;
  rate?: string | undefined;
  maxSessions?: string | undefined;
}): PolicyChanges {
  const changes: PolicyChanges = {};
  if (options.expires !== undefined) {
    const expires = options.expires === 'never' ? null : parseExpiry(options.expires);
    if (expires === null && options.expires !== 'never')
      throw usage(
        `--expires expects an ISO 8601 date or time (2027-01-01, 2027-01-01T12:00:00Z) or never, got "${options.expires}"`,
      );
    changes.expires = expires;
  }
  if (options.quota !== undefined) {
    const bytes = options.quota === 'none' ? null : parseSize(options.quota);
    if (bytes === null && options.quota !== 'none')
      throw usage(`--quota expects a size such as 500MB, 50GB or 1.5GiB, or none, got "${options.quota}"`);
    changes.quotaBytes = bytes;
  }
  if (options.quotaPeriod !== undefined) {
    if (options.quotaPeriod !== 'day' && options.quotaPeriod !== 'month')
      throw usage(`--quota-period expects day or month, got "${options.quotaPeriod}"`);
    changes.quotaPeriod = options.quotaPeriod;
  }
  if (options.rate !== undefined) {
    const bits = options.rate === 'none' ? null : parseRate(options.rate);
    if (bits === null && options.rate !== 'none')
      throw usage(
        `--rate expects bits per second of at least 8kbit, such as 512kbit, 20mbit or 1gbit, or none, got "${options.rate}"`,
      );
    changes.rateBitsPerSecond = bits;
  }
  if (options.maxSessions !== undefined && options.maxSessions !== '1')
    throw usage(
      `--max-sessions ${options.maxSessions}: 1 is the only value; a user holds one address and a second login replaces the first (give each device its own user instead)`,
    );
  return changes;
}

/** A policy with the changes applied. */
function applyChanges(current: UserPolicy, changes: PolicyChanges): UserPolicy {
  const next: { -readonly [K in keyof UserPolicy]: UserPolicy[K] } = { ...current };
  if (changes.expires !== undefined) next.expires = changes.expires ?? undefined;
  if (changes.rateBitsPerSecond !== undefined)
    next.rateBitsPerSecond = changes.rateBitsPerSecond ?? undefined;
  if (changes.quotaBytes !== undefined) {
    next.quotaBytes = changes.quotaBytes ?? undefined;
    next.quotaPeriod =
      changes.quotaBytes === null ? undefined : (changes.quotaPeriod ?? current.quotaPeriod ?? 'month');
  } else if (changes.quotaPeriod !== undefined) {
    if (current.quotaBytes === undefined) throw usage('--quota-period needs a quota: give --quota SIZE too');
    next.quotaPeriod = changes.quotaPeriod;
  }
  for (const key of Object.keys(next) as (keyof UserPolicy)[]) if (next[key] === undefined) delete next[key];
  return next;
}

/** The policy for people: "expires 2027-01-01T00:00:00.000Z, quota 50 GB a month, rate 20 Mbit/s". */
function describePolicy(policy: UserPolicy | undefined): string[] {
  if (policy === undefined) return [];
  const parts: string[] = [];
  if (policy.expires !== undefined) parts.push(`expires=${policy.expires}`);
  if (policy.quotaBytes !== undefined)
    parts.push(`quota=${formatBytes(policy.quotaBytes)}/${policy.quotaPeriod ?? 'month'}`);
  if (policy.rateBitsPerSecond !== undefined) parts.push(`rate=${formatRate(policy.rateBitsPerSecond)}`);
  return parts;
}

async function setUser(args: ParsedArgs, io: CommandIo): Promise<number> {
  const name = args.name!;
  const users = await UsersFile.load(args.usersPath);
  const current = users.get(name);
  if (current === undefined) throw facadeError('USER_UNKNOWN', [name, args.usersPath]);
  const record = users.setPolicy(name, applyChanges(current.policy ?? {}, args.policy));
  await users.save();
  const policy = describePolicy(record.policy);
  io.stdout.write(
    `set user "${name}" in ${args.usersPath}: ${policy.length === 0 ? 'no limits' : policy.join(' ')}\n`,
  );
  return EXIT_OK;
}

async function addUser(args: ParsedArgs, io: CommandIo): Promise<number> {
  const name = args.name!;
  // Load first: a missing name or an existing user is reported before anyone types a password.
  // A file made for another tunnel path is refused here too (USERS_FILE_REALM), before the password.
  const tunnelPath = args.tunnelPath!;
  const users = await UsersFile.load(args.usersPath, { allowMissing: true, tunnelPath });
  if (users.has(name)) throw facadeError('USER_EXISTS', [name, args.usersPath]);
  const password = await readPassword(name, io);
  const policy = applyChanges({}, args.policy);
  await users.add(name, password, tunnelPath, { ipv4: args.staticIpv4, ipv6: args.staticIpv6 });
  if (Object.keys(policy).length > 0) users.setPolicy(name, policy);
  await users.save();
  io.stdout.write(`added user "${name}" to ${args.usersPath}\n`);
  return EXIT_OK;
}

/**
 * `facade user invite NAME`: the link for a user, with the key derived from their password (read and
 * checked against the users file) or, with --new-key, a generated one stored in their place.
 */
async function inviteUser(args: ParsedArgs, io: CommandIo): Promise<number> {
  const name = args.name!;
  const tunnelPath = args.tunnelPath!;
  const users = await UsersFile.load(args.usersPath, { allowMissing: args.newKey, tunnelPath });
  if (!args.newKey && !users.has(name)) {
    io.stderr.write(
      `facade user invite: no user "${name}" in ${args.usersPath}; add one with a password (facade user add) or with a generated key (facade user invite ${name} --new-key)\n`,
    );
    return EXIT_FAILED;
  }
  // Everything the link needs is checked before anyone types a password or a key is replaced.
  const { host, port } = dialTarget(args.invite);
  const pin = await trustOf(args.invite);
  let seed: Buffer;
  if (args.newKey) {
    seed = randomSeed();
    const { publicKey } = keyFromSeed(name, seed);
    const existed = users.has(name);
    if (existed) users.replaceKey(name, publicKey);
    else users.addKey(name, publicKey, tunnelPath);
    await users.save();
    io.stderr.write(
      existed
        ? `gave "${name}" a new key in ${args.usersPath}: their old password or invite no longer opens a tunnel\n`
        : `added user "${name}" to ${args.usersPath}, with a generated key\n`,
    );
  } else {
    const password = await readPassword(name, io, { confirm: false });
    seed = await deriveUserSeed(tunnelPath, name, password);
    if (!keyFromSeed(name, seed).publicKey.equals(users.get(name)!.publicKey))
      throw facadeError('USER_PASSWORD', [
        name,
        'it is not the password the users file has the key of (a user made by facade init or --new-key has no password: give them a new key with --new-key)',
      ]);
  }
  const link = formatInvite({ user: name, seed, host, port, tunnelPath, pin });
  const tty = (io.stdout as NodeJS.WritableStream & { isTTY?: boolean }).isTTY === true;
  io.stdout.write(await inviteText(link, name, { qr: tty }));
  return EXIT_OK;
}

async function deleteUser(args: ParsedArgs, io: CommandIo): Promise<number> {
  const users = await UsersFile.load(args.usersPath);
  users.remove(args.name!);
  await users.save();
  io.stdout.write(`removed user "${args.name}" from ${args.usersPath}\n`);
  return EXIT_OK;
}

async function listUsers(args: ParsedArgs, io: CommandIo): Promise<number> {
  const users = await UsersFile.load(args.usersPath);
  if (users.permissionsWarning !== undefined)
    io.stderr.write(`facade user list: warning: ${users.permissionsWarning}\n`);
  // The server's accounting, as last saved (at most USAGE_SAVE_MS old while it runs).
  const usage = await Accounting.load(args.invite.stateDir);
  let out = '';
  for (const user of users.list()) {
    out += user.name;
    if (user.staticIpv4 !== undefined) out += `\tipv4=${user.staticIpv4}`;
    if (user.staticIpv6 !== undefined) out += `\tipv6=${user.staticIpv6}`;
    for (const part of describePolicy(user.policy)) out += `\t${part}`;
    out += usageText(usage, user);
    out += '\n';
  }
  io.stdout.write(out);
  return EXIT_OK;
}

/** "\ttoday=1.2 MB month=40 GB quota-used=40 GB" (in + out), or nothing for a user without usage. */
function usageText(usage: Accounting, user: UserRecord): string {
  const summary = usage.summary(user.name, user.policy);
  if (summary.quotaUsed === undefined && !usage.users().includes(user.name)) return '';
  const today = summary.today.bytesIn + summary.today.bytesOut;
  const month = summary.month.bytesIn + summary.month.bytesOut;
  let text = `\ttoday=${formatBytes(today)}\tmonth=${formatBytes(month)}`;
  if (summary.quotaUsed !== undefined) text += `\tquota-used=${formatBytes(summary.quotaUsed)}`;
  return text;
}

async function readPassword(name: string, io: CommandIo, { confirm = true } = {}): Promise<string> {
  const stdin = io.stdin as NodeJS.ReadableStream & Partial<ReadStream>;
  if (stdin.isTTY === true && typeof stdin.setRawMode === 'function') {
    const first = await promptHidden(stdin as ReadStream, io.stderr, `Password for ${name}: `, name);
    if (!confirm) return first;
    const second = await promptHidden(stdin as ReadStream, io.stderr, 'Again: ', name);
    if (first !== second) throw facadeError('USER_PASSWORD', [name, 'the two entries differ']);
    return first;
  }
  return passwordFromText(await readFirstLine(io.stdin, name));
}

/**
 * Reads up to and including the first newline (or to EOF), then stops reading so the rest of stdin is
 * left alone. Refuses more than MAX_PASSWORD_BYTES before the newline rather than buffering a whole file.
 */
function readFirstLine(stream: NodeJS.ReadableStream, name: string): Promise<string> {
  // +2 for the \r\n that passwordFromText strips.
  const limit = MAX_PASSWORD_BYTES + 2;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (err: Error | null) => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      // Done with stdin: let go of it, or a writer that keeps its end open would keep us alive.
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      if (err !== null) reject(err);
      else resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onData = (chunk: Buffer | string) => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      const newline = bytes.indexOf(0x0a);
      const part = newline === -1 ? bytes : bytes.subarray(0, newline + 1);
      chunks.push(part);
      length += part.length;
      if (length > limit)
        finish(
          facadeError('USER_PASSWORD', [
            name,
            `the first line of stdin is longer than ${MAX_PASSWORD_BYTES} bytes`,
          ]),
        );
      else if (newline !== -1) finish(null);
    };
    const onEnd = () => finish(null);
    const onError = (err: Error) => finish(err);
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.resume();
  });
}

/** Reads one line from a terminal in raw mode so nothing is echoed. Ctrl-C and Ctrl-D abort. */
function promptHidden(
  tty: ReadStream,
  out: NodeJS.WritableStream,
  prompt: string,
  name: string,
): Promise<string> {
  out.write(prompt);
  return new Promise((resolve, reject) => {
    let line = '';
    const done = (err: Error | null) => {
      tty.off('data', onData);
      tty.setRawMode(false);
      tty.pause();
      out.write('\n');
      if (err !== null) reject(err);
      else resolve(line);
    };
    const onData = (chunk: Buffer | string) => {
      for (const char of chunk.toString()) {
        if (char === '\r' || char === '\n') return done(null);
        if (char === '\u0003' || char === '\u0004')
          return done(facadeError('USER_PASSWORD', [name, 'input aborted']));
        if (char === '\u007f' || char === '\b') line = line.slice(0, -1);
        else line += char;
      }
    };
    tty.setRawMode(true);
    tty.on('data', onData);
    tty.resume();
  });
}
