// The systemd units in systemd/: `systemd-analyze verify` finds nothing to say about them (no unknown key,
// no unparsable value), `systemd-analyze security` rates them well hardened, and the command line they
// run is one facade accepts. The units name an install in /opt/facade; the check puts this checkout there.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** systemd-analyze's exposure score, times ten: 10 is "unprotected", under 5 "OK". */
const MAX_EXPOSURE = 45;

const UNITS = [
  { file: 'facade.service', as: 'facade.service' },
  { file: 'facade-client@.service', as: 'facade-client@home.service' },
];

async function analyze(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec('systemd-analyze', args, { timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

for (const unit of UNITS) {
  test(`${unit.file}: systemd-analyze verify and security, and facade takes its command line`, async (t) => {
    if ((await analyze(['--version'])).code !== 0) {
      t.skip('systemd-analyze is not installed (Debian: systemd)');
      return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'facade-units-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const text = (await readFile(join(ROOT, 'systemd', unit.file), 'utf8'))
      .replaceAll('/opt/facade/', ROOT)
      .replaceAll('/usr/bin/node ', `${process.execPath} `);
    const path = join(dir, unit.as);
    await writeFile(path, text);

    const verify = await analyze(['verify', path]);
    assert.equal(verify.code, 0, verify.stderr);
    // verify exits 0 on an unknown key or a value it ignores; it must have nothing to say at all.
    assert.equal(verify.stderr.trim(), '', verify.stderr);

    const security = await analyze(['security', '--offline=yes', `--threshold=${MAX_EXPOSURE}`, path]);
    const score = /Overall exposure level for \S+: ([\d.]+)/.exec(security.stdout)?.[1];
    assert.equal(security.code, 0, `exposure ${score} above ${MAX_EXPOSURE / 10}:\n${security.stdout}`);
    for (const key of [
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'CapabilityBoundingSet=',
      'DeviceAllow=/dev/net/tun rw',
    ])
      assert.ok(text.includes(key), `${unit.file} has ${key}`);

    // The flags of ExecStart exist (an unknown one is refused before --help is answered), its config
    // file standing in as an empty one.
    const etc = join(dir, 'etc');
    await mkdir(etc);
    const execStart = /^ExecStart=(.*)$/m.exec(text)?.[1]?.split(' ') ?? [];
    const [node, ...args] = execStart.map((arg) =>
      arg.replaceAll('%i', 'home').replace(/^\/etc\/facade\//, `${etc}/`),
    );
    for (const arg of args) if (arg.startsWith(etc)) await writeFile(arg, '{}');
    const help = await exec(node as string, [...args, '--help']);
    assert.match(help.stdout, /^Usage: facade/m);
  });
}
