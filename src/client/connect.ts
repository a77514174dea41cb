// Opens one tunnel connection: TCP (+TLS unless --plaintext), the upgrade request, the 101 answer.
// The server certificate is verified by default (system CAs plus --ca), or pinned by fingerprint. The
// credential is made for this connection: signed over its TLS exporter, with a fresh time and nonce.

import { lookup } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { checkServerIdentity, rootCertificates, type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { ClientConfig } from '../config/schema.js';
import { facadeError } from '../core/errors.js';
import { AUTH_WINDOW_SECONDS, HANDSHAKE_TIMEOUT_MS, MAX_REQUEST_HEAD_BYTES } from '../core/limits.js';
import { connectionBinding, createAuthorization, type UserKey } from '../protocol/credentials.js';
import { responseStatus, upgradeRequest } from '../protocol/handshake.js';
import { findHeadEnd } from '../protocol/http-head.js';
import { derFingerprint } from '../protocol/pin.js';

export interface TunnelConnection {
  readonly socket: Socket;
  /** Bytes that followed the 101 head: the start of the frame stream (a copy the caller owns). */
  readonly rest: Buffer;
  /**
   * Where the socket's reads go from now on. The socket reads into one reused buffer (`onread`) instead of
   * a fresh Buffer per read, so there are no 'data' events: each read is a view valid during the call.
   */
  onRead(receiver: (chunk: Buffer) => void): void;
  /** The address actually connected to (kept out of the tunnel in full-tunnel mode). */
  readonly serverAddress: string;
}

/** A failure that another attempt cannot fix (wrong credentials, pin mismatch): the client stops. */
export class PermanentConnectError extends Error {}

/**
 * The request target of the tunnel in the client's URL. It is also the realm the user's key is derived for
 * (credentials.ts): the server's secret tunnel path, which the client has only because it dials it.
 */
export function tunnelTarget(url: URL): string {
  return `${url.pathname}${url.search}`;
}

export async function connectTunnel(config: ClientConfig, key: UserKey): Promise<TunnelConnection> {
  const { url } = config;
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const { address } = await lookup(host);
  const reads = new Reads();
  const socket = config.plaintext
    ? await openPlain(address, port, reads)
    : await openTls(config, address, port, host, reads);
  try {
    // Without TLS (--plaintext) there is no exporter: the zero binding; time and nonce still hold.
    const binding = connectionBinding(socket);
    socket.write(
      upgradeRequest({
        target: tunnelTarget(url),
        host: url.host,
        authorization: createAuthorization(key, binding),
        capabilities: { offload: config.offload },
      }),
    );
    const { status, rest } = await readResponseHead(socket, reads);
    if (status !== 101) {
      throw new PermanentConnectError(
        facadeError('CONNECT_REFUSED', [
          url.origin,
          `it answered HTTP ${status} like a website: the tunnel path, user or password is wrong, or this machine's clock is more than ${AUTH_WINDOW_SECONDS / 60} minutes off (or the server runs a newer facade: upgrade this client)`,
        ]).message,
      );
    }
    return { socket, rest, serverAddress: address, onRead: (receiver) => reads.to(receiver) };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

/**
 * The one read buffer of a tunnel socket and where its reads go: the response-head reader first, the
 * session after. A fresh Buffer per read is external memory V8 must collect; at full speed that alone
 * drives major collections.
 */
class Reads {
  readonly buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  #receiver: (chunk: Buffer) => void = () => undefined;

  to(receiver: (chunk: Buffer) => void): void {
    this.#receiver = receiver;
  }

  readonly onread = {
    buffer: this.buffer,
    callback: (bytes: number, buffer: Uint8Array): boolean => {
      this.#receiver((buffer as Buffer).subarray(0, bytes));
      return true;
    },
  };
}

/** One socket read at most: a TLS record is 16 KiB, plain TCP reads come in up to 64 KiB. */
const READ_BUFFER_BYTES = 64 * 1024;

function openPlain(address: string, port: number, reads: Reads): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: address, port, onread: reads.onread });
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy(new Error('connect timed out')));
  });
}

function openTls(
  config: ClientConfig,
  address: string,
  port: number,
  servername: string,
  reads: Reads,
): Promise<TLSSocket> {
  // The config holds the pin in parsePin's canonical form, the form certificateFingerprint returns.
  const pin = config.pin;
  const ca = config.ca === undefined ? undefined : [...rootCertificates, readFileSync(config.ca, 'utf8')];
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: address,
      port,
      // Node reads TLS plaintext into this buffer too (tls.connect supports onread since 15.1).
      ...({ onread: reads.onread } as object),
      servername: /^[\d.]+$|:/.test(servername) ? undefined : servername,
      ALPNProtocols: ['http/1.1'],
      // A pinned certificate is trusted by its fingerprint alone (self-signed, IP-only servers).
      rejectUnauthorized: pin === undefined,
      ...(ca === undefined ? {} : { ca }),
      checkServerIdentity: (hostname, cert) => {
        if (pin !== undefined) return undefined;
        return checkServerIdentity(hostname, cert);
      },
    });
    socket.once('secureConnect', () => {
      socket.removeListener('error', reject);
      socket.setTimeout(0);
      if (pin !== undefined) {
        const actual = derFingerprint(socket.getPeerCertificate().raw);
        if (actual !== pin) {
          socket.destroy();
          reject(new PermanentConnectError(facadeError('PIN_MISMATCH', [actual, pin]).message));
          return;
        }
      }
      resolve(socket);
    });
    socket.once('error', reject);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

function readResponseHead(socket: Socket, reads: Reads): Promise<{ status: number; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('no answer to the tunnel request')), HANDSHAKE_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      reads.to(() => undefined);
      socket.removeListener('error', fail);
      socket.removeListener('end', onEnd);
    };
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onEnd = (): void => fail(new Error('the server closed the connection during the handshake'));
    const onData = (chunk: Buffer): void => {
      // concat copies: the chunk is a view of the reused read buffer.
      buffered = Buffer.concat([buffered, chunk]);
      const end = findHeadEnd(buffered);
      if (end === -1) {
        if (buffered.length > MAX_REQUEST_HEAD_BYTES)
          fail(new Error('oversized answer to the tunnel request'));
        return;
      }
      cleanup();
      socket.pause();
      resolve({ status: responseStatus(buffered), rest: buffered.subarray(end) });
    };
    reads.to(onData);
    socket.once('error', fail);
    socket.once('end', onEnd);
  });
}
