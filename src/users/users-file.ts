// The users file: who may open a tunnel, and the one thing the server needs to check them.
//
//   { "version": 2,
//     "realm": "<hex SHA-256 of the tunnel path the keys were derived for>",
//     "users": { "<name>": { "publicKey": "<base64url Ed25519 public key>", "created": "<ISO 8601>",
//                            "staticIpv4"?: "<addr>", "staticIpv6"?: "<addr>",
//                            "expires"?, "quotaBytes"?, "quotaPeriod"?, "rateBitsPerSecond"? (policy.ts) } } }
//
// Only public keys are stored (see src/protocol/credentials.ts): nothing in the file, presented to the
// server, logs anyone in, and a stolen copy still has to be brute-forced through scrypt (with the secret
// tunnel path in the salt). The file is still private (0600): it lists who uses the server.
//
// Keys are derived from the tunnel path, so a file belongs to one tunnel path: the server refuses (at
// start and on reload) a file with users made for another one, and a version 1 file (bearer keys).
//
// Writers (`facade user add|del`) replace the file atomically; the server re-reads it when its mtime
// changes (reloadIfChanged), so adding a user needs no restart.

import { createHash, type KeyObject } from 'node:crypto';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { PRIVATE_FILE_MODE, writeFileAtomic } from '../core/atomic-file.js';
import { facadeError, isFacadeError } from '../core/errors.js';
import {
  deriveUserKey,
  PUBLIC_KEY_LENGTH,
  publicKeyObject,
  userNameProblem,
  validatePassword,
  validateUserName,
} from '../protocol/credentials.js';
import { NO_POLICY, parsePolicy, serializePolicy, type UserPolicy } from './policy.js';

export const USERS_FILE_VERSION = 2;
/** The format of credential version 1 (storedKey = SHA-256 of a bearer key): refused with USERS_FILE_V1. */
const USERS_FILE_VERSION_V1 = 1;

/**
 * Largest users file we read: ~200 bytes a user, so 16 MiB is ~80 000 users. Anything bigger is the wrong
 * file (a log, a disk image) and reading it whole into memory would be the first mistake.
 */
export const MAX_USERS_FILE_BYTES = 16 * 1024 * 1024;

/** The realm a users file records for a tunnel path: hex SHA-256 (the path itself is a secret). */
export function realmOf(tunnelPath: string): string {
  return createHash('sha256').update(tunnelPath, 'utf8').digest('hex');
}

export interface UserRecord {
  readonly name: string;
  /** Raw Ed25519 public key, 32 bytes. */
  readonly publicKey: Buffer;
  /** The same, ready for verify (built once, when the file is read). */
  readonly key: KeyObject;
  /** ISO 8601 time the user was added. */
  readonly created: string;
  readonly staticIpv4?: string;
  readonly staticIpv6?: string;
  /** Expiry, quota and rate (policy.ts); absent or NO_POLICY when none is set. */
  readonly policy?: UserPolicy;
}

export interface StaticAddresses {
  ipv4?: string | undefined;
  ipv6?: string | undefined;
}

/** Identity of the file version we read: a rename or a rewrite changes at least one of these. */
interface FileVersion {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

export class UsersFile {
  readonly path: string;
  #users: Map<string, UserRecord>;
  /** realmOf(tunnel path) the keys were made for; null for a new file no user was added to yet. */
  #realm: string | null;
  /** The realm the reader requires (the server's tunnel path), checked on every (re)load. */
  readonly #expectedRealm: string | undefined;
  /** Version of the file our state came from; null when it did not exist. */
  #version: FileVersion | null;
  /** Set when the file on disk is readable by group or others (it is fixed on the next save). */
  permissionsWarning: string | undefined;

  private constructor(
    path: string,
    parsed: ParsedUsers,
    version: FileVersion | null,
    expectedRealm: string | undefined,
  ) {
    this.path = path;
    this.#users = parsed.users;
    this.#realm = parsed.realm;
    this.#version = version;
    this.#expectedRealm = expectedRealm;
  }

