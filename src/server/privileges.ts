// Giving up root. The server needs root for a few start-up steps only: creating the TUN (CAP_NET_ADMIN),
// giving it its addresses and MTU with `ip` (CAP_NET_ADMIN), binding ports 443 and 80 (CAP_NET_BIND_SERVICE),
// and reading the operator's key files. After them it switches to an unprivileged user (--run-as, default
// nobody) with setgroups([]) + setgid + setuid, which also clears every capability, for good: nothing it
// does later needs one.
//
//   TUN reads and writes     the fd is open; reading and writing it needs no capability
//   TUN removal at exit      closing the fd removes the (non-persistent) device; no capability
//   routes and addresses     none after start-up: every client is in the pool prefix, which is the TUN's
//                            own kernel route; the server runs `ip` only in start-up (server.ts)
//   workers (--workers N)    forked after the switch: never privileged; each inherits its TUN queue fd
//   steering map updates     through the BPF map's fd, opened at start-up; no capability (Linux ≥ 6.5)
//   ports 443 and 80         bound before the switch (bound-port.ts), served only after it
//   ACME                     orders over outgoing HTTPS, challenges on the bound port 80, files in the
//                            state directory, which is chowned to the user before the switch
//   certificate reload       setSecureContext with the pair in memory; no file read
//   users file reload        chowned to the user (mode kept); `facade user add` run later by root keeps
//                            that owner (core/atomic-file.ts)
//   status.json, leases.json written in the state directory (the user's)

