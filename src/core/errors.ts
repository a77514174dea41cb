// Every error facade raises is declared here, once, with a stable code. Callers and tests match on
// `err.code`, never on the wording. Messages say what was expected, what arrived and what to check.
//
// Add a code to the section of its area; keep the message a template whose %s are filled in order.

import { format } from 'node:util';

export class FacadeError extends Error {
  readonly code: string;
  /** errno name (EPERM, ENOENT, ...) when the error came from a system call. */
  readonly errno?: string | undefined;
  /** Syscall or operation that failed, when there is one. */
  readonly syscall?: string | undefined;

  constructor(
    code: string,
    message: string,
    options?: { cause?: unknown; errno?: string; syscall?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FacadeError';
    this.code = code;
    this.errno = options?.errno;
    this.syscall = options?.syscall;
  }
}

interface ErrorSpec {
  readonly code: string;
  readonly message: string;
}

function define(code: string, message: string): ErrorSpec {
  return { code, message };
}

export const Errors = {
  // --- config ---------------------------------------------------------------------------------
  CONFIG_INVALID: define('FACADE_ERR_CONFIG_INVALID', 'config key "%s": %s'),
  CONFIG_READ: define('FACADE_ERR_CONFIG_READ', 'cannot read config file %s: %s'),
  CONFIG_PARSE: define('FACADE_ERR_CONFIG_PARSE', 'config file %s is not valid JSON: %s'),
  CLI_USAGE: define('FACADE_ERR_CLI_USAGE', '%s (see `facade %s --help`)'),

  // --- TUN device and interface configuration (src/net) ---------------------------------------
  TUN_OPEN: define('FACADE_ERR_TUN_OPEN', 'cannot open TUN device "%s": %s'),
  TUN_CLOSED: define('FACADE_ERR_TUN_CLOSED', 'TUN device "%s" is closed'),
  TUN_IO: define('FACADE_ERR_TUN_IO', 'TUN device "%s": %s failed: %s'),
  TUN_ADDON: define(
    'FACADE_ERR_TUN_ADDON',
    'the native TUN addon could not be loaded (%s): run `npm ci` to build it',
  ),
  IFCONFIG: define('FACADE_ERR_IFCONFIG', 'configuring interface "%s" failed: `%s` said: %s'),
  PACKET_INVALID: define('FACADE_ERR_PACKET_INVALID', 'malformed IP packet: %s'),
  ADDRESS_INVALID: define('FACADE_ERR_ADDRESS_INVALID', 'invalid IP address or prefix "%s": %s'),

  // --- framing and protocol (src/tunnel) ------------------------------------------------------
  FRAME_VERSION: define('FACADE_ERR_FRAME_VERSION', 'unsupported protocol version %s (this build speaks %s)'),
  FRAME_TYPE: define('FACADE_ERR_FRAME_TYPE', 'unknown frame type %s'),
  FRAME_TOO_LARGE: define(
    'FACADE_ERR_FRAME_TOO_LARGE',
    'frame payload of %s bytes exceeds the limit of %s bytes',
  ),
  FRAME_INVALID: define('FACADE_ERR_FRAME_INVALID', 'malformed frame: %s'),
  CONTROL_INVALID: define('FACADE_ERR_CONTROL_INVALID', 'malformed control message: %s'),
  FRAME_OFFLOAD: define(
    'FACADE_ERR_FRAME_OFFLOAD',
    'DATA_OFFLOAD frame of %s bytes, but offload was not negotiated for this session (check the Facade-Capabilities request header and the CONFIG offload field)',
  ),

  // --- sessions, pool, routing ------------------------------------------------------------------
  POOL_EXHAUSTED: define('FACADE_ERR_POOL_EXHAUSTED', 'address pool %s is exhausted (%s addresses in use)'),
  POOL_INVALID: define('FACADE_ERR_POOL_INVALID', 'address pool "%s": %s'),
  SESSION_TIMEOUT: define('FACADE_ERR_SESSION_TIMEOUT', 'peer sent nothing for %s ms (dead-peer detection)'),

  // --- server: auth, users, upgrade ------------------------------------------------------------
  AUTH_REJECTED: define('FACADE_ERR_AUTH_REJECTED', 'authentication rejected for user "%s"'),
  USERS_FILE: define('FACADE_ERR_USERS_FILE', 'users file %s: %s'),
  USER_EXISTS: define('FACADE_ERR_USER_EXISTS', 'user "%s" already exists in %s'),
  USER_UNKNOWN: define('FACADE_ERR_USER_UNKNOWN', 'no user "%s" in %s'),
  USER_NAME: define('FACADE_ERR_USER_NAME', 'user name "%s" is not allowed: %s'),
  SITE_DIR: define('FACADE_ERR_SITE_DIR', 'site folder %s cannot be served: %s (check --site)'),
  SITE_UPSTREAM: define(
    'FACADE_ERR_SITE_UPSTREAM',
    'upstream "%s" is not usable: %s (expected http://127.0.0.1:PORT)',
  ),
  USER_PASSWORD: define('FACADE_ERR_USER_PASSWORD', 'password for user "%s" is not allowed: %s'),

  // --- certificates and ACME ---------------------------------------------------------------
  CERT_LOAD: define('FACADE_ERR_CERT_LOAD', 'cannot load certificate or key %s: %s'),
  ACME_ORDER: define('FACADE_ERR_ACME_ORDER', 'ACME certificate order for %s failed: %s'),
  STATE_DIR: define('FACADE_ERR_STATE_DIR', 'state directory %s: %s'),
  PIN_INVALID: define(
    'FACADE_ERR_PIN_INVALID',
    'certificate pin "%s" is not valid: %s (expected sha256: and 64 hex digits, colons allowed)',
  ),

  // --- client -----------------------------------------------------------------------------------
  CONNECT_REFUSED: define('FACADE_ERR_CONNECT_REFUSED', 'server %s did not accept the tunnel: %s'),
  SERVER_DISCONNECT: define('FACADE_ERR_SERVER_DISCONNECT', 'server closed the tunnel: %s'),
  PIN_MISMATCH: define(
    'FACADE_ERR_PIN_MISMATCH',
    'server certificate fingerprint %s does not match the pinned %s',
  ),
} as const;

export type ErrorName = keyof typeof Errors;

/** Builds a coded error from the table: `facadeError('FRAME_TOO_LARGE', [len, MAX])`. */
export function facadeError(
  name: ErrorName,
  args: readonly unknown[] = [],
  options?: { cause?: unknown; errno?: string; syscall?: string },
): FacadeError {
  const spec = Errors[name];
  return new FacadeError(spec.code, format(spec.message, ...args), options);
}

export function isFacadeError(err: unknown, name?: ErrorName): err is FacadeError {
  return err instanceof FacadeError && (name === undefined || err.code === Errors[name].code);
}
