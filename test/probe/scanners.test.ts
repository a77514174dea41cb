// facade as a scanner sees it: Debian's nmap, run as a new user would run it against a website (service and
// version detection with every probe, and the scripts a scan of a website runs), against the real
// `facade server` and against the plain reference (test/helpers/reference-server.ts: the same site alone on 443,
// a plain node:http redirect on 80, a certificate made by `openssl req -x509`). Each runs in its own pair of
// namespaces with the very same addresses (server 198.18.77.1, scanner .2), so the two reports must be equal
// once dates, timings, MAC addresses and the certificate's own values (validity, digests) are masked.
//
//   ns FS (nmap) ──veth── ns F: facade server --listen 198.18.77.1:443 (port 80 too, self-signed certificate)
//   ns RS (nmap) ──veth── ns R: reference, 198.18.77.1:443 and :80
//
// A control scans a redirect server that answers malformed requests as facade's port-80 listener used to
// (`400`, `Connection: close`, `Content-Length: 0`): nmap must name it, or the harness could not see the
// difference that opened this suite.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SITE_DEFAULT_DIR } from '../../src/front/site.js';
import { UsersFile } from '../../src/users/users-file.js';
import { type FacadeProcess, startFacade } from '../helpers/facade.js';
import { createVethPair, Netns, netnsSkipReason, run, uniqueName } from '../helpers/netns.js';

const NMAP = ['/usr/bin/nmap', '/usr/local/bin/nmap'].find((p) => existsSync(p));
const OPENSSL = ['/usr/bin/openssl', '/usr/local/bin/openssl'].find((p) => existsSync(p));
const REFERENCE_CLI = fileURLToPath(new URL('../helpers/reference-server-cli.js', import.meta.url));
/** test-artifacts/ at the repository root: both reports are left there to read. */
const ARTIFACT_DIR = path.join(path.dirname(SITE_DEFAULT_DIR), 'test-artifacts');

const SERVER = '198.18.77.1';
const SCANNER = '198.18.77.2';
const CONTROL_PORT = 8080;
const TUNNEL_PATH = '/sc4nn3r/connect';

const SCRIPTS = [
  'http-title',
  'http-headers',
  'http-methods',
  'http-server-header',
  'ssl-cert',
  'ssl-enum-ciphers',
];

/**
 * -sV --version-all: every probe of nmap's database, whatever its rarity. -Pn -n: no ping, no DNS (the
 * namespaces have neither). --host-timeout bounds a scan that hangs; one takes ~35 s here.
 */
const NMAP_ARGS = ['-sV', '--version-all', '-Pn', '-n', '--host-timeout', '100s'];

/** What differs between two scans of equal servers: when, how fast, which MAC, and the certificate's own values. */
function normalizeNmapReport(report: string): string {
  const lines = report.split('\n');
  const kept: string[] = [];
  const fingerprints: string[] = [];
  let inFingerprintStrings = false;
  for (const line of lines) {
    if (/^(Starting Nmap|Nmap done|Host is up|MAC Address|Service detection performed)/.test(line)) continue;
    // The "fingerprint-strings" block renders the SF records below, grouping probes whose answers are equal
    // byte for byte: answers a second apart differ in their Date and group differently. The SF records
    // (compared below, dates masked) hold the same answers one probe at a time.
    if (/^\| fingerprint-strings:/.test(line)) {
      inFingerprintStrings = true;
      continue;
    }
    if (inFingerprintStrings && /^\|(?: {2,}|_ {2,})/.test(line)) continue;
    inFingerprintStrings = false;
    // Fingerprints of unrecognised services: one record per service, cut into 80-column "SF:" lines.
    if (line.startsWith('SF-Port')) {
      fingerprints.push(line);
      continue;
    }
    if (line.startsWith('SF:')) {
      fingerprints[fingerprints.length - 1] += line.slice(3);
      continue;
    }
    kept.push(line);
  }
  const masked = maskValues(sortScriptBlocks(kept).join('\n'));
  const records = fingerprints.map((record) =>
    record
      .replace(/%D=\d+\/\d+%Time=[0-9A-F]+%/, '%D=<date>%Time=<time>%')
      .replace(/Date:\\x20[^\r]*?\\x20GMT/g, 'Date:\\x20<date>\\x20GMT'),
  );
  return `${masked}\n${records.join('\n')}`;
}