import { execFile } from 'node:child_process';
import { accessSync, chownSync, constants, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { facadeError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

/** The --run-as value that keeps root. */
export const KEEP_ROOT = 'root';

export interface Account {
  readonly name: string;
  readonly uid: number;
  /** The account's primary group: the only group the server keeps. */
  readonly gid: number;
}

export interface DropOptions {
  /** --run-as: a user name or uid. */
  readonly runAs: string;
  /** Chowned (with the files in it) to the user: written after the switch. */
  readonly stateDir: string;
  /** Chowned to the user (mode kept): re-read after the switch. */
  readonly usersFile: string;
  /** Served after the switch: checked to be readable by the user. */
  readonly siteDir?: string | undefined;
  readonly logger: Logger;
}

/**
 * `auto`: whoever started the server with sudo (their files, the clone of this repository with its
 * decoy site among them, are then reachable, and nothing runs as root), else nobody. A system service
 * names its own user.
 */
function resolveRunAs(runAs: string): string {
  if (runAs !== AUTO) return runAs;
  const sudoUser = process.env.SUDO_USER;
  return sudoUser !== undefined && sudoUser !== '' && sudoUser !== 'root' ? sudoUser : 'nobody';
}

const AUTO = 'auto';

/**
 * Switches the process to the --run-as user (see the top of this file), after handing it the files it
 * writes and re-reads; checks that root is gone for good and that the user can read and write what it
 * must. Returns who the process runs as. Throws FACADE_ERR_RUN_AS (unknown user, a failed switch, a file
 * the user cannot reach); the caller then closes what it opened and exits.
 */
export async function dropPrivileges(options: DropOptions): Promise<Account> {
  const { logger } = options;
  const runAs = resolveRunAs(options.runAs);
  const me = currentAccount();
  if (me.uid !== 0) {
    // Started unprivileged (capabilities given by a service manager or file capabilities): nothing to
    // switch from, and no way to switch to anyone else.
    if (runAs !== me.name && runAs !== String(me.uid))
      logger.warn(
        { runAs, uid: me.uid },
        `started as ${me.name}, not root: cannot switch to ${runAs}; the server stays ${me.name}`,
      );
    const caps = capabilities();
    if (caps.effective !== 0n)
      logger.warn(
        { capEff: caps.effective.toString(16) },
        `the server keeps capabilities it no longer needs (CapEff ${caps.effective.toString(16)}); give it CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only, or start it as root with --run-as`,
      );
    return me;
  }
  const account = runAs === KEEP_ROOT ? me : await lookupAccount(runAs);
  if (account === undefined)
    throw facadeError('RUN_AS', [
      runAs,
      'no such user (make a system user for facade: useradd --system --no-create-home --shell /usr/sbin/nologin facade, then --run-as facade)',
    ]);
  if (account.uid === 0) {
    logger.warn(
      { runAs },
      'RUNNING AS ROOT for the whole life of the process (--run-as root): the website, TLS and ACME run with every privilege, so a hole in any of them owns the machine. Use --run-as with an unprivileged user.',
    );
    return account;
  }

  handOver(options, account);
  const { setgroups, setgid, setuid } = process;
  try {
    if (setgroups === undefined || setgid === undefined || setuid === undefined)
      throw new Error('this platform has no setuid');
    setgroups.call(process, []);
    setgid.call(process, account.gid);
    setuid.call(process, account.uid);
  } catch (err) {
    throw facadeError('RUN_AS', [runAs, `switching failed: ${(err as Error).message}`], { cause: err });
  }
  checkRootIsGone(account);
  checkAccess({ ...options, runAs: account.name });
  logger.info(
    { user: account.name, uid: account.uid, gid: account.gid },
    `dropped root: running as ${account.name} (uid ${account.uid}, gid ${account.gid}), no capabilities`,
  );
  return account;
}

/** The user the process runs as now. */
function currentAccount(): Account {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  try {
    return { name: userInfo().username, uid, gid };
  } catch {
    // No passwd entry for our uid (a container's arbitrary uid).
    return { name: String(uid), uid, gid };
  }
}

/**
 * The passwd entry of a name or uid, through NSS (`getent passwd`, so LDAP and systemd's dynamic users
 * count); /etc/passwd when getent is missing. undefined when there is none.
 */
export async function lookupAccount(nameOrUid: string): Promise<Account | undefined> {
  const line = await new Promise<string | undefined | null>((resolve) => {
    execFile('getent', ['passwd', nameOrUid], { timeout: 10_000, encoding: 'utf8' }, (err, stdout) => {
      if (err === null) resolve(stdout.split('\n')[0]);
      // getent exits 2 for "no such entry"; anything else (not installed) falls back to the file.
      else resolve(typeof err.code === 'number' && err.code === 2 ? undefined : null);
    });
  });
  if (line === null) return fromPasswdFile(nameOrUid);
  return line === undefined ? undefined : parsePasswdLine(line);
}

function fromPasswdFile(nameOrUid: string): Account | undefined {
  let text: string;
  try {
    text = readFileSync('/etc/passwd', 'utf8');
  } catch {
    return undefined;
  }
  const accounts = text.split('\n').flatMap((line) => parsePasswdLine(line) ?? []);
  return accounts.find((a) => a.name === nameOrUid) ?? accounts.find((a) => String(a.uid) === nameOrUid);
}

function parsePasswdLine(line: string): Account | undefined {
  const [name, , uid, gid] = line.split(':');
  if (name === undefined || !/^\d+$/.test(uid ?? '') || !/^\d+$/.test(gid ?? '')) return undefined;
  return { name, uid: Number(uid), gid: Number(gid) };
}

/**
 * The state directory, its files and the users file become the user's. Modes are left alone (0700/0600
 * stay 0700/0600: nobody else gains anything). Only the directory's own regular files are touched, never
 * what a symbolic link points to, and nothing below a subdirectory: a --state-dir pointed at the wrong
 * place must not hand a tree to the user.
 */
function handOver(options: DropOptions, account: Account): void {
  const give = (path: string): void => {
    try {
      chownSync(path, account.uid, account.gid);
    } catch (err) {
      throw facadeError('RUN_AS', [account.name, `cannot give ${path} to it: ${(err as Error).message}`], {
        cause: err,
      });
    }
  };
  give(options.stateDir);
  for (const entry of readdirSync(options.stateDir)) {
    const path = join(options.stateDir, entry);
    if (lstatSync(path).isFile()) give(path);
  }
  give(options.usersFile);
}

/** The switch is for good: every uid and gid is the user's, no capability is left, root cannot come back. */
function checkRootIsGone(account: Account): void {
  const fail = (why: string): never => {
    throw facadeError('RUN_AS', [account.name, why]);
  };
  if (process.getuid?.() !== account.uid || process.geteuid?.() !== account.uid)
    fail(`the uid is ${process.getuid?.()}/${process.geteuid?.()} after setuid`);
  if (process.getgid?.() !== account.gid || process.getegid?.() !== account.gid)
    fail(`the gid is ${process.getgid?.()}/${process.getegid?.()} after setgid`);
  const groups = process.getgroups?.() ?? [];
  if (groups.some((g) => g !== account.gid)) fail(`supplementary groups are left: ${groups.join(',')}`);
  const caps = capabilities();
  if (caps.effective !== 0n || caps.permitted !== 0n)
    fail(
      `capabilities are left: CapEff ${caps.effective.toString(16)}, CapPrm ${caps.permitted.toString(16)}`,
    );
  let regained = false;
  try {
    process.setuid?.(0);
    regained = process.setuid !== undefined;
  } catch {
    // Expected: EPERM.
  }
  if (regained) fail('setuid(0) succeeded after the switch');
}

/** What the user must reach after the switch; a clear error now instead of a failing timer later. */
function checkAccess(options: DropOptions): void {
  const check = (path: string, mode: number, what: string): void => {
    try {
      accessSync(path, mode);
    } catch (err) {
      throw facadeError('RUN_AS', [
        options.runAs,
        `it cannot ${what} ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)}); every directory above it must be searchable by that user (chmod o+x, or move it), or choose a user who can reach it with --run-as`,
      ]);
    }
  };
  check(options.stateDir, constants.R_OK | constants.W_OK | constants.X_OK, 'write in the state directory');
  check(options.usersFile, constants.R_OK, 'read the users file');
  if (options.siteDir !== undefined)
    check(options.siteDir, constants.R_OK | constants.X_OK, 'read the site folder');
}

/** CapEff and CapPrm of this process, from /proc/self/status (0 when it cannot be read). */
export function capabilities(pid: number | 'self' = 'self'): { effective: bigint; permitted: bigint } {
  let text = '';
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return { effective: 0n, permitted: 0n };
  }
  const read = (name: string): bigint => {
    const hex = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(text)?.[1];
    return hex === undefined ? 0n : BigInt(`0x${hex}`);
  };
  return { effective: read('CapEff'), permitted: read('CapPrm') };
}
