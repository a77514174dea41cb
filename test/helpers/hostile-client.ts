// A hand-driven tunnel client for attack tests, run inside a test namespace (a socket cannot be opened in
// another namespace from the test process):
//
//   node hostile-client.js HOST PORT PATH USER PASSWORD
//
// Opens TLS (any certificate), sends the upgrade with valid credentials and the offload capability, and
// prints one JSON line {"event":"config",...} with the CONFIG it gets. Then every stdin line is a frame in
// base64, written to the tunnel as is; after each, {"event":"sent","n":N} once the socket took it. Echo
// requests are answered so the session stays up; packets from the server are ignored.

import { connect } from 'node:tls';
import { deriveUserKey, passwordFromText } from '../../src/protocol/credentials.js';
import { speakTunnel } from './tunnel-peer.js';

const [host, port, path, user, password] = process.argv.slice(2) as [string, string, string, string, string];

function say(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const key = await deriveUserKey(path, user, passwordFromText(password));
const socket = connect({ host, port: Number(port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
socket.on('error', (err) => {
  say({ event: 'error', message: err.message });
  process.exit(1);
});
socket.on('close', () => {
  say({ event: 'closed' });
  process.exit(0);
});
await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
speakTunnel(
  socket,
  { path, host: `${host}:${port}`, key, offload: true },
  {
    config: (message) => say({ event: 'config', ...message }),
    disconnect: (reason, message) => say({ event: 'disconnect', reason, message }),
    refused: (status) => {
      say({ event: 'refused', status });
      process.exit(1);
    },
  },
);

let sent = 0;
let pending = '';
process.stdin.on('data', (chunk: Buffer) => {
  pending += chunk.toString('utf8');
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) {
    if (line.trim() === '') continue;
    socket.write(Buffer.from(line, 'base64'), () => say({ event: 'sent', n: ++sent }));
  }
});
process.stdin.on('end', () => socket.end());
