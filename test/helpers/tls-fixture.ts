// A throwaway TLS certificate for tests, made by the project's own self-signed code (no openssl binary): the
// PEM text for servers started in-process, and the files on disk for child processes such as pebble or curl.

import { certificatePaths } from '../../src/certs/cert-store.js';
import { loadOrCreateSelfSigned, SELF_SIGNED_NAME } from '../../src/certs/self-signed.js';

export interface TestCertificate {
  readonly cert: string;
  readonly key: string;
  /** `<dir>/self-signed.crt.pem`, usable as a client's trust anchor (curl --cacert, NODE_EXTRA_CA_CERTS). */
  readonly certPath: string;
  readonly keyPath: string;
}

/**
 * A self-signed certificate (RSA 2048, as the server's default: src/certs/self-signed.ts) covering `names` (DNS names and/or IP addresses, the first is also
 * its CN), stored in `dir`. Give each certificate its own directory: one already stored there is reused when
 * it covers `names`.
 */
export async function makeTestCertificate(dir: string, names: readonly string[]): Promise<TestCertificate> {
  const { cert, key } = await loadOrCreateSelfSigned(dir, { names });
  return { cert, key, ...testCertificatePaths(dir) };
}

/** Where makeTestCertificate(dir, ...) stores its files, for a caller that must name them before it runs. */
export function testCertificatePaths(dir: string): { certPath: string; keyPath: string } {
  const paths = certificatePaths(dir, SELF_SIGNED_NAME);
  return { certPath: paths.cert, keyPath: paths.key };
}
