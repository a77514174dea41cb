// Raw probes over TLS (port 443) or plain TCP (port 80): open a connection, send exact bytes (in steps, with
// pauses), and record everything the server writes and whether and when it closes. The probe suite compares
// these records between facade and a plain site server; nothing here interprets HTTP beyond masking
// per-request header values.

import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';

export interface ProbeStep {
  /**
   * Bytes to send; an empty string sends nothing (useful to only wait). A function makes them for the
   * connection (a tunnel credential signed over its TLS exporter; TLS probes only).
   */
  readonly data: string | Buffer | ((socket: TLSSocket) => string | Buffer);
  /** Pause before this step, in ms. */
  readonly delayMs?: number;
}

export interface Probe {
  readonly name: string;
  readonly steps: readonly ProbeStep[];
  /** ALPN offer; default ['http/1.1'] as curl --http1.1 or a scanner would. */
  readonly alpn?: readonly string[];
  /**
   * How long the connection may stay silent after the last step before we stop waiting and record it as
   * still open. Default 1500 ms.
   */
  readonly idleMs?: number;
}

export interface ProbeResult {
  readonly name: string;
  readonly alpn: string | false;
  /** Everything the server sent, in order, as latin1 (so arbitrary bytes survive). */
  readonly response: string;
  /** 'server' if the server closed (FIN or reset) before our idle timeout, 'open' otherwise. */
  readonly closedBy: 'server' | 'open';
  /** ms from the last step sent to the close, when the server closed. */
  readonly closeAfterMs: number | null;
}

const DEFAULT_IDLE_MS = 1500;

/**
 * Sends one probe to 127.0.0.1:port over TLS (any certificate accepted), or over plain TCP with
 * `{ tls: false }` (port 80), and records the answer.
 */
export function sendProbe(port: number, probe: Probe, options: { tls?: boolean } = {}): Promise<ProbeResult> {
  const overTls = options.tls ?? true;
  return new Promise((resolve, reject) => {
    const socket = overTls
      ? tls.connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          rejectUnauthorized: false,
          ALPNProtocols: [...(probe.alpn ?? ['http/1.1'])],
        })
      : net.connect({ host: '127.0.0.1', port });
    let connected = false;
    const chunks: Buffer[] = [];
    let lastSentAt = 0;
    let idleTimer: NodeJS.Timeout | undefined;
    let settled = false;

    const finish = (closedBy: 'server' | 'open'): void => {
      if (settled) return;
      settled = true;
      if (idleTimer !== undefined) clearTimeout(idleTimer);
      resolve({
        name: probe.name,
        alpn: (socket as Partial<TLSSocket>).alpnProtocol ?? false,
        response: Buffer.concat(chunks).toString('latin1'),
        closedBy,
        closeAfterMs: closedBy === 'server' ? Date.now() - lastSentAt : null,
      });
      socket.destroy();
    };
    const armIdle = (): void => {
      if (idleTimer !== undefined) clearTimeout(idleTimer);
      idleTimer = setTimeout(() => finish('open'), probe.idleMs ?? DEFAULT_IDLE_MS);
    };

    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (lastSentAt !== 0) armIdle();
    });
    socket.on('close', () => finish('server'));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the answer is a way of closing; before the connection (or handshake) it is a failed probe.
      if (!connected && chunks.length === 0 && lastSentAt === 0) {
        if (!settled) {
          settled = true;
          reject(err);
        }
        return;
      }
      finish('server');
    });
    socket.once(overTls ? 'secureConnect' : 'connect', async () => {
      connected = true;
      for (const step of probe.steps) {
        if (step.delayMs) await new Promise((r) => setTimeout(r, step.delayMs));
        if (settled || socket.destroyed) return;
        const data = typeof step.data === 'function' ? step.data(socket as TLSSocket) : step.data;
        if (data.length > 0) socket.write(data);
        lastSentAt = Date.now();
        armIdle();
      }
      if (probe.steps.length === 0) {
        lastSentAt = Date.now();
        armIdle();
      }
    });
  });
}

/** Header values that differ per request (or per second) on any server; masked before comparing. */
const PER_REQUEST_HEADERS = /^(date):[^\r\n]*$/gim;

/** The response with per-request values masked, for comparing two servers' answers. */
export function maskResponse(response: string): string {
  return response.replace(PER_REQUEST_HEADERS, '$1: <masked>');
}

/**
 * A comparable summary: masked bytes, whether the server closed, and the close time rounded to a coarse
 * bucket (immediate, or after a server-side timeout), since exact timings are noise.
 */
export function comparable(result: ProbeResult): {
  alpn: string | false;
  response: string;
  closedBy: 'server' | 'open';
  closeTiming: 'immediate' | 'delayed' | null;
} {
  return {
    alpn: result.alpn,
    response: maskResponse(result.response),
    closedBy: result.closedBy,
    closeTiming: result.closeAfterMs === null ? null : result.closeAfterMs < 1000 ? 'immediate' : 'delayed',
  };
}
