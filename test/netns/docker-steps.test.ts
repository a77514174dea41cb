// The image's build and start, without Docker (no engine reaches these machines): docker/Dockerfile's own
// instructions, read from the file, run on this machine in a scratch folder standing in for the image's
// file system, and docker/compose.yaml's command run with the image's ENTRYPOINT in a namespace standing
// in for the container. What is not run here is listed in docker/README.md (apt-get, the base image, the
// Docker runtime itself); the apt packages a stage installs are checked to be installed here instead.
//
//   build stage: COPY from the repository, RUN npm ci (offline: from the npm cache the suite's own
//   `npm ci` filled) && npm prune --omit=dev
//   final stage: COPY --from=build; then `init` and the compose command through ENTRYPOINT, with the
//   volume /var/lib/facade a folder here; a client with the printed invite connects.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type FacadeProcess, field, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, uniqueName } from '../helpers/netns.js';

const exec = promisify(execFile);
const skip = netnsSkipReason();
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface Stage {
  readonly name: string;
  readonly instructions: { readonly op: string; readonly args: string }[];
}

/** The Dockerfile as stages of instructions (comments and line continuations handled). */
export function parseDockerfile(text: string): Stage[] {
  const stages: { name: string; instructions: { op: string; args: string }[] }[] = [];
  const joined = text.replace(/\\\n/g, ' ');
  for (const raw of joined.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [, op = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    if (op.toUpperCase() === 'FROM') {
      const name = /\bAS\s+(\S+)$/i.exec(args)?.[1] ?? String(stages.length);
      stages.push({ name, instructions: [] });
      continue;
    }
    stages.at(-1)?.instructions.push({ op: op.toUpperCase(), args });
  }
  return stages;
}

/** The packages of `apt-get install … pkg pkg && …`. */
function aptPackages(command: string): string[] {
  const install = /apt-get install ([^&;]*)/.exec(command)?.[1] ?? '';
  return install.split(/\s+/).filter((word) => word !== '' && !word.startsWith('-'));
}

/**
 * Runs one stage in `fsRoot` (the image's "/"). COPY from the context or an earlier stage's root, RUN with
 * sh in the WORKDIR; apt-get is not run but its packages must be installed here. Returns the ENTRYPOINT.
 */
async function runStage(
  stage: Stage,
  fsRoot: string,
  roots: Map<string, string>,
  env: NodeJS.ProcessEnv,
  notRun: string[],
): Promise<string[]> {
  let workdir = '/';
  let entrypoint: string[] = [];
  const inImage = (path: string): string => join(fsRoot, path.startsWith('/') ? path : join(workdir, path));
  for (const { op, args } of stage.instructions) {
    if (op === 'WORKDIR') {
      workdir = args;
      await mkdir(inImage(args), { recursive: true });
    } else if (op === 'COPY') {
      const words = args.split(/\s+/);
      const from = words[0]?.startsWith('--from=')
        ? (words.shift() as string).slice('--from='.length)
        : undefined;
      const dest = words.pop() as string;
      const source = from === undefined ? ROOT : (roots.get(from) as string);
      assert.ok(source !== undefined, `COPY --from=${from}: no such stage`);
      for (const src of words) {
        const target =
          dest.endsWith('/') || words.length > 1
            ? join(inImage(dest), src.split('/').pop() as string)
            : inImage(dest);
        await mkdir(dirname(target), { recursive: true });
        // Between stages, hard links: the same files as a copy, without writing node_modules again.
        await exec('cp', [from === undefined ? '-a' : '-al', join(source, src), target]);
      }
    } else if (op === 'RUN') {
      if (args.startsWith('apt-get')) {
        const packages = aptPackages(args);
        const installed = await exec('dpkg-query', ['-W', '-f', `\${Status}\\n`, ...packages]).catch(
          (err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }),
        );
        const ok = installed.stdout.split('\n').filter((l) => l.includes('install ok installed')).length;
        assert.equal(ok, packages.length, `the image's packages (${packages.join(' ')}) are installed here`);
        notRun.push(`${stage.name}: ${args.slice(0, 60)}…`);
        continue;
      }
      await exec('sh', ['-c', args], { cwd: inImage(workdir), env, timeout: 300_000, maxBuffer: 64 << 20 });
    } else if (op === 'ENTRYPOINT') {
      entrypoint = JSON.parse(args) as string[];
    }
  }
  return entrypoint;
}

