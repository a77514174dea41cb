// Pending ACME HTTP-01 challenges. The CertificateManager writes, the port-80 listener (front/) reads
// through its ChallengeLookup interface.

/**
 * Key authorizations for pending HTTP-01 challenges, by token. The CertificateManager adds one before it
 * tells the CA to validate and removes it afterwards; the listener only reads.
 */
export class ChallengeStore {
  readonly #byToken = new Map<string, string>();

  set(token: string, keyAuthorization: string): void {
    this.#byToken.set(token, keyAuthorization);
  }

  get(token: string): string | undefined {
    return this.#byToken.get(token);
  }

  delete(token: string): void {
    this.#byToken.delete(token);
  }

  get size(): number {
    return this.#byToken.size;
  }
}
