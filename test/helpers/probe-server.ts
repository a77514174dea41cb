// A facade-side server in-process, as the probe suites need it: the decoy site app behind the real front door
// and the real tunnel acceptor with a real users file, over TLS on 127.0.0.1. The tunnel engine is replaced by
// a recorder that closes the socket: no probe should ever be attached, and a test can assert that.

import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo, Server as NetServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadOrCreateSelfSigned } from '../../src/certs/self-signed.js';
import { createLogger } from '../../src/core/log.js';
import type { TunnelServer } from '../../src/engine/engine.js';
import { createTunnelAcceptor, type TunnelIdentity } from '../../src/front/acceptor.js';
import { type FrontDoorOptions, installFrontDoor } from '../../src/front/front-door.js';
import { createSiteApp, SITE_DEFAULT_DIR } from '../../src/front/site.js';
import { UsersFile } from '../../src/users/users-file.js';

type Authenticate = FrontDoorOptions<TunnelIdentity>['authenticate'];

export interface ProbeServerOptions {
  readonly tunnelPath: string;
  /** Users written to the users file before the server starts (each add runs one scrypt). */
  readonly users: ReadonlyArray<{ readonly name: string; readonly password: string }>;
  /** Wraps the real credential check, e.g. to add a cost a control test wants to see. */
  readonly wrapAuthenticate?: (authenticate: Authenticate) => Authenticate;
}

export interface ProbeServer {
  readonly app: FastifyInstance;
  readonly port: number;
  /** Users the acceptor handed to the (recording) tunnel engine, in order. */
  readonly attached: readonly string[];
  /** Idempotent: closes the server and removes its temporary directory. */
  close(): Promise<void>;
}

/** Starts the facade side on 127.0.0.1, a free port, with a fresh self-signed certificate for "localhost". */
export async function startProbeServer(options: ProbeServerOptions): Promise<ProbeServer> {
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'facade-probe-server-'));
  let app: FastifyInstance | undefined;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    try {
      await app?.close();
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  };
  try {
    const certificate = await loadOrCreateSelfSigned(workDir, { names: ['localhost'] });
    const users = await UsersFile.load(path.join(workDir, 'users.json'), { allowMissing: true });
    for (const user of options.users) await users.add(user.name, user.password);
    await users.save();
    const attached: string[] = [];
    const tunnel = {
      attach: (socket: { destroy(): void }, request: { user: string }) => {
        attached.push(request.user);
        socket.destroy();
      },
    } as unknown as TunnelServer;
    const acceptor = createTunnelAcceptor({ users, tunnel, logger: createLogger({ level: 'silent' }) });
    app = createSiteApp({
      siteDir: SITE_DEFAULT_DIR,
      tls: { key: certificate.key, cert: certificate.cert },
    });
    installFrontDoor(app.server as unknown as NetServer, 'secureConnection', {
      ...acceptor,
      tunnelPath: options.tunnelPath,
      ...(options.wrapAuthenticate === undefined
        ? {}
        : { authenticate: options.wrapAuthenticate(acceptor.authenticate) }),
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    return { app, port, attached, close };
  } catch (err) {
    await close();
    throw err;
  }
}