describe('the Docker image, built and started by its own steps outside a container', {
  skip: skip ?? false,
}, () => {
  let dir: string;
  let ns: Netns;
  let host: Netns;
  let entrypoint: string[];
  const procs: FacadeProcess[] = [];
  const notRun: string[] = [];
  const timings: string[] = [];
  let finalRoot: string;
  let volume: string;
  let npmOffline: string | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'facade-docker-'));
    await chmod(dir, 0o755);
    const stages = parseDockerfile(await readFile(join(ROOT, 'docker', 'Dockerfile'), 'utf8'));
    const roots = new Map<string, string>();
    // npm only from its cache: the suite's `npm ci` filled it, and a build must not need the network here.
    const env = {
      ...process.env,
      npm_config_offline: 'true',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
    };
    for (const stage of stages) {
      const started = Date.now();
      const root = join(dir, `stage-${stage.name}`);
      await mkdir(root, { recursive: true });
      try {
        entrypoint = await runStage(stage, root, roots, env, notRun);
      } catch (err) {
        const text = String((err as { stderr?: string }).stderr ?? err);
        if (/ENOTCACHED|offline/i.test(text)) {
          npmOffline = `npm's cache lacks a package of the lock file (run npm ci once first): ${text.slice(0, 300)}`;
          return;
        }
        throw err;
      }
      roots.set(stage.name, root);
      finalRoot = root;
      timings.push(`stage ${stage.name}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
    volume = join(dir, 'volume');
    await mkdir(volume, { mode: 0o755 });
    ns = await Netns.create('dk');
    // The container's network: an address, and a default route (what --nat picks its interface by) to a
    // namespace standing in for the host.
    host = await Netns.create('dh');
    await createVethPair(ns, host, { addrA: '198.19.254.1/24', addrB: '198.19.254.2/24' });
    await ns.ip(['route', 'add', 'default', 'via', '198.19.254.2']);
  });

  after(async () => {
    for (const p of procs) await p.stop('SIGKILL');
    await ns?.destroy();
    await host?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The image's ENTRYPOINT with `args`, its paths in the stand-ins. */
  const inContainer = (args: string[]): { cmd: string; args: string[] } => {
    const map = (arg: string): string =>
      arg.startsWith('/app/') ? join(finalRoot, arg) : arg.replace(/^\/var\/lib\/facade/, volume);
    const [cmd, ...rest] = [...entrypoint, ...args].map(map);
    return { cmd: cmd === 'node' ? process.execPath : (cmd as string), args: rest };
  };

  test('the final stage holds what runs, and no development dependency', async (t) => {
    if (npmOffline !== undefined) return t.skip(npmOffline);
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      devDependencies: Record<string, string>;
      dependencies: Record<string, string>;
    };
    for (const dev of Object.keys(pkg.devDependencies))
      await assert.rejects(
        readFile(join(finalRoot, 'app', 'node_modules', dev, 'package.json')),
        `${dev} is pruned`,
      );
    for (const dep of Object.keys(pkg.dependencies))
      await readFile(join(finalRoot, 'app', 'node_modules', dep, 'package.json'));
    const help = inContainer(['--help']);
    const out = await exec(help.cmd, help.args);
    assert.match(out.stdout, /facade — a VPN/);
    t.diagnostic(`not run here: ${notRun.join('; ')}`);
    t.diagnostic(timings.join(', '));
  });

  test('init in the volume, then the compose command serves the site and a tunnel for the invite', async (t) => {
    if (npmOffline !== undefined) return t.skip(npmOffline);
    const compose = await readFile(join(ROOT, 'docker', 'compose.yaml'), 'utf8');
    const command = JSON.parse(/^\s+command: (\[.*\])$/m.exec(compose)?.[1] ?? '[]') as string[];
    assert.ok(command.length > 0, 'compose.yaml has a command');
    assert.match(compose, /devices: \["\/dev\/net\/tun:\/dev\/net\/tun"\]/);
    assert.match(compose, /cap_add: \["NET_ADMIN"\]/);

    const init = inContainer(['init', '--dir', '/var/lib/facade', '--host', '198.19.254.1']);
    const initOut = await ns.exec(init.cmd, init.args, { check: true });
    const link = initOut.stdout.split('\n').find((l) => l.startsWith('facade://')) ?? '';
    // What an operator edits in the volume: this test's own address range for the pool.
    const configPath = join(volume, 'facade.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
    await writeFile(configPath, JSON.stringify({ ...config, pool: '198.18.254.0/24' }));

    const server = inContainer(command);
    assert.equal(server.cmd, process.execPath, 'the ENTRYPOINT runs node');
    const running = startFacade(ns, server.args.slice(1), { cli: server.args[0] as string });
    procs.push(running);
    await running.waitFor(/facade server ready/, 30_000);
    assert.ok(
      running.lines.some((l) => /NAT on:/.test(l)),
      'the compose command has --nat',
    );
    const site = await ns.exec('curl', [
      '-sk',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      'https://198.19.254.1/',
    ]);
    assert.equal(site.stdout, '200', "the decoy site, from the image's public/");

    const client = inContainer(['client', '--invite', link, '--tun', uniqueName('dkc')]);
    const connected = startFacade(ns, client.args.slice(1), { cli: client.args[0] as string });
    procs.push(connected);
    const line = await connected.waitFor(/connected:/, 20_000);
    assert.match(String(field(line, 'ipv4')), /^198\.18\.254\./);
  });
});
