// Certificates from an ACME CA (Let's Encrypt by default) with acme-client, answered over HTTP-01 by this
// process's own plain-HTTP listener, kept in the state directory and renewed in the background.
//
// Life of a certificate:
//   start()  -> a stored certificate from the same CA, for the domain, not expired: used as is, no CA
//               contact at all; otherwise an order is placed and start() waits for it.
//   renewal  -> at notBefore + renewAtFraction of the lifetime (2/3: Let's Encrypt's own advice, 30 days
//               before a 90-day certificate ends). Success stores the pair and emits 'certificate'; the
//               server swaps it in with setSecureContext, which only affects new handshakes, so open TLS
//               connections (tunnels, browsers) keep going.
//   failure  -> the current certificate keeps serving, a warn line says why and when the next try is, and
//               the next try comes after an exponential backoff (capped). A failure never throws out of a
//               timer, so it cannot take the process down.
//
// State directory files (0600, directory 0700, atomic writes; see cert-store.ts):
//   acme-account.key.pem          account key (ECDSA P-256), shared by every CA: a new CA gets a new account
//   acme-<domain>.crt.pem/.key.pem certificate chain and its key (ECDSA P-256)
//   acme-<domain>.json            which directory issued it, so a staging certificate is never kept once
//                                 the server points at production

import { createPrivateKey } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { get as httpsGet } from 'node:https';
import { join } from 'node:path';
import { axios as acmeAxios, crypto as acmeCrypto, Client, directory, setLogger } from 'acme-client';
import { facadeError, isFacadeError } from '../core/errors.js';
import { CERT_RENEW_AT_FRACTION } from '../core/limits.js';
import type { Logger } from '../core/log.js';
import {
  type CertificatePair,
  ensureStateDir,
  loadCertificatePair,
  readFileIfExists,
  type StoredCertificate,
  saveCertificatePair,
  writeFileAtomic,
} from './cert-store.js';
import type { ChallengeStore } from './challenges.js';

export const LETS_ENCRYPT_PRODUCTION = directory.letsencrypt.production;
export const LETS_ENCRYPT_STAGING = directory.letsencrypt.staging;

/**
 * First wait after a failed renewal. Let's Encrypt allows 5 failed validations per hostname per hour,
 * so retrying faster would only burn that allowance; a 90-day certificate renewed at day 60 has 30 days
 * of slack.
 */
export const RENEW_RETRY_INITIAL_MS = 10 * 60_000;

/** Longest wait between renewal tries: at least four tries a day until the certificate expires. */
export const RENEW_RETRY_MAX_MS = 6 * 3600_000;

/** setTimeout stores its delay in a signed 32-bit int; longer delays fire at once. We re-arm instead. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** Host names only: HTTP-01 cannot validate wildcards or IP addresses (see self-signed.ts for IP-only). */
const DOMAIN_NAME =
  /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/i;

const ACCOUNT_KEY_FILE = 'acme-account.key.pem';

export interface CertificateManagerOptions {
  domain: string;
  /** Contact for the CA's expiry and policy mail; empty or undefined registers without one. */
  email?: string;
  /** Default Let's Encrypt production; LETS_ENCRYPT_STAGING for --acme-staging. */
  directoryUrl?: string;
  stateDir: string;
  logger: Logger;
  /** Shared with the plain-HTTP listener, which serves what is put here. */
  challenges: ChallengeStore;
  /** Fraction of the lifetime after which to renew; default CERT_RENEW_AT_FRACTION. */
  renewAtFraction?: number;
  /** Backoff after failed renewals; default RENEW_RETRY_INITIAL_MS doubling up to RENEW_RETRY_MAX_MS. */
  retry?: { initialMs: number; maxMs: number };
  now?: () => number;
  /**
   * acme-client fetches the challenge itself before asking the CA, which catches a wrong DNS record
   * without spending the CA's failed-validation allowance. Turn off when this host cannot reach its own
   * public address (hairpin NAT) or the listener is not on port 80. Default true.
   */
  verifyChallengeLocally?: boolean;
  /** How acme-client polls pending challenges and orders; default 5 s doubling to 30 s, 10 attempts. */
  polling?: { minMs: number; maxMs: number; attempts: number };
  /**
   * Retries of one ACME request on network errors, 5xx and 429 inside one attempt (acme-client waits
   * 5 s x attempt between them). Default acme-client's 5. This is acme-client's process-wide setting.
   */
  requestRetries?: number;
}

