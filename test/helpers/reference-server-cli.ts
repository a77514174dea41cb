// The plain reference (reference-server.ts) as a process, for a test namespace:
//
//   node reference-server-cli.js HOST HTTPS_PORT HTTP_PORT CERT_FILE KEY_FILE
//
// Prints "ready HTTPS_PORT HTTP_PORT" once both listen; closes and exits on SIGTERM or when stdin ends.

import { readFileSync } from 'node:fs';
import { startReferenceServer } from './reference-server.js';

const [host = '127.0.0.1', httpsPort = '0', httpPort = '0', certFile = '', keyFile = ''] =
  process.argv.slice(2);
const server = await startReferenceServer({
  host,
  httpsPort: Number(httpsPort),
  httpPort: Number(httpPort),
  tls: { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') },
});
process.stdout.write(`ready ${server.httpsPort} ${server.httpPort}\n`);
const stop = (): void => {
  void server.close().then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.stdin.resume();
process.stdin.on('end', stop);
