// Logs for people and for machines (core/log.ts): the same events as sentences at a terminal and as JSON
// elsewhere; the real CLI picks by whether stdout is a terminal (a pty made by `script`).

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { bytes, createLogger, duration, humanLine } from '../../src/core/log.js';
import { CLI } from '../helpers/facade.js';

const run = promisify(execFile);

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => {
    text += d.toString();
  });
  return { stream, text: () => text };
}

test('connect and disconnect read as sentences with user, address, time online and bytes', () => {
  assert.equal(
    humanLine({
      msg: 'client connected, address assigned',
      user: 'alice',
      remote: '203.0.113.9:51234',
      ipv4: '10.89.0.2',
      ipv6: 'fd00::2',
    }),
    'alice connected from 203.0.113.9:51234 as 10.89.0.2 and fd00::2',
  );
  assert.equal(
    humanLine({
      msg: 'client disconnected',
      user: 'alice',
      ipv4: '10.89.0.2',
      seconds: 3725,
      bytesIn: 1_234_567,
      bytesOut: 8_900_000_000,
      reason: 'NORMAL',
      message: 'client shutting down',
    }),
    'alice disconnected (10.89.0.2) after 1 h 02 min, received 1.2 MB, sent 8.9 GB (NORMAL: client shutting down)',
  );
  // Any other line: the message, then its fields as key=value, quoted where needed.
  assert.equal(
    humanLine({ msg: 'users file reloaded', users: 3, level: 30, time: 1, pid: 2, note: 'a b' }),
    'users file reloaded  users=3 note="a b"',
  );
  assert.equal(duration(42), '42 s');
  assert.equal(duration(185), '3 min 05 s');
  assert.equal(duration(3 * 86_400 + 4 * 3600), '3 d 4 h');
  assert.equal(bytes(999), '999 B');
  assert.equal(bytes(12_345), '12 kB');
});

test('format json writes one JSON object a line with the fields; pretty writes the sentence', () => {
  const json = capture();
  createLogger({ format: 'json', destination: json.stream }).info(
    { user: 'bob', ipv4: '10.0.0.3', seconds: 5, bytesIn: 10, bytesOut: 20, reason: 'NORMAL' },
    'client disconnected',
  );
  const record = JSON.parse(json.text().trim()) as Record<string, unknown>;
  assert.equal(record.msg, 'client disconnected');
  assert.equal(record.user, 'bob');
  assert.equal(record.bytesOut, 20);

  const pretty = capture();
  createLogger({ format: 'pretty', destination: pretty.stream }).info(
    { user: 'bob', ipv4: '10.0.0.3', seconds: 5, bytesIn: 10, bytesOut: 20, reason: 'NORMAL' },
    'client disconnected',
  );
  assert.match(
    pretty.text(),
    /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] INFO: bob disconnected \(10\.0\.0\.3\) after 5 s, received 10 B, sent 20 B \(NORMAL\)\n$/,
  );
});

test('the CLI writes lines for people at a terminal and JSON into a pipe', async (t) => {
  const script = await run('script', ['--version']).catch(() => undefined);
  if (script === undefined) {
    t.skip('script (util-linux) is not installed: no pty to run the CLI in');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'facade-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'pw'), 'a password\n');
  // A client towards a loopback port nothing listens on: it logs that it retries, and keeps retrying.
  const args = [CLI, 'client', 'https://127.0.0.1:9/k/t', '--user', 'a', '--password-file', join(dir, 'pw')];
  const firstLine = (command: string, commandArgs: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      const child = spawn(command, commandArgs, { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no log line within 10 s; got: ${out}`));
      }, 10_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (!/will retry/.test(out)) return;
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve(out);
      });
    });
  const piped = await firstLine(process.execPath, args);
  const record = JSON.parse(piped.split('\n').find((l) => l.includes('will retry')) ?? '') as {
    msg: string;
    reason: string;
  };
  assert.match(record.msg, /^not connected \(server 127\.0\.0\.1:9 refused the connection/);
  assert.match(record.reason, /ECONNREFUSED/);
  const quoted = args.map((a) => `'${a}'`).join(' ');
  const atTerminal = (
    await firstLine('script', ['-qec', `'${process.execPath}' ${quoted}`, '/dev/null'])
  ).replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g'), '');
  assert.doesNotMatch(atTerminal, /"level"/);
  assert.match(
    atTerminal,
    /\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] WARN: not connected \(server 127\.0\.0\.1:9 refused the connection.*\); will retry in [\d.]+ s {2}retryInMs=\d+\r?\n/,
  );
});
