// The ceiling facade is measured against: one Node TLS stream between two processes, 64 KiB writes, the
// same machine, namespaces and cipher negotiation as the tunnel. bench/run.sh starts the server in fsrv and
// the client in fcli:
//
//   node dist/bench/tls-stream.js server HOST PORT CERT KEY     prints "Mbit/s N" for the first connection
//   node dist/bench/tls-stream.js client HOST PORT SECONDS      sends for SECONDS, then ends
//
// Nothing facade-specific runs here: it is what Node's TLS alone moves on this machine.

import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:tls';

const [mode, host = '198.18.0.1', portText = '9443', a = '', b = ''] = process.argv.slice(2);
const port = Number(portText);

if (mode === 'server') {
  const server = createServer({ cert: readFileSync(a), key: readFileSync(b) }, (socket) => {
    let bytes = 0;
    let first = 0;
    socket.on('data', (chunk: Buffer) => {
      if (first === 0) first = performance.now();
      bytes += chunk.length;
    });
    socket.on('end', () => {
      const seconds = (performance.now() - first) / 1000;
      process.stdout.write(`Mbit/s ${Math.round((bytes * 8) / seconds / 1e6)}\n`);
      server.close();
      socket.end();
    });
  });
  server.listen(port, host, () => process.stdout.write('listening\n'));
} else if (mode === 'client') {
  const seconds = Number(a || '6');
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  const socket = connect({ host, port, rejectUnauthorized: false }, () => {
    socket.setNoDelay(true);
    const until = performance.now() + seconds * 1000;
    const pump = (): void => {
      while (performance.now() < until) {
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
      socket.end();
    };
    pump();
  });
} else {
  process.stderr.write('usage: tls-stream.js server HOST PORT CERT KEY | client HOST PORT SECONDS\n');
  process.exitCode = 2;
}
