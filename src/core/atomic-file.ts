// Crash-safe replacement of a small file (users file, lease state): readers see the old content or the new,
// never a torn write, and a power cut right after we return does not bring back the old version.

import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
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
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode: number = PRIVATE_FILE_MODE,
): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const file = await open(temp, 'wx', mode);
  let renamed = false;
  try {
    try {
      await file.writeFile(data);
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

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
