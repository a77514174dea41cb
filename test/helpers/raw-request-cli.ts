// Run inside a namespace: `node raw-request-cli.js HOST PORT BASE64_REQUEST [USER PASSWORD TUNNEL_PATH]`.
// Sends the raw bytes over TLS (any certificate), collects the answer until the server closes or stays idle
// 1.5 s, prints it as base64. With USER PASSWORD TUNNEL_PATH, the first AUTHORIZATION_MARKER in the request
// is replaced by a valid credential signed for this connection (its TLS exporter), as a client makes it.

import { connect } from 'node:tls';
import { connectionBinding, createAuthorization, deriveUserKey } from '../../src/protocol/credentials.js';

/** Stands for the Authorization value in a request given with credentials. */
export const AUTHORIZATION_MARKER = '@@AUTHORIZATION@@';

const [host, port, request, user, password, tunnelPath] = process.argv.slice(2) as [
  string,
  string,
  string,
  string | undefined,
  string | undefined,
  string | undefined,
];
const key =
  user === undefined || password === undefined || tunnelPath === undefined
    ? undefined
    : await deriveUserKey(tunnelPath, user, password);
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
  let bytes = Buffer.from(request, 'base64');
  if (key !== undefined) {
    const at = bytes.indexOf(AUTHORIZATION_MARKER);
    const authorization = createAuthorization(key, connectionBinding(socket));
    bytes = Buffer.concat([
      bytes.subarray(0, at),
      Buffer.from(authorization, 'latin1'),
      bytes.subarray(at + AUTHORIZATION_MARKER.length),
    ]);
  }
  socket.write(bytes);
  arm();
});
socket.on('data', (chunk: Buffer) => {
  chunks.push(chunk);
  arm();
});
socket.on('close', () => finish(true));
socket.on('error', () => finish(true));
