// The server's local admin socket: `facade status` asks the running server instead of reading a file that
// may be stale. A unix socket in the state directory, mode 0600 (the server's user, and root, may talk to
// it), one request per connection:
//
//   client: "status\n"   server: one line of JSON (the StatusSnapshot), then it closes
//
// Anything else gets `{"error":"…"}`. A request longer than a line, or slower than ADMIN_REQUEST_MS, is cut.
// The file is removed at close; one left by a crashed server is replaced at start (nothing answers there).

import { chmod, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { StatusSnapshot } from './status.js';

const ADMIN_REQUEST_MS = 2_000;
const MAX_REQUEST_BYTES = 256;

/** Where the server listens: `<state-dir>/admin.sock`. */
export function adminSocketPath(stateDir: string): string {
  return join(stateDir, 'admin.sock');
}

export interface AdminSocket {
  readonly path: string;
  close(): Promise<void>;
}

export async function startAdminSocket(stateDir: string, status: () => StatusSnapshot): Promise<AdminSocket> {
  const path = adminSocketPath(stateDir);
  await unlink(path).catch(() => undefined);
  const server: Server = createServer((socket) => {
    let request = '';
    socket.setTimeout(ADMIN_REQUEST_MS, () => socket.destroy());
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      request += chunk;
      const end = request.indexOf('\n');
      if (end < 0) {
        if (request.length > MAX_REQUEST_BYTES) socket.destroy();
        return;
      }
      const command = request.slice(0, end).trim();
      const answer = command === 'status' ? status() : { error: `unknown request "${command.slice(0, 40)}"` };
      socket.end(`${JSON.stringify(answer)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Connections are one request each: end them rather than wait.
        unlink(path).catch(() => undefined);
      }),
  };
}

/**
 * Asks a running server for its status. Resolves undefined when no server listens there (no socket
 * file, or nothing behind it: a server that crashed); rejects on anything else (a refusal, bad JSON).
 */
export function askStatus(
  stateDir: string,
  timeoutMs = ADMIN_REQUEST_MS,
): Promise<StatusSnapshot | undefined> {
  const path = adminSocketPath(stateDir);
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server at ${path} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write('status\n'));
    socket.on('data', (chunk: string) => {
      answer += chunk;
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        const parsed = JSON.parse(answer) as StatusSnapshot | { error: string };
        if ('error' in parsed) reject(new Error(parsed.error));
        else resolve(parsed);
      } catch {
        reject(new Error(`the server at ${path} answered something that is not a status`));
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
      else reject(err);
    });
  });
}
