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

/**
 * What an error does where it surfaces; every code has exactly one, so the data path and the commands
 * act on the table instead of guessing:
 * - exit: the command stops and `facade` exits with `exitCode` (2: fix the command line or config; 1:
 *   the machine or a peer failed it). A start-up failure has closed everything it opened by then.
 * - disconnect: the one session it arose in ends with DISCONNECT `reason` (a DisconnectReason name in
 *   protocol/control.ts). PROTOCOL_ERROR blames the peer; INTERNAL is our own failure.
 * - drop: the packet in hand is dropped and counted; nothing else changes.
 */
export type Consequence =
  | { readonly kind: 'exit'; readonly exitCode: number }
  | { readonly kind: 'disconnect'; readonly reason: 'PROTOCOL_ERROR' | 'INTERNAL' | 'POOL_EXHAUSTED' }
  | { readonly kind: 'drop' };

/** Exit codes: the user can fix it in the command or config (2), or something failed at run time (1). */
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

const EXIT_USAGE_C: Consequence = { kind: 'exit', exitCode: EXIT_USAGE };
const EXIT_FAILURE_C: Consequence = { kind: 'exit', exitCode: EXIT_FAILURE };
const PEER_BROKE_PROTOCOL: Consequence = { kind: 'disconnect', reason: 'PROTOCOL_ERROR' };
const DROP: Consequence = { kind: 'drop' };

interface ErrorSpec {
  readonly code: string;
  readonly message: string;
  readonly consequence: Consequence;
}

function define(code: string, message: string, consequence: Consequence): ErrorSpec {
  return { code, message, consequence };
}