function maskValues(text: string): string {
  return text
    .replace(/^(\|\s*Date: ).*$/gim, '$1<date>')
    .replace(/^(\| Not valid (?:before|after): *).*$/gm, '$1<date>')
    .replace(/^(\|[ _](?:MD5|SHA-1): *).*$/gm, '$1<digest>');
}

/**
 * nmap prints a port's script results in the order the scripts finished, which varies: each block (a
 * "| name:" or "|_name:" line and its indented lines) is sorted by name within its port.
 */
function sortScriptBlocks(lines: readonly string[]): string[] {
  const out: string[] = [];
  let blocks: string[][] = [];
  const flush = (): void => {
    blocks.sort((a, b) => (a[0] as string).localeCompare(b[0] as string));
    for (const block of blocks) out.push(...block);
    blocks = [];
  };
  for (const line of lines) {
    if (/^\|[ _][a-z0-9-]+:/.test(line)) {
      blocks.push([line]);
    } else if (line.startsWith('|') && blocks.length > 0) {
      (blocks[blocks.length - 1] as string[]).push(line);
    } else {
      flush();
      out.push(line);
    }
  }
  flush();
  return out;
}

function skipReason(): string | false {
  const netns = netnsSkipReason();
  if (netns !== null) return netns;
  if (NMAP === undefined) return 'nmap is not installed (Debian: apt-get install nmap)';
  if (OPENSSL === undefined) return "openssl is not installed (the reference's certificate is made by it)";
  return false;
}

