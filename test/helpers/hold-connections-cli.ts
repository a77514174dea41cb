// Opens and holds N raw TCP connections that never send a byte (stalled TLS handshakes), spread over source
// addresses 127.0.1.1.. (loopback in the caller's namespace), so the server's per-address limit admits them:
//
//   node hold-connections-cli.js HOST PORT N PER_ADDRESS
//
// Prints "open N" once all are connected, then "closed N" as the server closes them; exits when stdin ends.

import { connect, type Socket } from 'node:net';

const [host = '127.0.0.1', portText = '8443', countText = '1000', perText = '50'] = process.argv.slice(2);
const count = Number(countText);
const perAddress = Number(perText);
const sockets: Socket[] = [];
let open = 0;
let closed = 0;
for (let i = 0; i < count; i++) {
  const localAddress = `127.0.${1 + Math.floor(i / perAddress / 250)}.${1 + (Math.floor(i / perAddress) % 250)}`;
  const socket = connect({ host, port: Number(portText), localAddress });
  socket.on('error', () => undefined);
  socket.once('connect', () => {
    if (++open === count) process.stdout.write(`open ${open}\n`);
  });
  socket.once('close', () => {
    closed++;
    if (closed % 100 === 0 || closed === count) process.stdout.write(`closed ${closed}\n`);
  });
  sockets.push(socket);
}
process.stdin.resume();
process.stdin.on('end', () => {
  for (const socket of sockets) socket.destroy();
  process.exit(0);
});
