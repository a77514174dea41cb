// Load mode: many authenticated, idle tunnel sessions against one real `facade server`, without TUNs on the
// client side (frames come from and go to memory). Driven by bench/load.sh, which builds the namespaces and
// starts the server; see bench/README.md ("Load"). Subcommands:
//
//   users  --n N --tunnel-path P --out FILE
//       Writes a users file of N users load0..load(N-1). Their keys come from fixed seeds (SHA-256 of index
//       and tunnel path), not from passwords: the server only ever sees public keys, and scrypt is the
//       client's one-off at start, not part of a session set-up, so N scrypts (~2 min for 5,000 on 2 cores)
//       would measure nothing. The file is checked by loading it with src/users/users-file.ts.
//
//   run    --server HOST:PORT --path P --n N --server-pid PID [--sources A.B.C.D/COUNT] [--concurrency C]
//          [--idle S] [--probe FILE] [--site-from ADDR] [--out FILE] [--plain] [--traffic on|off]
//       Opens N TLS connections (connection i from source address i mod COUNT, above the per-address limit
//       of 64 otherwise), each doing the real v2 upgrade (credential signed over its TLS exporter, as
//       src/client/connect.ts does), reads the 101 and the CONFIG, then stays idle and answers the server's
//       keepalive echo requests. Meanwhile and afterwards it fetches the website (GET /, a new connection
//       each time) and reads the server's /proc figures (VmRSS, smaps_rollup, CPU). Then every session
//       sends one ICMP echo to the server's tunnel address (the server's kernel answers through its TUN)
//       and the replies are counted. --plain is the control: the same TLS connections and one request and
//       answer each, against `control-server`, with no facade at all.
//
//   control-server --listen HOST:PORT --cert FILE --key FILE
//       A bare Node TLS server (same certificate) that answers the first bytes of each connection with a
//       101-like head and then holds it reading: what N idle TLS connections cost Node without facade.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { type TLSSocket, connect as tlsConnect, createServer as tlsCreateServer } from 'node:tls';
import { parseArgs } from 'node:util';
import { addressBytes, internetChecksum, setIpv4HeaderChecksum } from '../src/net/packet.js';
import { decodeControl, describeReason, encodeControlFrame } from '../src/protocol/control.js';
import {
  connectionBinding,
  createAuthorization,
  keyFromSeed,
  type UserKey,
} from '../src/protocol/credentials.js';
import { FrameDecoder } from '../src/protocol/decoder.js';
import { encodeFrame, FrameType } from '../src/protocol/frame.js';
import { responseStatus, upgradeRequest } from '../src/protocol/handshake.js';
import { findHeadEnd } from '../src/protocol/http-head.js';
import { realmOf, USERS_FILE_VERSION, UsersFile } from '../src/users/users-file.js';

const userName = (i: number): string => `load${i}`;
const seedFor = (tunnelPath: string, i: number): Buffer =>
  createHash('sha256').update(`facade-load/${tunnelPath}/${i}`).digest();

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

// --- users ---------------------------------------------------------------------------------------------