describe('nmap sees facade as it sees a plain site', { skip: skipReason() }, () => {
  let workDir: string;
  const namespaces: Netns[] = [];
  const children: ChildProcess[] = [];
  let facade: FacadeProcess | undefined;
  let facadeReport: string;
  let referenceReport: string;
  let controlReport: string;

  before(async () => {
    workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-scanners-'));
    // The server drops to nobody after start-up (--run-as): its state directory in here must be reachable.
    chmodSync(workDir, 0o755);
    const make = async (prefix: string): Promise<Netns> => {
      const ns = await Netns.create(prefix);
      namespaces.push(ns);
      return ns;
    };
    const [facadeNs, facadeScanner, referenceNs, referenceScanner] = await Promise.all([
      make('scf'),
      make('scfs'),
      make('scr'),
      make('scrs'),
    ]);
    const addresses = { addrA: `${SERVER}/24`, addrB: `${SCANNER}/24` };
    await createVethPair(facadeNs, facadeScanner, addresses);
    await createVethPair(referenceNs, referenceScanner, addresses);

    const usersPath = path.join(workDir, 'users.json');
    const users = await UsersFile.load(usersPath, { allowMissing: true });
    await users.add('alice', 'correct horse battery staple', TUNNEL_PATH);
    await users.save();
    facade = startFacade(facadeNs, [
      'server',
      '--listen',
      `${SERVER}:443`,
      '--pool',
      '198.19.77.0/24',
      '--users',
      usersPath,
      '--tunnel-path',
      TUNNEL_PATH,
      '--state-dir',
      path.join(workDir, 'state'),
      '--tun',
      uniqueName('fscan'),
    ]);

    // The reference's certificate as an administrator makes one for an address.
    const certPath = path.join(workDir, 'reference.crt');
    const keyPath = path.join(workDir, 'reference.key');
    const openssl = await run(OPENSSL as string, [
      ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '3650'],
      ...['-subj', `/CN=${SERVER}`, '-addext', `subjectAltName=IP:${SERVER}`],
      ...['-keyout', keyPath, '-out', certPath],
    ]);
    assert.equal(openssl.code, 0, openssl.stderr);
    const reference = referenceNs.spawn(process.execPath, [
      REFERENCE_CLI,
      SERVER,
      '443',
      '80',
      certPath,
      keyPath,
    ]);
    children.push(reference);
    // The control: facade's former port-80 answer to what the parser rejects, on a plain redirect server.
    const control = facadeNs.spawn(process.execPath, [
      '-e',
      `const s = require('node:http').createServer((q, r) => { r.writeHead(301, { Location: 'https://${SERVER}/' }); r.end(); });
       s.on('clientError', (e, socket) => socket.end('HTTP/1.1 400 Bad Request\\r\\nConnection: close\\r\\nContent-Length: 0\\r\\n\\r\\n'));
       s.listen(${CONTROL_PORT}, '${SERVER}', () => console.log('ready'));`,
    ]);
    children.push(control);
    await Promise.all([
      facade.waitFor(/facade server ready/),
      firstLine(reference, /^ready /),
      firstLine(control, /^ready$/),
    ]);

    const scripts = ['--script', SCRIPTS.join(',')];
    const [ofFacade, ofReference, ofControl] = await Promise.all([
      facadeScanner.exec(NMAP as string, [...NMAP_ARGS, ...scripts, '-p', '80,443', SERVER], {
        timeoutMs: 120_000,
      }),
      referenceScanner.exec(NMAP as string, [...NMAP_ARGS, ...scripts, '-p', '80,443', SERVER], {
        timeoutMs: 120_000,
      }),
      facadeScanner.exec(NMAP as string, [...NMAP_ARGS, '-p', String(CONTROL_PORT), SERVER], {
        timeoutMs: 120_000,
      }),
    ]);
    for (const [who, result] of [
      ['facade', ofFacade],
      ['reference', ofReference],
      ['control', ofControl],
    ] as const) {
      assert.equal(result.code, 0, `nmap against the ${who} failed: ${result.stderr}${result.stdout}`);
    }
    facadeReport = ofFacade.stdout;
    referenceReport = ofReference.stdout;
    controlReport = ofControl.stdout;
    mkdirSync(ARTIFACT_DIR, { recursive: true });
    writeFileSync(path.join(ARTIFACT_DIR, 'nmap-facade.txt'), facadeReport);
    writeFileSync(path.join(ARTIFACT_DIR, 'nmap-reference.txt'), referenceReport);
  });

  after(async () => {
    await facade?.stop();
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(namespaces.map((ns) => ns.destroy()));
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  test('both ports are found and named only by protocol, as on the plain site', () => {
    for (const report of [facadeReport, referenceReport]) {
      assert.match(report, /^80\/tcp +open +http *$/m, report);
      assert.match(report, /^443\/tcp +open +ssl\/https *$/m, report);
      assert.doesNotMatch(report, /Service Info|T-Home|media device/, report);
    }
  });

  test('every script reports the same of facade as of the reference', () => {
    const ofFacade = normalizeNmapReport(facadeReport);
    const ofReference = normalizeNmapReport(referenceReport);
    // Not vacuous: each script said something about at least one port.
    for (const script of SCRIPTS.filter((name) => name !== 'http-server-header')) {
      assert.match(ofFacade, new RegExp(`^\\|[ _]${script}:`, 'm'), `${script} is missing:\n${ofFacade}`);
    }
    assert.match(ofFacade, /^\| ssl-cert: Subject: commonName=198\.18\.77\.1$/m);
    assert.match(ofFacade, /^\| Public Key type: rsa$/m);
    assert.equal(ofFacade, ofReference);
  });

  test("control: nmap names the port-80 listener's former answer to a malformed request", () => {
    assert.match(controlReport, /T-Home Telekom Media Receiver httpd/, controlReport);
  });
});

/** Resolves with the first stdout line of `child` matching `pattern`; rejects if it exits first. */
function firstLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => {
      if (pattern.test(line)) resolve(line);
    });
    child.once('exit', (code) => reject(new Error(`exited (${code}) before ${pattern}: ${stderr}`)));
  });
}
