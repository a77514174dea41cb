// writeFileAtomic replaces a file with a new inode; the new file keeps the owner and group of the one it
// replaces, so a `facade user add` run by root leaves the users file to the server's unprivileged user.

import assert from 'node:assert/strict';
import { chown, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeFileAtomic } from '../../src/core/atomic-file.js';
import { lookupAccount } from '../../src/server/privileges.js';

const isRoot = process.getuid?.() === 0;

describe('writeFileAtomic', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-atomic-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("a new file is the writer's, with the mode asked for", async () => {
    const path = join(dir, 'new.json');
    await writeFileAtomic(path, 'one\n');
    const info = await stat(path);
    assert.equal(info.uid, process.geteuid?.());
    assert.equal(info.mode & 0o777, 0o600);
    assert.equal(await readFile(path, 'utf8'), 'one\n');
  });

  test("a replaced file keeps its owner and group (as root: a file of nobody's)", {
    skip: isRoot ? false : 'needs root to give a file to another user',
  }, async () => {
    const nobody = await lookupAccount('nobody');
    assert.ok(nobody, 'this machine has a "nobody" user');
    const path = join(dir, 'users.json');
    await writeFile(path, 'old\n', { mode: 0o600 });
    await chown(path, nobody.uid, nobody.gid);
    const before = await stat(path);
    await writeFileAtomic(path, 'new\n');
    const info = await stat(path);
    assert.notEqual(info.ino, before.ino, 'a new file was renamed over the old one');
    assert.equal(info.uid, nobody.uid);
    assert.equal(info.gid, nobody.gid);
    assert.equal(info.mode & 0o777, 0o600);
    assert.equal(await readFile(path, 'utf8'), 'new\n');
  });

  test('a replaced file keeps its owner but not a wider mode', {
    skip: isRoot ? false : 'needs root to give a file to another user',
  }, async () => {
    const nobody = await lookupAccount('nobody');
    assert.ok(nobody);
    const path = join(dir, 'wide.json');
    await writeFile(path, 'old\n', { mode: 0o644 });
    await chown(path, nobody.uid, 0);
    await writeFileAtomic(path, 'new\n');
    const info = await stat(path);
    assert.equal(info.uid, nobody.uid);
    assert.equal(info.gid, 0);
    assert.equal(info.mode & 0o777, 0o600);
  });
});
