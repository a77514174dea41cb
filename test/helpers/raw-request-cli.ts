// Run inside a namespace: `node raw-request-cli.js HOST PORT BASE64_REQUEST`. Sends the raw bytes over TLS
// (any certificate), collects the answer until the server closes or stays idle 1.5 s, prints it as base64.

import { connect } from 'node:tls';

const [host, port, request] = process.argv.slice(2) as [string, string, string];
const socket = connect({ host, port: Number(port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
const chunks: Buffer[] = [];
let idle: NodeJS.Timeout | undefined;
const finish = (closed: boolean): void => {
  process.stdout.write(`${JSON.stringify({ response: Buffer.concat(chunks).toString('base64'), closed })}\n`);
  socket.destroy();
  process.exit(0);
};
const arm = (): void => {
  if (idle !== undefined) clearTimeout(idle);
  idle = setTimeout(() => finish(false), 1500);
};
socket.on('secureConnect', () => {
  socket.write(Buffer.from(request, 'base64'));
  arm();
});
socket.on('data', (chunk: Buffer) => {
  chunks.push(chunk);
  arm();
});
socket.on('close', () => finish(true));
socket.on('error', () => finish(true));