async function writeUsers(n: number, tunnelPath: string, out: string): Promise<void> {
  const started = performance.now();
  const created = new Date().toISOString();
  const users: Record<string, { publicKey: string; created: string }> = {};
  for (let i = 0; i < n; i++) {
    const key = keyFromSeed(userName(i), seedFor(tunnelPath, i));
    users[key.user] = { publicKey: key.publicKey.toString('base64url'), created };
  }
  const text = `${JSON.stringify({ version: USERS_FILE_VERSION, realm: realmOf(tunnelPath), users }, null, 2)}\n`;
  writeFileSync(out, text, { mode: 0o600 });
  const check = await UsersFile.load(out, { tunnelPath });
  if (check.size !== n) throw new Error(`users file holds ${check.size} users, expected ${n}`);
  say(`users: ${n} users written to ${out} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

// --- /proc ---------------------------------------------------------------------------------------------

const CLK_TCK = 100;

/** utime + stime of a process, in seconds. */
function processCpu(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after the command: state is index 0, so utime (14th overall) is index 11, stime index 12.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Busy and total jiffies of the whole machine. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] as string;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

function kib(pid: number, file: string, field: string): number {
  const text = readFileSync(`/proc/${pid}/${file}`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match === null ? 0 : Number(match[1]);
}

interface MemorySample {
  rssKiB: number;
  anonKiB: number;
  fileKiB: number;
  probe?: ProbeReport | undefined;
}

interface ProbeReport {
  seq: number;
  rss: number;
  rssBeforeGc: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  mallocedMemory: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function sampleMemory(pid: number, probeFile: string | undefined): Promise<MemorySample> {
  let probe: ProbeReport | undefined;
  if (probeFile !== undefined) {
    const last = existsSync(probeFile) ? (JSON.parse(readFileSync(probeFile, 'utf8')) as ProbeReport).seq : 0;
    process.kill(pid, 'SIGUSR2');
    for (let t = 0; t < 100 && probe === undefined; t++) {
      await sleep(50);
      if (!existsSync(probeFile)) continue;
      const report = JSON.parse(readFileSync(probeFile, 'utf8')) as ProbeReport;
      if (report.seq > last) probe = report;
    }
  }
  return {
    rssKiB: kib(pid, 'status', 'VmRSS'),
    anonKiB: kib(pid, 'status', 'RssAnon'),
    fileKiB: kib(pid, 'status', 'RssFile'),
    probe,
  };
}

// --- the website probe ---------------------------------------------------------------------------------

interface SiteResult {
  ok: boolean;
  ms: number;
  status?: number;
  error?: string;
}

function siteGet(host: string, port: number, localAddress: string | undefined): Promise<SiteResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host,
        port,
        path: '/',
        method: 'GET',
        rejectUnauthorized: false,
        agent: false,
        timeout: 10_000,
        ...(localAddress === undefined ? {} : { localAddress }),
      },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve({ ok: res.statusCode === 200, status: res.statusCode, ms: performance.now() - started }),
        );
        res.on('error', (err) => resolve({ ok: false, error: err.message, ms: performance.now() - started }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out after 10 s')));
    req.on('error', (err) => resolve({ ok: false, error: err.message, ms: performance.now() - started }));
    req.end();
  });
}

/** GET / once a second until stopped; results go to `into`. */
function siteLoop(
  host: string,
  port: number,
  localAddress: string | undefined,
  into: SiteResult[],
  enabled = true,
): () => Promise<void> {
  if (!enabled) return async () => undefined;
  let stopped = false;
  const running = (async () => {
    while (!stopped) {
      const started = Date.now();
      into.push(await siteGet(host, port, localAddress));
      await sleep(Math.max(0, 1000 - (Date.now() - started)));
    }
  })();
  return async () => {
    stopped = true;
    await running;
  };
}

// --- sessions ------------------------------------------------------------------------------------------

interface Session {
  readonly index: number;
  socket: TLSSocket | undefined;
  /** ms from connect() to the CONFIG (or, --plain, to the answer). */
  setupMs: number;
  tlsMs: number;
  ipv4: string | undefined;
  serverIpv4: string | undefined;
  ready: boolean;
  closed: boolean;
  failure: string | undefined;
  /** Why the server ended an established session, if it did. */
  ended: string | undefined;
  repliesIn: number;
}

interface Counters {
  echoRequests: number;
  icmpReplies: number;
  lostAfterSetup: number;
  disconnects: Map<string, number>;
}

interface RunOptions {
  host: string;
  port: number;
  path: string;
  plain: boolean;
  sources: string[];
}

const IPPROTO_ICMP = 1;

function icmpEcho(source: string, destination: string, id: number, seq: number): Buffer {
  const packet = Buffer.alloc(20 + 8 + 32);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = IPPROTO_ICMP;
  addressBytes(source).copy(packet, 12);
  addressBytes(destination).copy(packet, 16);
  setIpv4HeaderChecksum(packet, 0);
  packet[20] = 8; // echo request
  packet.writeUInt16BE(id, 24);
  packet.writeUInt16BE(seq, 26);
  for (let i = 0; i < 32; i++) packet[28 + i] = i;
  packet.writeUInt16BE(internetChecksum(packet, 20, packet.length - 20), 22);
  return packet;
}

const PLAIN_HEAD = Buffer.from(
  `GET /load-control HTTP/1.1\r\nHost: control\r\nConnection: Upgrade\r\nUpgrade: facade\r\nAuthorization: Basic ${'A'.repeat(172)}\r\nFacade-Capabilities: offload\r\n\r\n`,
);

function openSession(
  index: number,
  key: UserKey | undefined,
  options: RunOptions,
  counters: Counters,
): Promise<Session> {
  const session: Session = {
    index,
    socket: undefined,
    setupMs: 0,
    tlsMs: 0,
    ipv4: undefined,
    serverIpv4: undefined,
    ready: false,
    closed: false,
    failure: undefined,
    ended: undefined,
    repliesIn: 0,
  };
  return new Promise((resolve) => {
    const started = performance.now();
    const localAddress = options.sources[index % options.sources.length];
    const socket = tlsConnect({
      host: options.host,
      port: options.port,
      ...(localAddress === undefined ? {} : { localAddress }),
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    session.socket = socket;
    let settled = false;
    let phase = 'TCP/TLS';
    const timer = setTimeout(() => settle(`no ${phase} within 30 s`), 30_000);
    const settle = (failure?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (failure === undefined) {
        session.ready = true;
        session.setupMs = performance.now() - started;
      } else {
        session.failure = failure;
        socket.destroy();
      }
      resolve(session);
    };
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!settled) settle(`${phase}: ${err.code ?? err.message}`);
      else session.ended ??= `error ${err.code ?? err.message}`;
    });
    socket.on('close', () => {
      session.closed = true;
      if (!settled) settle(`${phase}: closed by the server`);
      else if (session.ready) counters.lostAfterSetup++;
    });

    const decoder = new FrameDecoder({
      onPacket: (packet) => {
        // ICMP echo reply (type 0) to this session's address.
        if (packet.length >= 28 && packet[9] === IPPROTO_ICMP && packet[20] === 0) {
          session.repliesIn++;
          counters.icmpReplies++;
        }
      },
      onControl: (payload) => {
        const message = decodeControl(payload);
        if (message.type === 'config') {
          if (message.offload) decoder.configure({ offload: true });
          session.ipv4 = message.ipv4.address;
          session.serverIpv4 = message.serverIpv4;
          settle();
        } else if (message.type === 'echo-request') {
          counters.echoRequests++;
          socket.write(
            encodeControlFrame({ type: 'echo-reply', seq: message.seq, timestamp: message.timestamp }),
          );
        } else if (message.type === 'disconnect') {
          const reason = describeReason(message.reason);
          counters.disconnects.set(reason, (counters.disconnects.get(reason) ?? 0) + 1);
          if (!settled) settle(`DISCONNECT before CONFIG: ${reason}: ${message.message}`);
          else session.ended = `DISCONNECT ${reason}`;
        }
      },
    });

    socket.once('secureConnect', () => {
      session.tlsMs = performance.now() - started;
      phase = 'answer to the upgrade';
      if (options.plain) socket.write(PLAIN_HEAD);
      else
        socket.write(
          upgradeRequest({
            target: options.path,
            host: `${options.host}:${options.port}`,
            authorization: createAuthorization(key as UserKey, connectionBinding(socket)),
            capabilities: { offload: true },
          }),
        );
      let head = Buffer.alloc(0);
      const onHead = (chunk: Buffer): void => {
        head = Buffer.concat([head, chunk]);
        const end = findHeadEnd(head);
        if (end < 0) return;
        socket.removeListener('data', onHead);
        const status = responseStatus(head.subarray(0, end));
        if (status !== 101) {
          settle(`HTTP ${status} instead of 101`);
          return;
        }
        if (options.plain) {
          socket.on('data', () => undefined);
          settle();
          return;
        }
        phase = 'CONFIG';
        socket.on('data', (data: Buffer) => {
          try {
            decoder.push(data);
          } catch (err) {
            settle(`bad frame: ${err instanceof Error ? err.message : String(err)}`);
          }
        });
        if (head.length > end) decoder.push(head.subarray(end));
      };
      socket.on('data', onHead);
    });
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function siteSummary(results: SiteResult[]): string {
  if (results.length === 0) return 'no fetch';
  const ok = results.filter((r) => r.ok);
  const ms = ok.map((r) => r.ms).sort((a, b) => a - b);
  const failures = results.filter((r) => !r.ok).map((r) => r.error ?? `HTTP ${r.status}`);
  const distinct = [...new Set(failures)].slice(0, 2).join('; ');
  return (
    `${ok.length}/${results.length} answered 200` +
    (ms.length > 0
      ? `, latency p50 ${percentile(ms, 50).toFixed(1)} ms, max ${(ms[ms.length - 1] as number).toFixed(1)} ms`
      : '') +
    (failures.length > 0 ? ` (failed: ${distinct})` : '')
  );
}

async function run(args: Record<string, string | boolean | undefined>): Promise<void> {
  const [host, portText] = String(args.server).split(':') as [string, string];
  const port = Number(portText);
  const n = Number(args.n ?? 5000);
  const concurrency = Number(args.concurrency ?? 32);
  const idleSeconds = Number(args.idle ?? 30);
  const pid = Number(args['server-pid']);
  const plain = args.plain === true;
  const path = String(args.path ?? '/load');
  const probeFile = typeof args.probe === 'string' ? args.probe : undefined;
  const siteFrom = typeof args['site-from'] === 'string' ? args['site-from'] : undefined;
  const traffic = args.traffic !== 'off' && !plain;
  const sources: string[] = [];
  if (typeof args.sources === 'string') {
    const [first, countText] = args.sources.split('/') as [string, string];
    const base = addressBytes(first).readUInt32BE(0);
    for (let k = 0; k < Number(countText); k++) {
      const v = base + k;
      sources.push(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
    }
  }
  const label = plain ? 'control (plain Node TLS server)' : 'facade server';
  const options: RunOptions = { host, port, path, plain, sources };
  const counters: Counters = { echoRequests: 0, icmpReplies: 0, lostAfterSetup: 0, disconnects: new Map() };
  const result: Record<string, unknown> = { label, n, concurrency, sources: sources.length, idleSeconds };

  // Keys first: not part of any set-up.
  const keys: (UserKey | undefined)[] = [];
  for (let i = 0; i < n; i++) keys.push(plain ? undefined : keyFromSeed(userName(i), seedFor(path, i)));

  // Baseline: the site has served once (its first-request allocations are not the sessions'), then settle.
  const warm = plain ? { ok: true, ms: 0 } : await siteGet(host, port, siteFrom);
  if (!warm.ok) throw new Error(`the website does not answer before the load: ${warm.error ?? warm.status}`);
  await sleep(2000);
  const before = await sampleMemory(pid, probeFile);
  say(`== ${label}: N=${n}, concurrency ${concurrency}, ${sources.length} source addresses, pid ${pid}`);
  say(`before: VmRSS ${(before.rssKiB / 1024).toFixed(1)} MiB (anon ${(before.anonKiB / 1024).toFixed(1)})`);

  // --- set-up ---
  const setupSite: SiteResult[] = [];
  const stopSetupSite = siteLoop(host, port, siteFrom, setupSite, !plain);
  const cpu0 = processCpu(pid);
  const machine0 = machineCpu();
  const self0 = process.cpuUsage();
  // CLOCK_MONOTONIC in µs, the clock of V8's CPU profiles: `profile` can cut the server's to this window.
  const windowStartUs = Number(process.hrtime.bigint() / 1000n);
  const t0 = performance.now();
  const sessions: Session[] = [];
  let next = 0;
  let firstFailure: { index: number; open: number; reason: string; atMs: number } | undefined;
  const failures = new Map<string, number>();
  let open = 0;
  let peakOpen = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const session = await openSession(i, keys[i], options, counters);
      sessions.push(session);
      if (session.ready) {
        open++;
        peakOpen = Math.max(peakOpen, open - counters.lostAfterSetup);
      } else {
        const reason = session.failure ?? 'unknown';
        failures.set(reason, (failures.get(reason) ?? 0) + 1);
        firstFailure ??= {
          index: i,
          open: open - counters.lostAfterSetup,
          reason,
          atMs: performance.now() - t0,
        };
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const setupMs = performance.now() - t0;
  const windowEndUs = Number(process.hrtime.bigint() / 1000n);
  const cpu1 = processCpu(pid);
  const machine1 = machineCpu();
  const self1 = process.cpuUsage(self0);
  await stopSetupSite();
  const ok = sessions.filter((s) => s.ready);
  const lat = ok.map((s) => s.setupMs).sort((a, b) => a - b);
  const tlsLat = ok.map((s) => s.tlsMs).sort((a, b) => a - b);
  const rate = ok.length / (setupMs / 1000);
  const serverCpuSetup = (cpu1 - cpu0) / (setupMs / 1000);
  const machineBusy = (machine1.busy - machine0.busy) / (machine1.total - machine0.total);
  const clientCpu = (self1.user + self1.system) / 1000 / setupMs;
  say(
    `set-up: ${ok.length}/${n} sessions in ${(setupMs / 1000).toFixed(1)} s = ${rate.toFixed(0)} sessions/s; ` +
      `latency (connect to CONFIG) p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms ` +
      `(TLS part p50 ${percentile(tlsLat, 50).toFixed(1)} ms)`,
  );
  say(
    `set-up CPU: server ${(serverCpuSetup * 100).toFixed(0)} % of a core, load client ${(clientCpu * 100).toFixed(0)} %, ` +
      `machine ${(machineBusy * 100).toFixed(0)} % busy (${(serverCpuSetup > 0 && ok.length > 0 ? ((cpu1 - cpu0) * 1e6) / ok.length : 0).toFixed(0)} µs server CPU per session)`,
  );
  if (firstFailure !== undefined) {
    say(
      `refused: ${n - ok.length} set-ups failed; the first at attempt #${firstFailure.index + 1} with ${firstFailure.open} sessions open (${firstFailure.reason})`,
    );
    for (const [reason, count] of failures) say(`  ${count} x ${reason}`);
  }
  say(`site during set-up: ${siteSummary(setupSite)}`);
  Object.assign(result, {
    setup: {
      ok: ok.length,
      failed: n - ok.length,
      seconds: setupMs / 1000,
      perSecond: rate,
      p50Ms: percentile(lat, 50),
      p99Ms: percentile(lat, 99),
      maxMs: lat[lat.length - 1],
      tlsP50Ms: percentile(tlsLat, 50),
      serverCpuCores: serverCpuSetup,
      serverCpuUsPerSession: ok.length > 0 ? ((cpu1 - cpu0) * 1e6) / ok.length : null,
      clientCpuCores: clientCpu,
      machineBusy,
      firstFailure,
      windowUs: [windowStartUs, windowEndUs],
      failures: Object.fromEntries(failures),
      site: setupSite,
    },
  });

  // --- idle ---
  const idleSite: SiteResult[] = [];
  const stopIdleSite = siteLoop(host, port, siteFrom, idleSite, !plain);
  const rssTrace: number[] = [kib(pid, 'status', 'VmRSS')];
  const idleStart = performance.now();
  const echo0 = counters.echoRequests;
  const windowSeconds = Math.min(10, idleSeconds);
  const windowStartAt = Math.max(0, idleSeconds - windowSeconds);
  let windowCpu0 = 0;
  let windowT0 = 0;
  for (let s = 1; s <= idleSeconds; s++) {
    if (s - 1 === windowStartAt) {
      windowCpu0 = processCpu(pid);
      windowT0 = performance.now();
    }
    await sleep(idleStart + s * 1000 - performance.now());
    if (s % 5 === 0) rssTrace.push(kib(pid, 'status', 'VmRSS'));
  }
  const cpuWindow = {
    cores: (processCpu(pid) - windowCpu0) / ((performance.now() - windowT0) / 1000),
    seconds: (performance.now() - windowT0) / 1000,
  };
  await stopIdleSite();
  const after = await sampleMemory(pid, probeFile);
  const held = ok.filter((s) => !s.closed).length;
  const perSession = held > 0 ? ((after.rssKiB - before.rssKiB) * 1024) / held : Number.NaN;
  const echoes = counters.echoRequests - echo0;
  say(
    `idle ${idleSeconds} s: ${held} sessions still open (${counters.lostAfterSetup} lost), ${echoes} keepalive echo requests answered`,
  );
  say(
    `after: VmRSS ${(after.rssKiB / 1024).toFixed(1)} MiB (anon ${(after.anonKiB / 1024).toFixed(1)}); ` +
      `RSS trace MiB ${rssTrace.map((k) => (k / 1024).toFixed(0)).join(' ')}`,
  );
  say(
    `RSS per idle session: ${(perSession / 1024).toFixed(1)} KiB = (${(after.rssKiB / 1024).toFixed(1)} - ${(before.rssKiB / 1024).toFixed(1)}) MiB / ${held}`,
  );
  const split: Record<string, number> = {};
  if (before.probe !== undefined && after.probe !== undefined && held > 0) {
    const d = (k: keyof ProbeReport): number => (after.probe![k] - before.probe![k]) / held;
    Object.assign(split, {
      rssAfterGc: d('rss'),
      heapUsed: d('heapUsed'),
      heapTotal: d('heapTotal'),
      external: d('external'),
      arrayBuffers: d('arrayBuffers'),
      malloced: d('mallocedMemory'),
    });
    const rest = split.rssAfterGc! - split.heapTotal! - split.external!;
    say(
      `  per session after a full GC: RSS ${(split.rssAfterGc! / 1024).toFixed(1)} KiB = V8 heap used ${(split.heapUsed! / 1024).toFixed(1)} ` +
        `(heap reserved ${(split.heapTotal! / 1024).toFixed(1)}) + external ${(split.external! / 1024).toFixed(1)} ` +
        `(array buffers ${(split.arrayBuffers! / 1024).toFixed(1)}) + native rest ${(rest / 1024).toFixed(1)} KiB (OpenSSL, libuv, malloc)`,
    );
  }
  say(
    `server CPU while idle: ${(cpuWindow.cores * 100).toFixed(1)} % of a core over ${cpuWindow.seconds.toFixed(1)} s`,
  );
  say(`site while idle: ${siteSummary(idleSite)}`);
  Object.assign(result, {
    idle: {
      held,
      lost: counters.lostAfterSetup,
      echoRequests: echoes,
      serverCpuCores: cpuWindow.cores,
      site: idleSite,
      rssTraceKiB: rssTrace,
    },
    memory: { before, after, perSessionBytes: perSession, perSessionSplitBytes: split },
    disconnects: Object.fromEntries(counters.disconnects),
  });

  // --- traffic: one ICMP echo per session, through the server's TUN and back ---
  if (traffic) {
    const live = ok.filter((s) => !s.closed && s.ipv4 !== undefined && s.serverIpv4 !== undefined);
    const rate = Number(args['echo-rate'] ?? 1000);
    const round = async (targets: Session[], seq: number): Promise<number> => {
      const started = performance.now();
      for (let k = 0; k < targets.length; k++) {
        const s = targets[k] as Session;
        const packet = icmpEcho(s.ipv4 as string, s.serverIpv4 as string, s.index & 0xffff, seq);
        s.socket?.write(encodeFrame(FrameType.DATA, packet));
        // Paced (--echo-rate per second, in steps of 10 ms): a burst of thousands of tiny frames on
        // thousands of sockets is another benchmark (and overflows the server's TUN queue of 1000).
        if (k % Math.max(1, rate / 100) === 0)
          await sleep(Math.max(0, started + (k * 1000) / rate - performance.now()));
      }
      const deadline = performance.now() + 5000;
      while (targets.some((s) => s.repliesIn === 0) && performance.now() < deadline) await sleep(50);
      return (performance.now() - started) / 1000;
    };
    const seconds = await round(live, 1);
    const first = live.filter((s) => s.repliesIn > 0).length;
    // A second echo for those without a reply: tells a lost packet from a session that does not work.
    const missing = live.filter((s) => s.repliesIn === 0 && !s.closed);
    if (missing.length > 0) await round(missing, 2);
    const answered = live.filter((s) => s.repliesIn > 0).length;
    say(
      `traffic: ${live.length} ICMP echoes to the server's tunnel address at ${rate}/s, one per session: ` +
        `${first} answered in ${seconds.toFixed(1)} s` +
        (missing.length > 0
          ? `; a second echo to the other ${missing.length}: ${answered} sessions answered in all`
          : ''),
    );
    Object.assign(result, {
      traffic: { sent: live.length, rate, answeredFirst: first, answered, seconds },
    });
  }

  for (const s of sessions) s.socket?.destroy();
  if (typeof args.out === 'string') writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
}

