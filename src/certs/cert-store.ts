// Certificates and keys in the state directory: the directory is 0700, every file 0600, and every write
// goes to a temporary file that is fsynced and then renamed over the old one, so a crash or a full disk
// leaves either the old file or the new one, never half of each.
//
// A certificate and its key are two files (operators expect that, and tools read them). They cannot be
// replaced together atomically, so the key is written first and a load checks that the key matches the
// certificate: a crash between the two renames shows up as FACADE_ERR_CERT_LOAD ("key does not match"),
// which the callers answer by making a new pair instead of serving a broken one.

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic as writeFileAtomicRaw } from '../core/atomic-file.js';
import { facadeError, isFacadeError } from '../core/errors.js';

/** Only the server's own user may list or enter the state directory: it holds private keys. */
export const STATE_DIR_MODE = 0o700;

/** Keys, certificates and account data are readable and writable by their owner only. */
export const STATE_FILE_MODE = 0o600;

export interface CertificatePair {
  /** PEM: the leaf first, then any intermediates (what `tls.createSecureContext({cert})` takes). */
  cert: string;
  /** PEM private key (PKCS#8). */
  key: string;
}

export interface CertificateValidity {
  notBefore: Date;
  notAfter: Date;
  /** Upper-case hex, as node:crypto reports it. */
  serialNumber: string;
  /** node:crypto's text form, e.g. 'DNS:vpn.example.com, IP Address:198.18.0.1'. */
  subjectAltName: string | undefined;
}

export interface StoredCertificate extends CertificatePair {
  validity: CertificateValidity;
  /** The parsed leaf, for name checks (`checkHost`, `checkIP`). */
  leaf: X509Certificate;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM chain, leaf first, each with its BEGIN/END lines. */
export function splitPemChain(pem: string): string[] {
  return pem.match(PEM_CERTIFICATE) ?? [];
}

/** Parses the leaf (first certificate) of a PEM chain; FACADE_ERR_CERT_LOAD names `source` when it is not one. */
export function parseLeafCertificate(pem: string, source = 'PEM text'): X509Certificate {
  const [leafPem] = splitPemChain(pem);
  if (leafPem === undefined) throw facadeError('CERT_LOAD', [source, 'no PEM CERTIFICATE block found']);
  try {
    return new X509Certificate(leafPem);
  } catch (err) {
    throw facadeError('CERT_LOAD', [source, (err as Error).message], { cause: err });
  }
}

/** notBefore/notAfter and the serial of the leaf of a PEM chain. */
export function readCertificateValidity(pem: string, source?: string): CertificateValidity {
  return validityOf(parseLeafCertificate(pem, source));
}

function validityOf(leaf: X509Certificate): CertificateValidity {
  return {
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    serialNumber: leaf.serialNumber,
    subjectAltName: leaf.subjectAltName,
  };
}

/**
 * Creates the state directory (and parents) with mode 0700, or tightens an existing one to 0700: it is
 * about to hold private keys. FACADE_ERR_STATE_DIR when it cannot be made or is not a directory.
 */
export async function ensureStateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: STATE_DIR_MODE });
    const info = await stat(dir);
    if (!info.isDirectory()) throw facadeError('STATE_DIR', [dir, 'exists and is not a directory']);
    if ((info.mode & 0o777) !== STATE_DIR_MODE) await chmod(dir, STATE_DIR_MODE);
  } catch (err) {
    if (isFacadeError(err)) throw err;
    const errno = (err as NodeJS.ErrnoException).code;
    throw facadeError(
      'STATE_DIR',
      [dir, `${(err as Error).message} (check that the parent exists and is writable)`],
      {
        cause: err,
        ...(errno === undefined ? {} : { errno }),
      },
    );
  }
}

/** src/atomic-file.ts's crash-safe replace, with failures reported as the state directory's. */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode: number = STATE_FILE_MODE,
): Promise<void> {
  try {
    await writeFileAtomicRaw(path, data, mode);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    throw facadeError('STATE_DIR', [dirname(path), `writing ${path} failed: ${(err as Error).message}`], {
      cause: err,
      ...(errno === undefined ? {} : { errno }),
    });
  }
}

/** The file's text, or undefined when it does not exist. Other errors (EACCES, EISDIR) are thrown. */
export async function readFileIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw facadeError('CERT_LOAD', [path, (err as Error).message], { cause: err });
  }
}

/** Paths of the pair stored under `name`: `<stateDir>/<name>.crt.pem` and `<stateDir>/<name>.key.pem`. */
export function certificatePaths(stateDir: string, name: string): { cert: string; key: string } {
  return { cert: join(stateDir, `${name}.crt.pem`), key: join(stateDir, `${name}.key.pem`) };
}

/** Checks that `pair` parses and that its key belongs to its leaf; returns the parsed form. */
export function checkCertificatePair(pair: CertificatePair, source: string): StoredCertificate {
  const leaf = parseLeafCertificate(pair.cert, source);
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(pair.key);
  } catch (err) {
    throw facadeError('CERT_LOAD', [source, `private key: ${(err as Error).message}`], { cause: err });
  }
  if (!leaf.checkPrivateKey(key)) {
    throw facadeError('CERT_LOAD', [source, 'the private key does not match the certificate']);
  }
  return { cert: pair.cert, key: pair.key, validity: validityOf(leaf), leaf };
}

/**
 * The pair stored under `name`, or undefined when neither file exists. FACADE_ERR_CERT_LOAD when only one
 * exists, either does not parse, or the key does not match (see the top of this file).
 */
export async function loadCertificatePair(
  stateDir: string,
  name: string,
): Promise<StoredCertificate | undefined> {
  const paths = certificatePaths(stateDir, name);
  const [cert, key] = await Promise.all([readFileIfExists(paths.cert), readFileIfExists(paths.key)]);
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined)
    throw facadeError('CERT_LOAD', [paths.cert, 'the file is missing (its key is there)']);
  if (key === undefined)
    throw facadeError('CERT_LOAD', [paths.key, 'the file is missing (its certificate is there)']);
  return checkCertificatePair({ cert, key }, paths.cert);
}

/** Checks `pair`, then stores it under `name` (key first, see the top of this file). */
export async function saveCertificatePair(
  stateDir: string,
  name: string,
  pair: CertificatePair,
): Promise<StoredCertificate> {
  const paths = certificatePaths(stateDir, name);
  const checked = checkCertificatePair(pair, paths.cert);
  await ensureStateDir(stateDir);
  await writeFileAtomic(paths.key, pair.key);
  await writeFileAtomic(paths.cert, pair.cert);
  return checked;
}
