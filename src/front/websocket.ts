// The WebSocket transport (RFC 6455): a WebSocket handshake on the secret path, the tunnel's frames in
// binary messages, so that a CDN or a proxy that carries only WebSockets carries the tunnel. The front door
// and acceptor.ts decide as for the raw upgrade (the same credential, the same single signature check for
// every head, the site's answer to every refusal, a malformed WebSocket handshake included); this file
// only answers an accepted one and puts the framer (protocol/websocket.ts) between the socket and the host.

import type { Socket } from 'node:net';
import { Header, type TunnelIdentity, webSocketResponse } from '../protocol/handshake.js';
import type { RequestHead } from '../protocol/http-head.js';
import { WebSocketStream } from '../protocol/websocket.js';
import type { TunnelHost } from './acceptor.js';

/** Answers 101 to an authenticated, well-formed WebSocket handshake and attaches the stream. */
export function acceptWebSocket(
  head: RequestHead,
  socket: Socket,
  rest: Buffer,
  identity: TunnelIdentity,
  host: TunnelHost,
  remote: string,
): void {
  socket.write(webSocketResponse((head.headers.get(Header.WEBSOCKET_KEY) as string).trim()));
  const stream = new WebSocketStream(socket, { role: 'server' });
  // Listening at once: the front door took its own 'data' listener off a flowing socket.
  socket.on('data', stream.receive);
  host.attach(stream, identity, Buffer.alloc(0), { remote, transport: 'websocket' });
  // Bytes that came with the handshake are the first WebSocket frames; the session listens by now.
  if (rest.length > 0) stream.receive(rest);
}
