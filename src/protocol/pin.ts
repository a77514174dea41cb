// Certificate pins: how a client names the one server certificate it trusts without a CA.
//
// Format: 'sha256:' + the SHA-256 of the leaf's DER encoding as 64 lower-case hex digits, no colons. That is
// `openssl x509 -fingerprint -sha256` without the colons, lower-cased; parsePin() also takes the
// colon-separated, upper-case form that openssl and browsers print.

import { createHash } from 'node:crypto';
import { facadeError } from '../core/errors.js';

const PIN_PREFIX = 'sha256:';

/** 'sha256:' + lower-case hex of the SHA-256 of a certificate's DER bytes. */
export function derFingerprint(der: Uint8Array): string {
  return `${PIN_PREFIX}${createHash('sha256').update(der).digest('hex')}`;
}

/**
 * The canonical form of a `--pin` value ('sha256:' + 64 lower-case hex digits). Accepts upper case and
 * colon-separated byte pairs (`SHA256:AB:CD:...`, as openssl prints it). FACADE_ERR_PIN_INVALID otherwise.
 */
export function parsePin(text: string): string {
  const trimmed = text.trim();
  if (!trimmed.toLowerCase().startsWith(PIN_PREFIX)) {
    const algorithm = trimmed.includes(':') ? trimmed.slice(0, trimmed.indexOf(':')) : '(none)';
    throw facadeError('PIN_INVALID', [
      text,
      `unsupported hash algorithm ${algorithm}, only sha256 is accepted`,
    ]);
  }
  let hex = trimmed.slice(PIN_PREFIX.length);
  if (hex.includes(':')) {
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2})*$/i.test(hex)) {
      throw facadeError('PIN_INVALID', [text, 'colons must separate pairs of hex digits']);
    }
    hex = hex.replaceAll(':', '');
  }
  if (!/^[0-9a-f]*$/i.test(hex))
    throw facadeError('PIN_INVALID', [text, 'it contains characters that are not hex digits']);
  if (hex.length !== 64) throw facadeError('PIN_INVALID', [text, `it has ${hex.length} hex digits, not 64`]);
  return `${PIN_PREFIX}${hex.toLowerCase()}`;
}