  /**
   * Reads and validates the file. A missing file is an error (FACADE_ERR_USERS_FILE, as is anything
   * unreadable or invalid) unless `allowMissing`, which `facade user add` uses to start a new file. A
   * version 1 file is FACADE_ERR_USERS_FILE_V1. With `tunnelPath` (the server; `facade user add`), a file
   * whose users were made for another tunnel path is FACADE_ERR_USERS_FILE_REALM, now and on every reload;
   * a file without users takes on the new tunnel path's realm when it is next saved.
   */
  static async load(
    path: string,
    options: { allowMissing?: boolean; tunnelPath?: string } = {},
  ): Promise<UsersFile> {
    const expectedRealm = options.tunnelPath === undefined ? undefined : realmOf(options.tunnelPath);
    const read = await readUsersFile(path);
    if (read === null) {
      if (options.allowMissing === true)
        return new UsersFile(path, { users: new Map(), realm: expectedRealm ?? null }, null, expectedRealm);
      throw facadeError('USERS_FILE', [
        path,
        'does not exist; create it with `facade user add NAME --config facade.json` (or --users FILE --tunnel-path PATH)',
      ]);
    }
    const parsed = parseUsers(path, read.text);
    checkRealm(path, parsed, expectedRealm);
    // A file without users is anyone's: it takes on the given tunnel path (written on the next save).
    const adopted =
      parsed.users.size === 0 && expectedRealm !== undefined ? { ...parsed, realm: expectedRealm } : parsed;
    const file = new UsersFile(path, adopted, read.version, expectedRealm);
    file.permissionsWarning = permissionsProblem(path, read.mode);
    return file;
  }

  /** realmOf(the tunnel path) this file's keys belong to; null for a new file without one yet. */
  get realm(): string | null {
    return this.#realm;
  }

  get size(): number {
    return this.#users.size;
  }

  has(name: string): boolean {
    return this.#users.has(name);
  }

  get(name: string): UserRecord | undefined {
    return this.#users.get(name);
  }