// --- the control server ----------------------------------------------------------------------------------

async function controlServer(args: Record<string, string | boolean | undefined>): Promise<void> {
  await import('./load-probe.js');
  const [host, portText] = String(args.listen).split(':') as [string, string];
  const server = tlsCreateServer(
    {
      cert: readFileSync(String(args.cert)),
      key: readFileSync(String(args.key)),
      ALPNProtocols: ['http/1.1'],
    },
    (socket) => {
      socket.on('error', () => undefined);
      socket.once('data', () => {
        socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: facade\r\n\r\n');
        socket.on('data', () => undefined);
      });
    },
  );
  server.on('tlsClientError', () => undefined);
  server.listen(Number(portText), host, () => say(`control server listening on ${host}:${portText}`));
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

// --- a CPU profile, summarised ------------------------------------------------------------------------------

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time of a .cpuprofile by function and by file, top entries: where the server's time went. */
function summariseProfile(file: string, resultFile: string | undefined): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: ProfileNode[];
    startTime: number;
    samples: number[];
    timeDeltas: number[];
  };
  // With the load run's result: only the samples taken during its set-up window.
  let window: [number, number] = [0, Number.POSITIVE_INFINITY];
  if (resultFile !== undefined) {
    const result = JSON.parse(readFileSync(resultFile, 'utf8')) as { setup: { windowUs: [number, number] } };
    window = result.setup.windowUs;
  }
  const hitsById = new Map<number, number>();
  let at = profile.startTime;
  for (let k = 0; k < profile.samples.length; k++) {
    at += profile.timeDeltas[k] ?? 0;
    if (at < window[0] || at > window[1]) continue;
    const id = profile.samples[k] as number;
    hitsById.set(id, (hitsById.get(id) ?? 0) + 1);
  }
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const hits = hitsById.get(node.id) ?? 0;
    if (hits === 0) continue;
    total += hits;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url === '' ? '' : url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/');
    const fn = `${functionName || '(anonymous)'} ${where}${where === '' ? '' : `:${lineNumber + 1}`}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + hits);
    const group = where === '' ? functionName : where.replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*/, '$1');
    byFile.set(group, (byFile.get(group) ?? 0) + hits);
  }
  const top = (map: Map<string, number>, count: number): void => {
    for (const [name, hits] of [...map].sort((a, b) => b[1] - a[1]).slice(0, count))
      say(`  ${((hits / total) * 100).toFixed(1).padStart(5)} %  ${name}`);
  };
  say(
    `self time by file (${total} samples${resultFile === undefined ? '' : ", the load run's set-up window only"}):`,
  );
  top(byFile, 18);
  say('self time by function:');
  top(byFunction, 25);
}

// --- main ----------------------------------------------------------------------------------------------

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    n: { type: 'string' },
    'tunnel-path': { type: 'string' },
    out: { type: 'string' },
    server: { type: 'string' },
    path: { type: 'string' },
    'server-pid': { type: 'string' },
    sources: { type: 'string' },
    concurrency: { type: 'string' },
    idle: { type: 'string' },
    probe: { type: 'string' },
    'site-from': { type: 'string' },
    plain: { type: 'boolean' },
    traffic: { type: 'string' },
    'echo-rate': { type: 'string' },
    listen: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});

switch (positionals[0]) {
  case 'users':
    await writeUsers(Number(values.n), String(values['tunnel-path']), String(values.out));
    break;
  case 'run':
    await run(values);
    // Sockets were destroyed; do not wait for their close handshakes.
    process.exit(0);
    break;
  case 'profile':
    summariseProfile(String(positionals[1]), positionals[2]);
    break;
  case 'control-server':
    await controlServer(values);
    break;
  default:
    process.stderr.write(
      'usage: load.js users|run|control-server ... (see the comment at the top of bench/load.ts)\n',
    );
    process.exit(2);
}
