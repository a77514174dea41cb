// The users file: who may open a tunnel, and the one thing the server needs to check them.
//
//   { "version": 1,
//     "users": { "<name>": { "storedKey": "<base64 SHA-256(clientKey)>", "created": "<ISO 8601>",
//                            "staticIpv4"?: "<addr>", "staticIpv6"?: "<addr>" } } }
//
// No password or password-equivalent is stored (see src/tunnel/credentials.ts): a stolen copy still has to
// be brute-forced through scrypt. The file is still private (0600): it lists who uses the server.
//
// Writers (`facade user add|del`) replace the file atomically; the server re-reads it when its mtime
// changes (reloadIfChanged), so adding a user needs no restart.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import { PRIVATE_FILE_MODE, writeFileAtomic } from '../core/atomic-file.js';
import { facadeError, isFacadeError } from '../core/errors.js';
import {
  CLIENT_KEY_LENGTH,
  computeStoredKey,
  deriveClientKey,
  userNameProblem,
  validatePassword,
  validateUserName,
} from '../protocol/credentials.js';

export const USERS_FILE_VERSION = 1;

/**
 * Largest users file we read: ~200 bytes a user, so 16 MiB is ~80 000 users. Anything bigger is the wrong
 * file (a log, a disk image) and reading it whole into memory would be the first mistake.
 */
export const MAX_USERS_FILE_BYTES = 16 * 1024 * 1024;

/**
 * Compared against when the user is unknown, so an unknown user costs the same SHA-256 and the same
 * timingSafeEqual as a wrong password. Random per process: nobody knows a key that hashes to it.
 */
const UNKNOWN_USER_STORED_KEY = randomBytes(CLIENT_KEY_LENGTH);

export interface UserRecord {
  readonly name: string;
  /** SHA-256(clientKey), 32 bytes. */
  readonly storedKey: Buffer;
  /** ISO 8601 time the user was added. */
  readonly created: string;
  readonly staticIpv4?: string;
  readonly staticIpv6?: string;
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
  /** Version of the file our state came from; null when it did not exist. */
  #version: FileVersion | null;
  /** Set when the file on disk is readable by group or others (it is fixed on the next save). */
  permissionsWarning: string | undefined;

  private constructor(path: string, users: Map<string, UserRecord>, version: FileVersion | null) {
    this.path = path;
    this.#users = users;
    this.#version = version;
  }

