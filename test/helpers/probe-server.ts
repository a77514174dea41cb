// A facade-side server in-process, as the probe suites need it: the server's own front (createFront: the
// decoy site, the front door and the upgrade acceptor) with the real authenticator over a real users file,
// over TLS on 127.0.0.1. The tunnel engine is replaced by a recorder that closes the stream: no probe should
// ever be attached, and a test can assert that.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadOrCreateSelfSigned } from '../../src/certs/self-signed.js';
import { createLogger } from '../../src/core/log.js';
import { createFront, type Front } from '../../src/front/front.js';
import { type Authenticate, createAuthenticator } from '../../src/users/authenticator.js';
import type { UserPolicy } from '../../src/users/policy.js';
import { UsersFile } from '../../src/users/users-file.js';

export interface ProbeServerOptions {
  readonly tunnelPath: string;
  /** Users written to the users file before the server starts (each add runs one scrypt). */
  readonly users: ReadonlyArray<{
    readonly name: string;
    readonly password: string;
    /** Expiry, quota, rate (users/policy.ts), e.g. an expiry in the past. */
    readonly policy?: UserPolicy;
  }>;
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
  let front: Front | undefined;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    try {
      await front?.close();
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  };
  try {
    const certificate = await loadOrCreateSelfSigned(workDir, { names: ['localhost'] });
    const users = await UsersFile.load(path.join(workDir, 'users.json'), { allowMissing: true });
    for (const user of options.users) {
      await users.add(user.name, user.password, options.tunnelPath);
      if (user.policy !== undefined) users.setPolicy(user.name, user.policy);
    }
    await users.save();
    const attached: string[] = [];
    const authenticate = createAuthenticator(users);
    front = await createFront({
      tls: { key: certificate.key, cert: certificate.cert },
      tunnelPath: options.tunnelPath,
      authenticate:
        options.wrapAuthenticate === undefined ? authenticate : options.wrapAuthenticate(authenticate),
      host: {
        attach: (stream, identity) => {
          attached.push(identity.user);
          stream.destroy();
        },
      },
      logger: createLogger({ level: 'silent' }),
    });
    const port = await front.listen('127.0.0.1', 0);
    return { app: front.app, port, attached, close };
  } catch (err) {
    await close();
    throw err;
  }
}
