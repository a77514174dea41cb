// HTTP/2 probes: one request on a fresh h2 connection (ALPN h2), and what came back, in a form two servers'
// answers can be compared in (Date masked). A request the server refuses at the stream level (RST_STREAM)
// is an answer too: its error code is recorded.

import { type ClientHttp2Session, connect, type OutgoingHttpHeaders } from 'node:http2';
import type { TLSSocket } from 'node:tls';

export interface H2Probe {
  readonly name: string;
  readonly headers: OutgoingHttpHeaders;
  /** Bytes sent on the stream before it is ended (none: ended at once, except for CONNECT). */
  readonly body?: Buffer | string;
  /**
   * Headers made for the connection the probe goes on (a credential bound to its TLS exporter), merged
   * over `headers`.
   */
  readonly headersFor?: (socket: TLSSocket) => OutgoingHttpHeaders;
}

export interface H2Answer {
  readonly status: number | null;
  readonly headers: Record<string, string>;
  readonly body: string;
  /** The stream's RST_STREAM code, or null when it ended normally. */
  readonly resetCode: number | null;
  /** The server's SETTINGS, as a client sees them. */
  readonly settings: Record<string, unknown>;
}

export async function sendH2Probe(port: number, probe: H2Probe): Promise<H2Answer> {
  const session: ClientHttp2Session = connect(`https://127.0.0.1:${port}`, {
    rejectUnauthorized: false,
    servername: 'localhost',
  });
  session.on('error', () => undefined);
  try {
    const settings = await new Promise<Record<string, unknown>>((resolve, reject) => {
      // customSettings is the client's own bookkeeping (Node 20 fills it from the second session of a
      // process on, whatever the server sent): not part of what the server said.
      session.once('remoteSettings', ({ customSettings: _, ...s }: Record<string, unknown>) => resolve(s));
      session.once('error', reject);
    });
    const extra = probe.headersFor?.(session.socket as TLSSocket) ?? {};
    const isConnect = probe.headers[':method'] === 'CONNECT';
    const stream = session.request({ ...probe.headers, ...extra }, { endStream: false });
    stream.on('error', () => undefined);
    if (probe.body !== undefined) stream.write(probe.body);
    // A CONNECT stream stays open after a 200 (it would be the tunnel): ended a moment after any answer.
    if (!isConnect) stream.end();
    const chunks: Buffer[] = [];
    let status: number | null = null;
    let headers: Record<string, string> = {};
    stream.on('response', (h) => {
      status = Number(h[':status']);
      headers = Object.fromEntries(
        Object.entries(h)
          .filter(([name]) => name !== ':status' && name !== 'date')
          .map(([name, value]) => [name, String(value)]),
      );
      if (isConnect) setTimeout(() => stream.end(), 200);
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    await new Promise<void>((resolve) => {
      stream.once('close', () => resolve());
      setTimeout(() => {
        stream.close();
        resolve();
      }, 3_000);
    });
    return {
      status,
      headers,
      body: Buffer.concat(chunks).toString('latin1'),
      resetCode: stream.rstCode === 0 || stream.rstCode === undefined ? null : stream.rstCode,
      settings,
    };
  } finally {
    session.destroy();
  }
}
