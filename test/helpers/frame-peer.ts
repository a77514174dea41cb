// The far end of a tunnel session for engine tests: a loopback socket that records every frame the
// engine sends (decoded) and sends frames of its own, with bounded waits on what arrives.

import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { type ControlMessage, decodeControl, encodeControlFrame } from '../../src/protocol/control.js';
import { FrameDecoder } from '../../src/protocol/decoder.js';
import { encodeFrame, encodeOffloadFrame, FrameType, type OffloadHeader } from '../../src/protocol/frame.js';
import { WAIT_MS } from './wait.js';

/** Two connected loopback TCP sockets: [the server's end, the client's end]. */
export async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const accepted = once(server, 'connection');
  const client = connect(address.port, '127.0.0.1');
  const [serverSide] = (await accepted) as [Socket];
  await once(client, 'connect').catch(() => undefined);
  server.close();
  return [serverSide, client];
}

export interface ReceivedPacket {
  readonly packet: Buffer;
  /** A copy of the DATA_OFFLOAD header, or null for a DATA frame. */
  readonly offload: OffloadHeader | null;
}

export class FramePeer {
  readonly controls: ControlMessage[] = [];
  readonly packets: ReceivedPacket[] = [];
  ended = false;
  private readonly decoder: FrameDecoder;
  private readonly checks = new Set<() => void>();

  constructor(readonly socket: Socket) {
    this.decoder = new FrameDecoder({
      onPacket: (packet, offload) => {
        this.packets.push({ packet: Buffer.from(packet), offload: offload === null ? null : { ...offload } });
      },
      onControl: (payload) => {
        const message = decodeControl(payload);
        // As a client would: DATA_OFFLOAD may follow a CONFIG that turns offload on.
        if (message.type === 'config' && message.offload) this.decoder.configure({ offload: true });
        this.controls.push(message);
      },
    });
    socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk);
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', () => undefined); // the engine may reset it; 'close' follows
  }

  sendPacket(packet: Buffer): void {
    this.socket.write(encodeFrame(FrameType.DATA, packet));
  }

  sendControl(message: ControlMessage): void {
    this.socket.write(encodeControlFrame(message));
  }

  sendOffloadPacket(header: OffloadHeader, packet: Buffer): void {
    this.socket.write(encodeOffloadFrame(header, packet));
  }

  /** The first control message of the given type, once it has arrived. */
  async control<T extends ControlMessage['type']>(type: T): Promise<Extract<ControlMessage, { type: T }>> {
    const find = () => this.controls.find((m) => m.type === type) as Extract<ControlMessage, { type: T }>;
    await this.until(() => find() !== undefined, `a ${type} message`);
    return find();
  }

  /** The n-th packet (1-based), once it has arrived. */
  async packet(n = 1): Promise<ReceivedPacket> {
    await this.until(() => this.packets.length >= n, `packet ${n}`);
    return this.packets[n - 1] as ReceivedPacket;
  }

  /** Resolves when `condition` holds, checked on every frame and on close; rejects after WAIT_MS. */
  until(condition: () => boolean, what: string): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        this.checks.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.checks.delete(check);
        reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`));
      }, WAIT_MS);
      this.checks.add(check);
    });
  }

  private notify(): void {
    for (const check of [...this.checks]) check();
  }
}