  /**
   * Reads and validates the file. A missing file is an error (FACADE_ERR_USERS_FILE, as is anything
   * unreadable or invalid) unless `allowMissing`, which `facade user add` uses to start a new file.
   */
  static async load(path: string, options: { allowMissing?: boolean } = {}): Promise<UsersFile> {
    const read = await readUsersFile(path);
    if (read === null) {
      if (options.allowMissing === true) return new UsersFile(path, new Map(), null);
      throw facadeError('USERS_FILE', [
        path,
        'does not exist; create it with `facade user add NAME --users FILE`',
      ]);
    }
    const file = new UsersFile(path, parseUsers(path, read.text), read.version);
    file.permissionsWarning = permissionsProblem(path, read.mode);
    return file;
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
   * Adds a user (in memory; call save()). Slow by design: runs the client's scrypt once to get the
   * storedKey. Throws USER_NAME, USER_PASSWORD, USER_EXISTS, or USERS_FILE for an invalid static address.
   */
  async add(name: string, password: string, statics: StaticAddresses = {}): Promise<UserRecord> {
    validateUserName(name);
    validatePassword(name, password);
    if (this.#users.has(name)) throw facadeError('USER_EXISTS', [name, this.path]);
    checkStaticAddresses(this.path, name, statics);
    const storedKey = computeStoredKey(await deriveClientKey(name, password));
    // Checked again: another add of the same name may have finished while scrypt ran.
    if (this.#users.has(name)) throw facadeError('USER_EXISTS', [name, this.path]);
    const record = makeRecord(name, storedKey, new Date().toISOString(), statics);
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
    const record = makeRecord(name, current.storedKey, current.created, statics);
    this.#users.set(name, record);
    return record;
  }

  /**
   * The user's record when clientKey is theirs, else null. Constant work whatever the input: one
   * SHA-256 of the presented key and one timingSafeEqual, against the user's storedKey or, for an
   * unknown user, against a random key nobody can match. Never throws.
   */
  verify(user: string, clientKey: Buffer): UserRecord | null {
    const record = typeof user === 'string' ? this.#users.get(user) : undefined;
    const expected = record === undefined ? UNKNOWN_USER_STORED_KEY : record.storedKey;
    const presented = computeStoredKey(clientKey);
    const matches = timingSafeEqual(presented, expected);
    return matches && record !== undefined ? record : null;
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
      await writeFileAtomic(this.path, serializeUsers(this.#users), PRIVATE_FILE_MODE);
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
    const users = parseUsers(this.path, read.text);
    this.#users = users;
    this.#version = read.version;
    this.permissionsWarning = permissionsProblem(this.path, read.mode);
    return true;
  }
}

function makeRecord(name: string, storedKey: Buffer, created: string, statics: StaticAddresses): UserRecord {
  const record: {
    name: string;
    storedKey: Buffer;
    created: string;
    staticIpv4?: string;
    staticIpv6?: string;
  } = { name, storedKey, created };
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

function parseUsers(path: string, text: string): Map<string, UserRecord> {
  const invalid = (what: string) => facadeError('USERS_FILE', [path, what]);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalid(`is not valid JSON (${describeError(err)})`);
  }
  if (!isPlainObject(json)) throw invalid('must be a JSON object { "version": 1, "users": {...} }');
  if (json.version !== USERS_FILE_VERSION)
    throw invalid(
      `has version ${JSON.stringify(json.version)}; this build reads version ${USERS_FILE_VERSION}`,
    );
  const users = json.users;
  if (!isPlainObject(users)) throw invalid('"users" must be an object of name -> record');
  const result = new Map<string, UserRecord>();
  // Object.entries yields own keys only, so a user called "__proto__" is just a user.
  for (const [name, entry] of Object.entries(users)) {
    const nameProblem = userNameProblem(name);
    if (nameProblem !== null) throw invalid(`user name "${name}" is not allowed: ${nameProblem}`);
    if (!isPlainObject(entry)) throw invalid(`user "${name}": record must be an object`);
    const { storedKey, created, staticIpv4, staticIpv6 } = entry;
    if (typeof storedKey !== 'string') throw invalid(`user "${name}": "storedKey" must be a base64 string`);
    const key = Buffer.from(storedKey, 'base64');
    if (key.length !== CLIENT_KEY_LENGTH || key.toString('base64') !== storedKey)
      throw invalid(`user "${name}": "storedKey" must be ${CLIENT_KEY_LENGTH} bytes in base64`);
    if (typeof created !== 'string') throw invalid(`user "${name}": "created" must be an ISO 8601 string`);
    if (staticIpv4 !== undefined && (typeof staticIpv4 !== 'string' || !isIPv4(staticIpv4)))
      throw invalid(`user "${name}": "staticIpv4" must be an IPv4 address`);
    if (staticIpv6 !== undefined && (typeof staticIpv6 !== 'string' || !isIPv6(staticIpv6)))
      throw invalid(`user "${name}": "staticIpv6" must be an IPv6 address`);
    result.set(name, makeRecord(name, key, created, { ipv4: staticIpv4, ipv6: staticIpv6 }));
  }
  return result;
}

function serializeUsers(users: Map<string, UserRecord>): string {
  // A null-prototype object: assigning a "__proto__" key creates a property instead of a prototype.
  const out: Record<string, unknown> = Object.create(null);
  const names = [...users.keys()].sort();
  for (const name of names) {
    const record = users.get(name)!;
    const entry: Record<string, string> = {
      storedKey: record.storedKey.toString('base64'),
      created: record.created,
    };
    if (record.staticIpv4 !== undefined) entry.staticIpv4 = record.staticIpv4;
    if (record.staticIpv6 !== undefined) entry.staticIpv6 = record.staticIpv6;
    out[name] = entry;
  }
  return `${JSON.stringify({ version: USERS_FILE_VERSION, users: out }, null, 2)}\n`;
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
