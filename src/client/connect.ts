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
 * The server's name does not exist (NXDOMAIN, not a DNS outage). The client stops when the name never
 * resolved for it (a typo) and keeps retrying when it did before (a DNS change in progress).
 */
export class NameNotFoundError extends Error {}

/** A failure to reach the server, said plainly; the client retries. */
export class UnreachableError extends Error {}

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
  const address = await resolve(host);
  const reads = new Reads();
  const where = `${url.hostname}:${port}`;
  const socket = await (config.plaintext
    ? openPlain(address, port, reads)
    : openTls(config, address, port, host, reads)
  ).catch((err: unknown) => {
    throw err instanceof PermanentConnectError ? err : unreachable(err, where);
  });
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

/** The address to dial; a name that does not exist is NameNotFoundError, a DNS failure UnreachableError. */
async function resolve(host: string): Promise<string> {
  try {
    return (await lookup(host)).address;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'EAI_NONAME' || code === 'ENODATA')
      throw new NameNotFoundError(facadeError('HOST_UNRESOLVED', [host, `${code}: no such name`]).message);
    throw new UnreachableError(
      `the server name "${host}" could not be resolved now (${code ?? String(err)}: DNS did not answer)`,
    );
  }
}

/** Why the server could not be reached, in words; the errno stays in the text for searching. */
function unreachable(err: unknown, where: string): UnreachableError {
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    code === 'ECONNREFUSED'
      ? 'refused the connection: nothing listens on that port, or a firewall rejects it'
      : code === 'EHOSTUNREACH' || code === 'ENETUNREACH'
        ? 'is unreachable: no route to it from here'
        : code === 'ETIMEDOUT'
          ? 'did not answer'
          : code === 'ECONNRESET' || code === 'EPIPE'
            ? 'reset the connection during the handshake'
            : (err instanceof Error ? err.message : String(err)).replace(
                /^Client network socket disconnected.*/,
                'closed the connection during the TLS handshake',
              );
  return new UnreachableError(`server ${where} ${why}${code === undefined ? '' : ` (${code})`}`);
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
      // Verified below, on secureConnect and before a byte is sent: a certificate that is not trusted then
      // stops the client with its fingerprint, which Node's own refusal would not show. A pinned
      // certificate is trusted by its fingerprint alone (self-signed, IP-only servers).
      rejectUnauthorized: false,
      ...(ca === undefined ? {} : { ca }),
      checkServerIdentity: (hostname, cert) => {
        if (pin !== undefined) return undefined;
        return checkServerIdentity(hostname, cert);
      },
    });
    socket.once('secureConnect', () => {
      socket.removeListener('error', reject);
      socket.setTimeout(0);
      const actual = derFingerprint(socket.getPeerCertificate().raw);
      const refuse = (message: string): void => {
        socket.destroy();
        reject(new PermanentConnectError(message));
      };
      if (pin !== undefined) {
        if (actual !== pin) return refuse(facadeError('PIN_MISMATCH', [actual, pin]).message);
      } else if (!socket.authorized) {
        const where = `${/:/.test(servername) ? `[${servername}]` : servername}:${port}`;
        return refuse(
          facadeError('CERT_UNTRUSTED', [
            where,
            untrustedBecause(String(socket.authorizationError), servername),
            actual,
            actual,
          ]).message,
        );
      }
      resolve(socket);
    });
    socket.once('error', reject);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy(new Error('TLS handshake timed out')));
  });
}

/** OpenSSL's verify codes (and Node's name check), as a person would say them. */
function untrustedBecause(code: string, servername: string): string {
  switch (code) {
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return 'it is self-signed';
    case 'SELF_SIGNED_CERT_IN_CHAIN':
      return 'its chain ends in a CA this machine does not know';
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
      return 'no CA this machine trusts issued it (for a private CA: --ca FILE)';
    case 'CERT_HAS_EXPIRED':
      return 'it has expired';
    case 'CERT_NOT_YET_VALID':
      return "it is not valid yet: check this machine's clock";
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `it is not made out to ${servername}`;
    default:
      return code;
  }
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
