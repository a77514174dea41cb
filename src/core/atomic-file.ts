// Crash-safe replacement of a small file (users file, lease state): readers see the old content or the new,
// never a torn write, and a power cut right after we return does not bring back the old version.

import { randomBytes } from 'node:crypto';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Owner read/write only: both files we write this way are secrets or reveal who uses the server. */
export const PRIVATE_FILE_MODE = 0o600;

/**
 * Writes `data` to a fresh temp file in the target's directory (same filesystem, so rename is atomic),
 * fsyncs it, renames it over `path`, then fsyncs the directory so the rename itself is durable.
 *
 * The temp file is created with 'wx' (never follows or reuses an existing file, e.g. a symlink planted by
 * someone else) and the mode is set explicitly afterwards, so the result is `mode` whatever the umask and
 * whatever the permissions of the file being replaced were.
 *
 * The new file keeps the owner and group of the file it replaces: the server drops root after start-up
 * (server/privileges.ts) and owns its files, so a `facade user add` run later by root must leave the users
 * file owned by the server's user, not hand it back to root where the server can no longer read it. A
 * writer that may not give files away (not root) and replaces someone else's file leaves it its own.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode: number = PRIVATE_FILE_MODE,
): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const previous = await ownerOf(path);
  const file = await open(temp, 'wx', mode);
  let renamed = false;
  try {
    try {
      await file.writeFile(data);
      if (previous !== undefined) await keepOwner(file, previous);
      await file.chmod(mode);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
    renamed = true;
  } finally {
    if (!renamed) await unlink(temp).catch(() => undefined);
  }
  await syncDirectory(dir);
}

/** uid and gid of the file at `path`, or undefined when there is none yet. */
async function ownerOf(path: string): Promise<{ uid: number; gid: number } | undefined> {
  try {
    const info = await stat(path);
    return { uid: info.uid, gid: info.gid };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Gives the temp file the owner and group of the file it replaces (see writeFileAtomic). */
async function keepOwner(
  file: Awaited<ReturnType<typeof open>>,
  owner: { uid: number; gid: number },
): Promise<void> {
  const info = await file.stat();
  if (info.uid === owner.uid && info.gid === owner.gid) return;
  try {
    await file.chown(owner.uid, owner.gid);
  } catch (err) {
    // Only root may give a file away; anyone else writes the file as their own, as before.
    if ((err as NodeJS.ErrnoException).code === 'EPERM' && process.geteuid?.() !== 0) return;
    throw err;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