  /** All users, sorted by name. */
  list(): UserRecord[] {
    return [...this.#users.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Adds a user of the installation whose secret path is `tunnelPath` (in memory; call save()). Slow by
   * design: runs the client's scrypt once to get the public key, the only thing stored. Throws USER_NAME,
   * USER_PASSWORD, USER_EXISTS, USERS_FILE_REALM when the file's users belong to another tunnel path, or
   * USERS_FILE for an invalid static address.
   */
  async add(
    name: string,
    password: string,
    tunnelPath: string,
    statics: StaticAddresses = {},
  ): Promise<UserRecord> {
    validateUserName(name);
    validatePassword(name, password);
    if (this.#users.has(name)) throw facadeError('USER_EXISTS', [name, this.path]);
    checkStaticAddresses(this.path, name, statics);
    const realm = realmOf(tunnelPath);
    checkRealm(this.path, { users: this.#users, realm: this.#realm }, realm);
    const { publicKey } = await deriveUserKey(tunnelPath, name, password);
    // Checked again (in addKey): another add may have finished while scrypt ran.
    return this.addKey(name, publicKey, tunnelPath, statics);
  }

  /**
   * Adds a user whose public key is already known (a generated credential, `facade init` and
   * `facade user invite --new-key`), in memory; call save(). Throws as add() does.
   */
  addKey(name: string, publicKey: Buffer, tunnelPath: string, statics: StaticAddresses = {}): UserRecord {
    validateUserName(name);
    if (this.#users.has(name)) throw facadeError('USER_EXISTS', [name, this.path]);
    checkStaticAddresses(this.path, name, statics);
    const realm = realmOf(tunnelPath);
    checkRealm(this.path, { users: this.#users, realm: this.#realm }, realm);
    const record = makeRecord(name, publicKey, new Date().toISOString(), statics);
    this.#users.set(name, record);
    this.#realm = realm;
    return record;
  }

  /**
   * Gives an existing user a new public key, keeping their static addresses (in memory; call save()): the
   * old password or invite stops opening tunnels at the next connect. Throws USER_UNKNOWN.
   */
  replaceKey(name: string, publicKey: Buffer): UserRecord {
    const current = this.#users.get(name);
    if (current === undefined) throw facadeError('USER_UNKNOWN', [name, this.path]);
    const record = makeRecord(
      name,
      publicKey,
      new Date().toISOString(),
      { ipv4: current.staticIpv4, ipv6: current.staticIpv6 },
      undefined,
      current.policy,
    );
    this.#users.set(name, record);
    return record;
  }

  /** Removes a user (in memory; call save()). Throws USER_UNKNOWN. */
  remove(name: string): void {
    if (!this.#users.delete(name)) throw facadeError('USER_UNKNOWN', [name, this.path]);
  }

  /** Sets or clears (undefined) a user's static addresses (in memory; call save()). */
  setStatic(name: string, statics: StaticAddresses): UserRecord {
    const current = this.#users.get(name);
    if (current === undefined) throw facadeError('USER_UNKNOWN', [name, this.path]);
    checkStaticAddresses(this.path, name, statics);
    const record = makeRecord(name, current.publicKey, current.created, statics, current.key, current.policy);
    this.#users.set(name, record);
    return record;
  }

  /** Replaces a user's policy (expiry, quota, rate) (in memory; call save()). Throws USER_UNKNOWN. */
  setPolicy(name: string, policy: UserPolicy): UserRecord {
    const current = this.#users.get(name);
    if (current === undefined) throw facadeError('USER_UNKNOWN', [name, this.path]);
    const record = makeRecord(
      name,
      current.publicKey,
      current.created,
      { ipv4: current.staticIpv4, ipv6: current.staticIpv6 },
      current.key,
      policy,
    );
    this.#users.set(name, record);
    return record;
  }

  /**
   * Writes the file atomically with mode 0600 (also when the old file was wider). Refuses, writing
   * nothing, when the file changed on disk since it was read: two `facade user` commands at once would
   * otherwise silently drop one of the changes.
   */
  async save(): Promise<void> {
    const onDisk = await currentVersion(this.path);
    if (!sameVersion(onDisk, this.#version)) {
      throw facadeError('USERS_FILE', [
        this.path,
        'changed on disk since it was read (another `facade user` command?); nothing was written, run the command again',
      ]);
    }
    try {
      await writeFileAtomic(this.path, serializeUsers(this.#users, this.#realm), PRIVATE_FILE_MODE);
    } catch (err) {
      throw facadeError('USERS_FILE', [this.path, `cannot write: ${describeError(err)}`], { cause: err });
    }
    this.#version = await currentVersion(this.path);
    this.permissionsWarning = undefined;
  }

  /**
   * Re-reads the file when it was replaced or modified since the last read; true when it did. A file
   * that is now missing or invalid throws FACADE_ERR_USERS_FILE and the users already loaded stay in
   * force, so a half-edited file never locks everyone out. One stat() when nothing changed.
   */
  async reloadIfChanged(): Promise<boolean> {
    const onDisk = await currentVersion(this.path);
    if (sameVersion(onDisk, this.#version)) return false;
    const read = await readUsersFile(this.path);
    if (read === null)
      throw facadeError('USERS_FILE', [this.path, 'has disappeared; keeping the users loaded']);
    const parsed = parseUsers(this.path, read.text);
    checkRealm(this.path, parsed, this.#expectedRealm);
    this.#users = parsed.users;
    this.#realm = parsed.realm;
    this.#version = read.version;
    this.permissionsWarning = permissionsProblem(this.path, read.mode);
    return true;
  }
}

function makeRecord(
  name: string,
  publicKey: Buffer,
  created: string,
  statics: StaticAddresses,
  key: KeyObject = publicKeyObject(publicKey),
  policy: UserPolicy = NO_POLICY,
): UserRecord {
  const record: {
    name: string;
    publicKey: Buffer;
    key: KeyObject;
    created: string;
    staticIpv4?: string;
    staticIpv6?: string;
    policy?: UserPolicy;
  } = { name, publicKey, key, created };
  // Only when set: a record without limits looks as it did before policies existed.
  if (Object.keys(policy).length > 0) record.policy = policy;
  if (statics.ipv4 !== undefined) record.staticIpv4 = statics.ipv4;
  if (statics.ipv6 !== undefined) record.staticIpv6 = statics.ipv6;
  return Object.freeze(record);
}

function checkStaticAddresses(path: string, name: string, statics: StaticAddresses): void {
  if (statics.ipv4 !== undefined && !isIPv4(statics.ipv4))
    throw facadeError('USERS_FILE', [
      path,
      `user "${name}": static IPv4 address "${statics.ipv4}" is not IPv4`,
    ]);
  if (statics.ipv6 !== undefined && !isIPv6(statics.ipv6))
    throw facadeError('USERS_FILE', [
      path,
      `user "${name}": static IPv6 address "${statics.ipv6}" is not IPv6`,
    ]);
}

async function readUsersFile(
  path: string,
): Promise<{ text: string; version: FileVersion; mode: number } | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw facadeError('USERS_FILE', [path, `cannot open: ${describeError(err)}`], { cause: err });
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw facadeError('USERS_FILE', [path, 'is not a regular file']);
    if (info.size > MAX_USERS_FILE_BYTES) {
      throw facadeError('USERS_FILE', [
        path,
        `is ${info.size} bytes, more than the ${MAX_USERS_FILE_BYTES} a users file can be; is it the right file?`,
      ]);
    }
    const text = await handle.readFile('utf8');
    return { text, version: versionOf(info), mode: info.mode };
  } catch (err) {
    if (isFacadeError(err)) throw err;
    throw facadeError('USERS_FILE', [path, `cannot read: ${describeError(err)}`], { cause: err });
  } finally {
    await handle.close();
  }
}

export interface ParsedUsers {
  readonly users: Map<string, UserRecord>;
  readonly realm: string | null;
}

/**
 * Refuses (USERS_FILE_REALM) a file whose users were made for another tunnel path than the one whose
 * realm is `expected`. A file without users is never refused: it has no key to be wrong.
 */
function checkRealm(path: string, parsed: ParsedUsers, expected: string | undefined): void {
  if (expected === undefined || parsed.realm === expected || parsed.users.size === 0) return;
  throw facadeError('USERS_FILE_REALM', [
    path,
    `${String(parsed.realm).slice(0, 12)}…`,
    `${expected.slice(0, 12)}…`,
  ]);
}

const REALM_PATTERN = /^[0-9a-f]{64}$/;

export function parseUsers(path: string, text: string): ParsedUsers {
  const invalid = (what: string) => facadeError('USERS_FILE', [path, what]);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalid(`is not valid JSON (${describeError(err)})`);
  }
  if (!isPlainObject(json))
    throw invalid('must be a JSON object { "version": 2, "realm": "...", "users": {...} }');
  if (json.version === USERS_FILE_VERSION_V1) {
    const names = isPlainObject(json.users) ? Object.keys(json.users) : [];
    throw facadeError('USERS_FILE_V1', [path, names.length === 0 ? '(none)' : names.join(', ')]);
  }
  if (json.version !== USERS_FILE_VERSION)
    throw invalid(
      `has version ${JSON.stringify(json.version)}; this build reads version ${USERS_FILE_VERSION}`,
    );
  const users = json.users;
  if (!isPlainObject(users)) throw invalid('"users" must be an object of name -> record');
  // Only a file nobody was added to yet may lack the realm (lack it: a null realm is no realm either).
  let realm: string | null = null;
  if (json.realm !== undefined || Object.keys(users).length > 0) {
    if (typeof json.realm !== 'string' || !REALM_PATTERN.test(json.realm))
      throw invalid('"realm" must be the hex SHA-256 of the tunnel path (64 lower-case hex digits)');
    realm = json.realm;
  }
  const result = new Map<string, UserRecord>();
  // Object.entries yields own keys only, so a user called "__proto__" is just a user.
  for (const [name, entry] of Object.entries(users)) {
    const nameProblem = userNameProblem(name);
    if (nameProblem !== null) throw invalid(`user name "${name}" is not allowed: ${nameProblem}`);
    if (!isPlainObject(entry)) throw invalid(`user "${name}": record must be an object`);
    const { publicKey, created, staticIpv4, staticIpv6 } = entry;
    if (typeof publicKey !== 'string')
      throw invalid(`user "${name}": "publicKey" must be a base64url string`);
    const key = Buffer.from(publicKey, 'base64url');
    if (key.length !== PUBLIC_KEY_LENGTH || key.toString('base64url') !== publicKey)
      throw invalid(`user "${name}": "publicKey" must be ${PUBLIC_KEY_LENGTH} bytes in base64url`);
    let keyObject: KeyObject;
    try {
      keyObject = publicKeyObject(key);
    } catch {
      throw invalid(`user "${name}": "publicKey" is not an Ed25519 public key`);
    }
    if (typeof created !== 'string') throw invalid(`user "${name}": "created" must be an ISO 8601 string`);
    if (staticIpv4 !== undefined && (typeof staticIpv4 !== 'string' || !isIPv4(staticIpv4)))
      throw invalid(`user "${name}": "staticIpv4" must be an IPv4 address`);
    if (staticIpv6 !== undefined && (typeof staticIpv6 !== 'string' || !isIPv6(staticIpv6)))
      throw invalid(`user "${name}": "staticIpv6" must be an IPv6 address`);
    const policy = parsePolicy(entry, (what) => invalid(`user "${name}": ${what}`));
    result.set(
      name,
      makeRecord(name, key, created, { ipv4: staticIpv4, ipv6: staticIpv6 }, keyObject, policy),
    );
  }
  return { users: result, realm };
}

export function serializeUsers(users: Map<string, UserRecord>, realm: string | null): string {
  // A null-prototype object: assigning a "__proto__" key creates a property instead of a prototype.
  const out: Record<string, unknown> = Object.create(null);
  const names = [...users.keys()].sort();
  for (const name of names) {
    const record = users.get(name)!;
    const entry: Record<string, string | number> = {
      publicKey: record.publicKey.toString('base64url'),
      created: record.created,
    };
    if (record.staticIpv4 !== undefined) entry.staticIpv4 = record.staticIpv4;
    if (record.staticIpv6 !== undefined) entry.staticIpv6 = record.staticIpv6;
    Object.assign(entry, serializePolicy(record.policy ?? NO_POLICY));
    out[name] = entry;
  }
  // A new file nobody added to yet has no realm: the first add (or a server's tunnel path) gives it one.
  const head = realm === null ? { version: USERS_FILE_VERSION } : { version: USERS_FILE_VERSION, realm };
  return `${JSON.stringify({ ...head, users: out }, null, 2)}\n`;
}

function permissionsProblem(path: string, mode: number): string | undefined {
  if ((mode & 0o077) === 0) return undefined;
  return `users file ${path} has mode ${(mode & 0o777).toString(8).padStart(4, '0')}; it should be 0600 (chmod 600 ${path})`;
}

async function currentVersion(path: string): Promise<FileVersion | null> {
  try {
    return versionOf(await stat(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw facadeError('USERS_FILE', [path, `cannot stat: ${describeError(err)}`], { cause: err });
  }
}

function versionOf(info: { ino: number; size: number; mtimeMs: number; ctimeMs: number }): FileVersion {
  return { ino: info.ino, size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs };
}

function sameVersion(a: FileVersion | null, b: FileVersion | null): boolean {
  if (a === null || b === null) return a === b;
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describeError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return code !== undefined && !message.includes(code) ? `${code}: ${message}` : message;
}
