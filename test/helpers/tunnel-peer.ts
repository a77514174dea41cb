// The client half of a tunnel, scripted for attack and fault tests: writes the v2 upgrade on a connected
// TLS socket, waits for the answer, then decodes frames as a client would (a CONFIG with offload switches
// DATA_OFFLOAD on, echo requests are answered so the session stays up). What it sees goes to `events`.

import type { TLSSocket } from 'node:tls';
import { type ConfigMessage, decodeControl, encodeControlFrame } from '../../src/protocol/control.js';
import { connectionBinding, createAuthorization, type UserKey } from '../../src/protocol/credentials.js';
import { FrameDecoder } from '../../src/protocol/decoder.js';
import { responseStatus, upgradeRequest } from '../../src/protocol/handshake.js';
import { findHeadEnd } from '../../src/protocol/http-head.js';

export interface TunnelPeerEvents {
  config(message: ConfigMessage): void;
  disconnect(reason: number, message: string): void;
  /** The server answered something other than 101 (the site's own answer); the socket is destroyed. */
  refused(status: number): void;
  /** The server's frames did not decode; the socket is destroyed. */
  decodeError?(err: unknown): void;
}

export interface TunnelPeer {
  readonly decoder: FrameDecoder;
  /** The Authorization value sent: a fresh credential for this connection, bound to its TLS exporter. */
  readonly authorization: string;
}

export function speakTunnel(
  socket: TLSSocket,
  options: { readonly path: string; readonly host: string; readonly key: UserKey; readonly offload: boolean },
  events: TunnelPeerEvents,
): TunnelPeer {
  const authorization = createAuthorization(options.key, connectionBinding(socket));
  socket.write(
    upgradeRequest({
      target: options.path,
      host: options.host,
      authorization,
      capabilities: { offload: options.offload },
    }),
  );
  const decoder = new FrameDecoder({
    onPacket: () => undefined,
    onControl: (payload) => {
      const message = decodeControl(payload);
      if (message.type === 'config') {
        if (message.offload) decoder.configure({ offload: true });
        events.config(message);
      } else if (message.type === 'echo-request') {
        if (socket.writable)
          socket.write(
            encodeControlFrame({ type: 'echo-reply', seq: message.seq, timestamp: message.timestamp }),
          );
      } else if (message.type === 'disconnect') {
        events.disconnect(message.reason, message.message);
      }
    },
  });
  const push = (data: Buffer): void => {
    try {
      decoder.push(data);
    } catch (err) {
      events.decodeError?.(err);
      socket.destroy();
    }
  };
  let head = Buffer.alloc(0);
  const onHead = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    const end = findHeadEnd(head);
    if (end < 0) return;
    socket.removeListener('data', onHead);
    const status = responseStatus(head.subarray(0, end));
    if (status !== 101) {
      events.refused(status);
      socket.destroy();
      return;
    }
    socket.on('data', push);
    if (head.length > end) push(head.subarray(end));
  };
  socket.on('data', onHead);
  return { decoder, authorization };
}
