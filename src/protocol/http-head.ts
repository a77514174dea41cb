// A strict, minimal parser for the head of the first HTTP/1.1 request on a connection. The front door uses
// it only to decide "is this a tunnel request?"; everything it declines goes, byte for byte, to Node's own
// HTTP parser. So this parser never answers anything itself and never needs to be lenient.

export interface RequestHead {
  readonly method: string;
  readonly target: string;
  readonly version: string;
  /** Header names lower-cased; a repeated header keeps every value joined with ", " (RFC 9110 5.3). */
  readonly headers: ReadonlyMap<string, string>;
  /** Bytes of the head including the terminating CRLFCRLF. */
  readonly headLength: number;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Index just past the end of the head, or -1 while it is incomplete. */
export function findHeadEnd(buffer: Buffer): number {
  const at = buffer.indexOf(HEAD_END);
  return at === -1 ? -1 : at + HEAD_END.length;
}

/** Parses a complete head; null when it is not a well-formed HTTP/1.x request head. */
export function parseRequestHead(buffer: Buffer, headLength: number): RequestHead | null {
  const text = buffer.toString('latin1', 0, headLength - HEAD_END.length);
  const lines = text.split('\r\n');
  const requestLine = lines[0] ?? '';
  const parts = requestLine.split(' ');
  if (parts.length !== 3) return null;
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method) || !target.startsWith('/') || !/^HTTP\/1\.[01]$/.test(version)) return null;
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const colon = line.indexOf(':');
    if (colon <= 0) return null;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return null;
    const value = line.slice(colon + 1).trim();
    const key = name.toLowerCase();
    const previous = headers.get(key);
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  return { method, target, version, headers, headLength };
}
