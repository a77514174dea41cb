// The server side of test/netns/acme.test.ts, run inside the test's namespace with
// `ip netns exec NS node acme-child.js CONFIG_JSON`, the way the real server runs: plain-HTTP listener on
// port 80 answering HTTP-01, CertificateManager, node:https on 443 that swaps in renewed certificates with
// setSecureContext, NODE_EXTRA_CA_CERTS trusting the private ACME server.
//
// It also plays the TLS client (it is inside the namespace, the test is not): requests over one kept-alive
// connection, and over fresh ones, trusting only pebble's root.
//
// Protocol: one JSON command per stdin line ({id, cmd, ...}); one JSON answer per stdout line
// ({id, ok, result} or {id, ok: false, error: {code, message}}). pino logs go to stderr as JSON lines.

import { readFileSync } from 'node:fs';
import { Agent, createServer, request, type Server } from 'node:https';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { CertificateManager } from '../../src/certs/acme.js';
import { ChallengeStore } from '../../src/certs/challenges.js';
import { type HttpListener, startHttpListener } from '../../src/front/http-listener.js';

export interface AcmeChildConfig {
  domain: string;
  directoryUrl: string;
  stateDir: string;
  /** Address the HTTPS server binds and the client connects to (the domain's address). */
  address: string;
  httpsPort: number;
  httpPort: number;
  /** pebble's root, fetched from its management interface: the only trust anchor of the client side. */
  rootPath: string;
  requestRetries?: number;
  retry: { initialMs: number; maxMs: number };
}

interface Command {
  id: number;
  cmd: string;
}

export interface PeerAnswer {
  body: string;
  serial: string;
  authorized: boolean;
  /** True when this request went over the connection opened by 'keepAliveRequest' the first time. */
  sameConnection: boolean;
}

const config = JSON.parse(process.argv[2]!) as AcmeChildConfig;
const logger = pino(
  { level: 'debug', base: { pid: process.pid } },
  pino.destination({ dest: 2, sync: true }),
);
const challenges = new ChallengeStore();
const manager = new CertificateManager({
  domain: config.domain,
  email: 'ops@example.test',
  directoryUrl: config.directoryUrl,
  stateDir: config.stateDir,
  logger,
  challenges,
  retry: config.retry,
  polling: { minMs: 100, maxMs: 1000, attempts: 30 },
  ...(config.requestRetries === undefined ? {} : { requestRetries: config.requestRetries }),
});

let httpListener: HttpListener | undefined;
let httpsServer: Server | undefined;
let requestCount = 0;
const keepAliveAgent = new Agent({ keepAlive: true, maxSockets: 1, ca: readFileSync(config.rootPath) });
let firstKeptSocket: TLSSocket | undefined;

async function start(): Promise<unknown> {
  httpListener = await startHttpListener({
    host: '0.0.0.0',
    port: config.httpPort,
    challenges,
    logger,
    httpsPort: config.httpsPort,
  });
  const began = performance.now();
  const pair = await manager.start();
  const durationMs = Math.round(performance.now() - began);
  httpsServer = createServer({ cert: pair.cert, key: pair.key }, (_req, res) => {
    requestCount += 1;
    res.end(`hello ${requestCount}`);
  });
  // Only new handshakes see the new context: connections already open keep their session.
  manager.on('certificate', ({ cert, key }) => httpsServer!.setSecureContext({ cert, key }));
  await new Promise<void>((resolve, reject) => {
    httpsServer!.once('error', reject);
    httpsServer!.listen(config.httpsPort, config.address, () => resolve());
  });
  return { durationMs, serial: manager.current()!.validity.serialNumber };
}

function get(agent: Agent | false): Promise<PeerAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: config.domain,
        port: config.httpsPort,
        path: '/',
        agent,
        ...(agent === false ? { ca: readFileSync(config.rootPath) } : {}),
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        if (agent !== false) firstKeptSocket ??= socket;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            body: Buffer.concat(chunks).toString(),
            serial: socket.getPeerCertificate().serialNumber,
            authorized: socket.authorized,
            sameConnection: agent !== false && socket === firstKeptSocket,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

async function handle(command: Command): Promise<unknown> {
  switch (command.cmd) {
    case 'start':
      return start();
    case 'renew':
      await manager.renewNow();
      return { serial: manager.current()!.validity.serialNumber };
    case 'keepAliveRequest':
      return get(keepAliveAgent);
    case 'freshRequest':
      return get(false);
    case 'status':
      return { serial: manager.current()?.validity.serialNumber, nextRenewalAt: manager.nextRenewalAt() };
    case 'exit':
      manager.close();
      keepAliveAgent.destroy();
      httpsServer?.closeAllConnections();
      httpsServer?.close();
      await httpListener?.close();
      setImmediate(() => process.exit(0));
      return {};
    default:
      throw new Error(`unknown command ${command.cmd}`);
  }
}

// The test closes stdin (or dies): nothing more will be asked, so leave instead of lingering in the namespace.
const commands = createInterface({ input: process.stdin });
commands.on('close', () => process.exit(0));
commands.on('line', (line) => {
  const command = JSON.parse(line) as Command;
  handle(command).then(
    (result) => process.stdout.write(`${JSON.stringify({ id: command.id, ok: true, result })}\n`),
    (err: Error & { code?: string }) =>
      process.stdout.write(
        `${JSON.stringify({ id: command.id, ok: false, error: { code: err.code, message: err.message } })}\n`,
      ),
  );
});
