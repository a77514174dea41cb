// The latency floor of a Node data path: two Node processes echoing a 100-byte message over plain TCP
// between the namespaces, one message at a time, spaced like the bench's ping (20 ms). Each round trip is
// two event-loop wake-ups (the echo server's read and write, the client's read), the same kind facade's
// tunnel makes four of (client TUN read, server socket read, server TUN read, client socket read). First
// 500 round trips back to back, not counted, so the JIT has compiled the path as a warm facade's is. Nothing
// facade-specific runs here: it is what Node alone costs per wake-up on this machine. bench/run.sh starts
// the server in fsrv and the client in fcli:
//
//   node dist/bench/echo-floor.js server HOST PORT
//   node dist/bench/echo-floor.js client HOST PORT COUNT GAP_MS   prints "rtt AVG" in ms, like ping's avg

import { connect, createServer, type Socket } from 'node:net';

const [mode, host = '198.18.0.1', portText = '9444', countText = '50', gapText = '20'] =
  process.argv.slice(2);
const port = Number(portText);

if (mode === 'server') {
  const server = createServer((socket: Socket) => {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => socket.write(chunk));
    socket.on('end', () => server.close());
  });
  server.listen(port, host, () => process.stdout.write('listening\n'));
} else {
  const count = Number(countText);
  const gapMs = Number(gapText);
  const message = Buffer.alloc(100, 0x61);
  const rtts: number[] = [];
  let warmUp = 500;
  let received = 0;
  let sentAt = 0n;
  const socket = connect(port, host);
  socket.setNoDelay(true);
  const send = (): void => {
    received = 0;
    sentAt = process.hrtime.bigint();
    socket.write(message);
  };
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received < message.length) return;
    if (warmUp > 0) {
      warmUp--;
      send();
      return;
    }
    rtts.push(Number(process.hrtime.bigint() - sentAt) / 1e6);
    if (rtts.length < count) {
      setTimeout(send, gapMs);
      return;
    }
    const avg = rtts.reduce((a, b) => a + b, 0) / rtts.length;
    process.stdout.write(`rtt ${avg.toFixed(3)}\n`);
    socket.end();
  });
  socket.once('connect', send);
}
