// How every listener of the public face (the site on 443, the port-80 listener, and so every connection the
// front door declines) answers what Node's HTTP parser rejects or what runs out of time: exactly as Node's own
// http.Server does when nobody listens for 'clientError'. A bare status line and `Connection: close`, no
// Date, no body, then the socket is destroyed:
//
//   malformed request line, header, method, chunk   HTTP/1.1 400 Bad Request
//   request head over maxHeaderSize                 HTTP/1.1 431 Request Header Fields Too Large
//   chunk extensions too large                      HTTP/1.1 413 Payload Too Large
//   head or request not complete in time            HTTP/1.1 408 Request Timeout
//
// Those bytes are what every plain Node server in the world sends (Express, Koa, Next.js, a bare
// http.createServer), so they tell a scanner nothing. Any answer of our own would be a signature that every
// facade server shares: the port-80 listener's former `400 Bad Request` + `Connection: close` +
// `Content-Length: 0` is, word for word, what nmap's database calls a "T-Home Telekom Media Receiver". Fastify
// always installs a 'clientError' listener (its default writes JSON), which is why this function exists at all
// rather than Node's default; test/probe compares it with a server that has no listener.

import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';

/** Node's choice of status by error code (lib/_http_server.js, socketOnError); anything else is a 400. */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
};

const ANSWERS = new Map<number, Buffer>(
  [400, 408, 413, 431].map((status) => [
    status,
    Buffer.from(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n\r\n`, 'latin1'),
  ]),
);

/** The error Node's header/request timeout sweep raises (`ERR_HTTP_REQUEST_TIMEOUT`), for code that must raise it too. */
export function requestTimeoutError(): Error & { code: string } {
  return Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' });
}

/**
 * Answers a client error as Node's http.Server does by default. Install it as the 'clientError' listener of
 * every server of the public face (Fastify: `clientErrorHandler`).
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  // A TLS server routes handshake failures (its handshake timeout included) here too. Node's default for those
  // is to destroy the socket: there is no one to answer before the handshake, and an answer would wait in the
  // TLS layer and hold the connection.
  if (
    error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ||
    (socket as Socket & { secureConnecting?: boolean }).secureConnecting === true
  ) {
    socket.destroy();
    return;
  }
  // Node answers only when no response of its own has begun on this connection: a status line in the middle
  // of a response would corrupt it.
  const inFlight = (socket as Socket & { _httpMessage?: { _headerSent?: boolean } | null })._httpMessage;
  if (socket.writable && (inFlight === undefined || inFlight === null || inFlight._headerSent !== true)) {
    socket.write(ANSWERS.get(STATUS_BY_CODE[error.code ?? ''] ?? 400) as Buffer);
  }
  // Node passes the error to destroy(); without it no 'error' event follows, which no one would listen to. On
  // the wire it is the same: the answer was handed to the kernel (or to TLS) before the close.
  socket.destroy();
}