interface CertificateEvents {
  certificate: [CertificatePair];
}

export class CertificateManager extends EventEmitter<CertificateEvents> {
  readonly #options: CertificateManagerOptions;
  readonly #directoryUrl: string;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #renewAtFraction: number;
  readonly #retry: { initialMs: number; maxMs: number };
  readonly #pairName: string;
  readonly #metaPath: string;

  #current: StoredCertificate | undefined;
  #starting: Promise<CertificatePair> | undefined;
  #renewing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #nextAttemptAt: number | undefined;
  #failures = 0;
  #closed = false;

  constructor(options: CertificateManagerOptions) {
    super();
    if (!DOMAIN_NAME.test(options.domain)) {
      throw facadeError('CONFIG_INVALID', [
        'domain',
        `"${options.domain}" is not a DNS name with at least two labels (HTTP-01 cannot validate wildcards or IP addresses; use the self-signed certificate and --pin for an IP-only server)`,
      ]);
    }
    if (options.email && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(options.email)) {
      throw facadeError('CONFIG_INVALID', ['email', `"${options.email}" is not an e-mail address`]);
    }
    const fraction = options.renewAtFraction ?? CERT_RENEW_AT_FRACTION;
    if (!(fraction > 0 && fraction < 1)) {
      throw facadeError('CONFIG_INVALID', [
        'renewAtFraction',
        `${fraction} is not between 0 and 1 (exclusive)`,
      ]);
    }
    this.#options = options;
    this.#directoryUrl = options.directoryUrl ?? LETS_ENCRYPT_PRODUCTION;
    this.#log = options.logger.child({ component: 'acme', domain: options.domain });
    this.#now = options.now ?? Date.now;
    this.#renewAtFraction = fraction;
    this.#retry = options.retry ?? { initialMs: RENEW_RETRY_INITIAL_MS, maxMs: RENEW_RETRY_MAX_MS };
    this.#pairName = `acme-${options.domain.toLowerCase()}`;
    this.#metaPath = join(options.stateDir, `${this.#pairName}.json`);

    // acme-client's settings are module-wide; one CertificateManager per process is the intended use.
    if (options.requestRetries !== undefined) {
      (
        acmeAxios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }
      ).acmeSettings.retryMaxAttempts = options.requestRetries;
    }
    const acmeLog = this.#log;
    setLogger((message: string) => acmeLog.debug({ acme: message }, 'acme-client'));
  }

  /**
   * The certificate to serve: the stored one when it is valid and from this CA (no network at all),
   * else a new one from the CA. Rejects with FACADE_ERR_ACME_ORDER when none can be had. Schedules
   * renewal. Calling it again returns the same result.
   */
  start(): Promise<CertificatePair> {
    // A failed start may be retried (the CLI may loop); a successful one is remembered.
    this.#starting ??= this.#start().catch((err: unknown) => {
      this.#starting = undefined;
      throw err;
    });
    return this.#starting;
  }

  async #start(): Promise<CertificatePair> {
    await ensureStateDir(this.#options.stateDir);
    const stored = await this.#loadStored();
    if (stored !== undefined) {
      this.#current = stored;
      this.#scheduleRenewal();
      this.#log.info(
        {
          serial: stored.validity.serialNumber,
          notAfter: stored.validity.notAfter.toISOString(),
          nextRenewalAt: this.nextRenewalAt()?.toISOString(),
        },
        'using the stored certificate',
      );
      return pairOf(stored);
    }
    this.#current = await this.#issue();
    this.#scheduleRenewal();
    return pairOf(this.#current);
  }

  /** The stored pair if it is usable now, else undefined (with the reason logged). */
  async #loadStored(): Promise<StoredCertificate | undefined> {
    let stored: StoredCertificate | undefined;
    try {
      stored = await loadCertificatePair(this.#options.stateDir, this.#pairName);
    } catch (err) {
      if (!isFacadeError(err, 'CERT_LOAD')) throw err;
      this.#log.warn({ reason: err.message }, 'stored certificate unusable, ordering a new one');
      return undefined;
    }
    if (stored === undefined) return undefined;
    const meta = await this.#readMeta();
    const now = this.#now();
    let reason: string | undefined;
    if (meta?.directoryUrl !== this.#directoryUrl) {
      reason = `it was issued by ${meta?.directoryUrl ?? 'an unknown CA'}, not ${this.#directoryUrl}`;
    } else if (stored.leaf.checkHost(this.#options.domain, { subject: 'never' }) === undefined) {
      reason = `it does not cover ${this.#options.domain}`;
    } else if (stored.validity.notAfter.getTime() <= now) {
      reason = `it expired on ${stored.validity.notAfter.toISOString()}`;
    }
    if (reason !== undefined) {
      this.#log.info({ reason }, 'not using the stored certificate, ordering a new one');
      return undefined;
    }
    return stored;
  }

  async #readMeta(): Promise<{ directoryUrl?: string } | undefined> {
    try {
      const text = await readFileIfExists(this.#metaPath);
      return text === undefined ? undefined : (JSON.parse(text) as { directoryUrl?: string });
    } catch {
      // A damaged meta file only costs a new order.
      return undefined;
    }
  }

  /**
   * Orders a certificate now, even if the current one is far from expiry. Resolves once it is stored
   * and 'certificate' has been emitted; rejects with FACADE_ERR_ACME_ORDER (the current certificate
   * stays, a retry is scheduled with backoff and logged). Joins a renewal already under way.
   */
  renewNow(): Promise<void> {
    this.#renewing ??= this.#renew().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  async #renew(): Promise<void> {
    let issued: StoredCertificate;
    try {
      issued = await this.#issue();
    } catch (err) {
      this.#failures += 1;
      const delay = Math.min(this.#retry.initialMs * 2 ** (this.#failures - 1), this.#retry.maxMs);
      const reason = (err as Error).message;
      if (!this.#closed) {
        // One clock reading for both: the time logged is exactly the time scheduled.
        const at = this.#now() + delay;
        const nextAttemptAt = new Date(at).toISOString();
        this.#scheduleAt(at);
        this.#log.warn(
          {
            reason,
            failures: this.#failures,
            nextAttemptAt,
            currentNotAfter: this.#current?.validity.notAfter.toISOString(),
          },
          `certificate renewal failed, keeping the current certificate; next try at ${nextAttemptAt}: ${reason}`,
        );
      }
      throw err;
    }
    this.#failures = 0;
    if (this.#closed) return;
    this.#current = issued;
    this.#scheduleRenewal();
    this.#log.info(
      {
        serial: issued.validity.serialNumber,
        notAfter: issued.validity.notAfter.toISOString(),
        nextRenewalAt: this.nextRenewalAt()?.toISOString(),
      },
      'certificate renewed',
    );
    try {
      this.emit('certificate', pairOf(issued));
    } catch (err) {
      // A listener that cannot install the certificate must not turn a good renewal into a failure.
      this.#log.error({ err }, "a 'certificate' listener threw");
    }
  }

  /** When the next renewal try is due; undefined before start() and after close(). */
  nextRenewalAt(): Date | undefined {
    return this.#nextAttemptAt === undefined ? undefined : new Date(this.#nextAttemptAt);
  }

  /** The certificate being served, if any. */
  current(): StoredCertificate | undefined {
    return this.#current;
  }

  /** Clears the renewal timer. An order in flight finishes and is stored but not emitted. Idempotent. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#nextAttemptAt = undefined;
  }

  #scheduleRenewal(): void {
    const validity = this.#current!.validity;
    const notBefore = validity.notBefore.getTime();
    const lifetime = validity.notAfter.getTime() - notBefore;
    this.#scheduleAt(notBefore + lifetime * this.#renewAtFraction);
  }

  #scheduleAt(at: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#nextAttemptAt = at;
    const delay = Math.max(0, at - this.#now());
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        // A clamped delay ends early: arm again for the rest.
        if (at - this.#now() > 0 && delay > MAX_TIMER_DELAY_MS) {
          this.#scheduleAt(at);
          return;
        }
        // Already logged with its next try in #renew; a timer must never reject unhandled.
        this.renewNow().catch(() => {});
      },
      Math.min(delay, MAX_TIMER_DELAY_MS),
    );
    this.#timer.unref();
  }

  async #issue(): Promise<StoredCertificate> {
    const started = this.#now();
    const { domain } = this.#options;
    try {
      const accountKey = await this.#accountKey();
      const polling = this.#options.polling;
      const client = new Client({
        directoryUrl: this.#directoryUrl,
        accountKey,
        ...(polling === undefined
          ? {}
          : { backoffMin: polling.minMs, backoffMax: polling.maxMs, backoffAttempts: polling.attempts }),
      });
      const [key, csr] = await acmeCrypto.createCsr(
        { commonName: domain, altNames: [domain] },
        await acmeCrypto.createPrivateEcdsaKey('P-256'),
      );
      this.#log.info({ directoryUrl: this.#directoryUrl }, 'ordering a certificate');
      const { challenges } = this.#options;
      const cert = await client.auto({
        csr,
        ...(this.#options.email ? { email: this.#options.email } : {}),
        termsOfServiceAgreed: true,
        challengePriority: ['http-01'],
        skipChallengeVerification: this.#options.verifyChallengeLocally === false,
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
          if (challenge.type !== 'http-01')
            throw new Error(`challenge type ${challenge.type} is not offered`);
          challenges.set(challenge.token, keyAuthorization);
        },
        challengeRemoveFn: async (_authz, challenge) => {
          challenges.delete(challenge.token);
        },
      });
      const saved = await saveCertificatePair(this.#options.stateDir, this.#pairName, {
        cert,
        key: key.toString(),
      });
      await writeFileAtomic(
        this.#metaPath,
        `${JSON.stringify({ directoryUrl: this.#directoryUrl, domain })}\n`,
      );
      this.#log.info(
        {
          serial: saved.validity.serialNumber,
          notBefore: saved.validity.notBefore.toISOString(),
          notAfter: saved.validity.notAfter.toISOString(),
          durationMs: this.#now() - started,
        },
        'certificate issued',
      );
      return saved;
    } catch (err) {
      if (isFacadeError(err, 'ACME_ORDER')) throw err;
      throw facadeError(
        'ACME_ORDER',
        [
          domain,
          `${await this.#explain(err)} (check that ${this.#directoryUrl} is reachable, that ${domain} resolves to this server and that its port 80 reaches the plain-HTTP listener)`,
        ],
        { cause: err },
      );
    }
  }

  /**
   * The reason to log for a failed order. acme-client loses the network error of a request that got no
   * response once its retries are spent and throws "Cannot read properties of undefined (reading
   * 'config')" instead (publishlab/node-acme-client#101), so for that one we ask the directory ourselves
   * to find out what is wrong (ECONNREFUSED, a timeout, a certificate error).
   */
  async #explain(err: unknown): Promise<string> {
    const message = (err as Error).message ?? String(err);
    if (!(err instanceof TypeError && message.includes("reading 'config'"))) return message;
    const probe = await probeUrl(this.#directoryUrl);
    return probe === undefined
      ? 'a request to the ACME server got no usable response (the directory answers now: a 5xx or a dropped connection)'
      : `the ACME server did not answer: ${probe}`;
  }

  /** The account key from the state directory, made on first use; a damaged one is replaced. */
  async #accountKey(): Promise<string> {
    const path = join(this.#options.stateDir, ACCOUNT_KEY_FILE);
    const stored = await readFileIfExists(path);
    if (stored !== undefined) {
      try {
        createPrivateKey(stored);
        return stored;
      } catch (err) {
        this.#log.warn(
          { path, reason: (err as Error).message },
          'ACME account key unreadable, making a new one',
        );
      }
    }
    const key = (await acmeCrypto.createPrivateEcdsaKey('P-256')).toString();
    await writeFileAtomic(path, key);
    return key;
  }
}

/** How long the diagnostic request for a failed order may take. */
const PROBE_TIMEOUT_MS = 10_000;

/** undefined when `url` answers an HTTPS GET (any status), else the error's message. */
function probeUrl(url: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = httpsGet(url, { timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(undefined);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${PROBE_TIMEOUT_MS} ms`)));
    req.on('error', (err) => resolve(err.message));
  });
}

function pairOf(stored: StoredCertificate): CertificatePair {
  return { cert: stored.cert, key: stored.key };
}
