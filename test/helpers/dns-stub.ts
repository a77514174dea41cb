// A DNS server for tests that knows no name: `node dns-stub.js ADDR` answers every query on ADDR:53 (UDP)
// with NXDOMAIN ("no such name"), or SERVFAIL (a resolver in trouble) for names under servfail.
// Run inside a namespace whose /etc/netns/NAME/resolv.conf points at it, so that getaddrinfo gives
// ENOTFOUND and EAI_AGAIN without any packet leaving the namespace. Prints "listening" when ready.

import { createSocket } from 'node:dgram';

const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;

/** The question's name, label by label (no compression in a query's question). */
function questionName(query: Buffer): string {
  const labels: string[] = [];
  let at = 12;
  while (at < query.length && query[at] !== 0) {
    const length = query[at] as number;
    labels.push(query.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += 1 + length;
  }
  return labels.join('.');
}

/** The query turned into an answer with no records: header flags QR, RD copied, RA, and the rcode. */
function answer(query: Buffer, rcode: number): Buffer {
  const reply = Buffer.from(query);
  const rd = (query[2] as number) & 0x01;
  reply[2] = 0x80 | rd; // QR, opcode QUERY, RD as asked
  reply[3] = 0x80 | rcode; // RA, rcode
  reply.writeUInt16BE(0, 6); // no answers
  reply.writeUInt16BE(0, 8); // no authority
  reply.writeUInt16BE(0, 10); // no additional (drops an EDNS OPT the query had)
  // The question ends after its name's zero byte and QTYPE, QCLASS.
  let at = 12;
  while (at < query.length && query[at] !== 0) at += 1 + (query[at] as number);
  return reply.subarray(0, Math.min(query.length, at + 5));
}

const address = process.argv[2] ?? '127.0.0.1';
const socket = createSocket(address.includes(':') ? 'udp6' : 'udp4');
socket.on('message', (query, peer) => {
  if (query.length < 17) return;
  const rcode = questionName(query).startsWith('servfail.') ? RCODE_SERVFAIL : RCODE_NXDOMAIN;
  socket.send(answer(query, rcode), peer.port, peer.address);
});
socket.bind(53, address, () => console.log('listening'));
