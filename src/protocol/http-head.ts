// A strict, minimal parser for the head of the first HTTP/1.1 request on a connection. The front door uses
// it only to decide "is this a tunnel request?"; everything it declines goes, byte for byte, to Node's own
// HTTP parser. So this parser never answers anything itself and never needs to be lenient: every head it
// accepts is one Node's parser (llhttp, strict) reads the same way, byte for byte (test/fuzz checks this).

import { MAX_REQUEST_HEAD_BYTES } from '../core/limits.js';

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
/** An origin-form target as llhttp takes it: visible ASCII only (no control byte, space or obs-text). */
const TARGET = /^\/[\x21-\x7e]*$/;
/** A field value as llhttp takes it: HTAB, SP, visible ASCII, obs-text; no other control byte (CR, LF, NUL). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * A Content-Length value as llhttp takes it: digits, SP or HTAB before them, only SP after (it refuses a
 * trailing HTAB, which trimming would hide: "Content-Length: 0<HTAB>" must not read as "no body" here).
 */
const CONTENT_LENGTH = /^[ \t]*[0-9]+ *$/;

/** Index just past the end of the head, or -1 while it is incomplete. */
export function findHeadEnd(buffer: Buffer): number {
  const at = buffer.indexOf(HEAD_END);
  return at === -1 ? -1 : at + HEAD_END.length;
}

/**
 * Parses a complete head; null when it is not a well-formed HTTP/1.x request head, or one Node's parser
 * would refuse or read otherwise (longer than its 16 KiB limit, control bytes in a value or the target).
 */
export function parseRequestHead(buffer: Buffer, headLength: number): RequestHead | null {
  if (headLength > MAX_REQUEST_HEAD_BYTES) return null;
  const text = buffer.toString('latin1', 0, headLength - HEAD_END.length);
  const lines = text.split('\r\n');
  const requestLine = lines[0] ?? '';
  const parts = requestLine.split(' ');
  if (parts.length !== 3) return null;
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method) || !TARGET.test(target) || !/^HTTP\/1\.[01]$/.test(version)) return null;
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const colon = line.indexOf(':');
    if (colon <= 0) return null;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return null;
    const raw = line.slice(colon + 1);
    if (!FIELD_VALUE.test(raw)) return null;
    // Only SP and HTAB are optional whitespace (RFC 9110 5.6.3); trim() would also eat NBSP (0xa0), which
    // Node keeps, so "Content-Length: 0<NBSP>" would mean "no body" here and be refused there.
    const key = name.toLowerCase();
    if (key === 'content-length' && !CONTENT_LENGTH.test(raw)) return null;
    const value = trimOws(raw);
    const previous = headers.get(key);
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  return { method, target, version, headers, headLength };
}

/** Strips leading and trailing SP and HTAB (a loop: a regex here would backtrack over long runs). */
function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isOws(text.charCodeAt(start))) start++;
  while (end > start && isOws(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}