export const Errors = {
  // --- config ---------------------------------------------------------------------------------
  CONFIG_INVALID: define('FACADE_ERR_CONFIG_INVALID', 'config key "%s": %s', EXIT_USAGE_C),
  CONFIG_READ: define('FACADE_ERR_CONFIG_READ', 'cannot read config file %s: %s', EXIT_USAGE_C),
  CONFIG_PARSE: define('FACADE_ERR_CONFIG_PARSE', 'config file %s is not valid JSON: %s', EXIT_USAGE_C),
  CLI_USAGE: define('FACADE_ERR_CLI_USAGE', '%s (see `facade %s --help`)', EXIT_USAGE_C),
  CONFIG_WRITE: define('FACADE_ERR_CONFIG_WRITE', 'cannot write config file %s: %s', EXIT_FAILURE_C),

  // --- TUN device and interface configuration (src/net) ---------------------------------------
  TUN_OPEN: define('FACADE_ERR_TUN_OPEN', 'cannot open TUN device "%s": %s', EXIT_FAILURE_C),
  TUN_CLOSED: define('FACADE_ERR_TUN_CLOSED', 'TUN device "%s" is closed', DROP),
  /** The device failed under a running engine (deleted, its namespace gone): nothing can pass any more. */
  TUN_IO: define('FACADE_ERR_TUN_IO', 'TUN device "%s": %s failed: %s', EXIT_FAILURE_C),
  TUN_ADDON: define(
    'FACADE_ERR_TUN_ADDON',
    'the native TUN addon could not be loaded (%s): run `npm ci` to build it',
    EXIT_FAILURE_C,
  ),
  IFCONFIG: define('FACADE_ERR_IFCONFIG', 'configuring interface "%s" failed: `%s` said: %s', EXIT_FAILURE_C),
  ADDRESS_INVALID: define(
    'FACADE_ERR_ADDRESS_INVALID',
    'invalid IP address or prefix "%s": %s',
    EXIT_USAGE_C,
  ),

  // --- framing and protocol (src/protocol): the peer broke the protocol -----------------------
  FRAME_VERSION: define(
    'FACADE_ERR_FRAME_VERSION',
    'unsupported protocol version %s (this build speaks %s)',
    PEER_BROKE_PROTOCOL,
  ),
  FRAME_TYPE: define('FACADE_ERR_FRAME_TYPE', 'unknown frame type %s', PEER_BROKE_PROTOCOL),
  FRAME_TOO_LARGE: define(
    'FACADE_ERR_FRAME_TOO_LARGE',
    'frame payload of %s bytes exceeds the limit of %s bytes',
    PEER_BROKE_PROTOCOL,
  ),
  FRAME_INVALID: define('FACADE_ERR_FRAME_INVALID', 'malformed frame: %s', PEER_BROKE_PROTOCOL),
  CONTROL_INVALID: define('FACADE_ERR_CONTROL_INVALID', 'malformed control message: %s', PEER_BROKE_PROTOCOL),
  WEBSOCKET_INVALID: define('FACADE_ERR_WEBSOCKET_INVALID', 'WebSocket framing: %s', PEER_BROKE_PROTOCOL),
  FRAME_OFFLOAD: define(
    'FACADE_ERR_FRAME_OFFLOAD',
    'DATA_OFFLOAD frame of %s bytes, but offload was not negotiated for this session (check the Facade-Capabilities request header and the CONFIG offload field)',
    PEER_BROKE_PROTOCOL,
  ),

  // --- sessions, pool, routing ------------------------------------------------------------------
  POOL_EXHAUSTED: define('FACADE_ERR_POOL_EXHAUSTED', 'address pool %s is exhausted (%s addresses in use)', {
    kind: 'disconnect',
    reason: 'POOL_EXHAUSTED',
  }),
  POOL_INVALID: define('FACADE_ERR_POOL_INVALID', 'address pool "%s": %s', EXIT_USAGE_C),

  // --- server: users, site ---------------------------------------------------------------------
  USERS_FILE: define('FACADE_ERR_USERS_FILE', 'users file %s: %s', EXIT_FAILURE_C),
  /** A users file of credential version 1 (bearer keys): no conversion exists, every user is added anew. */
  USERS_FILE_V1: define(
    'FACADE_ERR_USERS_FILE_V1',
    'users file %s is version 1 (replayable credentials), which this facade no longer accepts; a v1 entry cannot be converted: move the file away and add each user again with `facade user add NAME --config facade.json` (or --users FILE --tunnel-path PATH), then upgrade the clients. Users in it: %s',
    EXIT_USAGE_C,
  ),
  /** The users file was made for another tunnel path: its users' keys are derived from that path. */
  USERS_FILE_REALM: define(
    'FACADE_ERR_USERS_FILE_REALM',
    'users file %s was made for another tunnel path (realm %s, this one is %s): keys are derived from the tunnel path, so after changing it every user must be added again with `facade user add NAME --config facade.json` into a new users file (or use the old tunnel path)',
    EXIT_USAGE_C,
  ),
  USER_EXISTS: define('FACADE_ERR_USER_EXISTS', 'user "%s" already exists in %s', EXIT_USAGE_C),
  USER_UNKNOWN: define('FACADE_ERR_USER_UNKNOWN', 'no user "%s" in %s', EXIT_USAGE_C),
  USER_NAME: define('FACADE_ERR_USER_NAME', 'user name "%s" is not allowed: %s', EXIT_USAGE_C),
  USER_PASSWORD: define(
    'FACADE_ERR_USER_PASSWORD',
    'password for user "%s" is not allowed: %s',
    EXIT_USAGE_C,
  ),
  SITE_DIR: define('FACADE_ERR_SITE_DIR', 'site folder %s cannot be served: %s (check --site)', EXIT_USAGE_C),
  /** A port the server must bind is taken (EADDRINUSE), privileged (EACCES) or not on this machine. */
  LISTEN: define('FACADE_ERR_LISTEN', 'cannot listen on %s (%s): %s', EXIT_FAILURE_C),
  /** A worker of --workers N did not start, or its TUN queue failed. */
  WORKER: define('FACADE_ERR_WORKER', 'worker %s: %s', EXIT_FAILURE_C),
  /** The server could not give up root for the user of --run-as, or that user cannot do its work. */
  RUN_AS: define('FACADE_ERR_RUN_AS', 'cannot run as user "%s": %s', EXIT_FAILURE_C),
  SITE_UPSTREAM: define(
    'FACADE_ERR_SITE_UPSTREAM',
    'upstream "%s" is not usable: %s (expected http://127.0.0.1:PORT)',
    EXIT_USAGE_C,
  ),

  // --- certificates and ACME ---------------------------------------------------------------
  CERT_LOAD: define('FACADE_ERR_CERT_LOAD', 'cannot load certificate or key %s: %s', EXIT_USAGE_C),
  ACME_ORDER: define('FACADE_ERR_ACME_ORDER', 'ACME certificate order for %s failed: %s', EXIT_FAILURE_C),
  STATE_DIR: define('FACADE_ERR_STATE_DIR', 'state directory %s: %s', EXIT_FAILURE_C),
  PIN_INVALID: define(
    'FACADE_ERR_PIN_INVALID',
    'certificate pin "%s" is not valid: %s (expected sha256: and 64 hex digits, colons allowed)',
    EXIT_USAGE_C,
  ),

  // --- client -----------------------------------------------------------------------------------
  CONNECT_REFUSED: define(
    'FACADE_ERR_CONNECT_REFUSED',
    'server %s did not accept the tunnel: %s',
    EXIT_FAILURE_C,
  ),
  PIN_MISMATCH: define(
    'FACADE_ERR_PIN_MISMATCH',
    'server certificate fingerprint %s does not match the pinned %s',
    EXIT_FAILURE_C,
  ),
  /** No CA this machine trusts vouches for the server's certificate, and no pin was given: the client stops. */
  CERT_UNTRUSTED: define(
    'FACADE_ERR_CERT_UNTRUSTED',
    'server %s presented a certificate this machine does not trust (%s). Its fingerprint is %s; if that is your server (its log shows the fingerprint when it starts), connect with --pin %s',
    EXIT_FAILURE_C,
  ),
  /** The server's name does not exist (NXDOMAIN) and never did for this client: a typo, not an outage. */
  HOST_UNRESOLVED: define(
    'FACADE_ERR_HOST_UNRESOLVED',
    'the server name "%s" does not resolve (%s): check the name in the URL or invite, and this machine\'s DNS',
    EXIT_FAILURE_C,
  ),

  // --- invites -----------------------------------------------------------------------------------
  INVITE_INVALID: define(
    'FACADE_ERR_INVITE_INVALID',
    'the invite link is not valid: %s (expected facade://USER:KEY@HOST:PORT/PATH?pin=sha256:HEX or ?ca=system, as `facade user invite` prints it)',
    EXIT_USAGE_C,
  ),
  /** An invite cannot be made from this server configuration (no host, no certificate yet, plaintext). */
  INVITE_UNAVAILABLE: define('FACADE_ERR_INVITE_UNAVAILABLE', 'cannot make an invite: %s', EXIT_USAGE_C),

  // --- NAT (server --nat) --------------------------------------------------------------------------
  /** --nat cannot pick or use the outgoing interface: the operator names another. */
  NAT_IFACE: define('FACADE_ERR_NAT_IFACE', '--nat: %s', EXIT_USAGE_C),
  /** Forwarding or the nftables rules could not be set up (not root, no nft, a refusal). */
  NAT_SETUP: define('FACADE_ERR_NAT_SETUP', '--nat: %s', EXIT_FAILURE_C),
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

/**
 * The consequence of any thrown value: a coded error's own, else an internal failure (a bug or an
 * unexpected system error is ours, never the peer's fault).
 */
export function consequenceOf(err: unknown): Consequence {
  if (err instanceof FacadeError) {
    for (const spec of Object.values(Errors) as ErrorSpec[])
      if (spec.code === err.code) return spec.consequence;
  }
  return INTERNAL;
}

const INTERNAL: Consequence = { kind: 'disconnect', reason: 'INTERNAL' };

/** The exit code for an error that stopped a command (1 unless its consequence says otherwise). */
export function exitCodeFor(err: unknown): number {
  const consequence = consequenceOf(err);
  return consequence.kind === 'exit' ? consequence.exitCode : EXIT_FAILURE;
}
