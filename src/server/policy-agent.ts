// A user's policy where their session runs (a worker, or the one process): the rate each way, expiry
// while connected, and the data quota the primary's accounting decides (quota state in, allowances out).
//
//   users file (reloaded) ─► apply() every POLICY_TICK_MS: rate changes, expired accounts end
//   accounting (primary) ─► setQuota(): who is refused at login, where each session's bytes must stop
//
// Nothing here runs per packet: the engine's sessions shape and count; this only sets their limits.

import type { Logger } from '../core/log.js';
import type { ByteAllowance, TunnelEngine } from '../engine/engine.js';
import { DisconnectReason } from '../protocol/control.js';
import { isExpired, NO_POLICY, rateBytesPerSecond, type UserPolicy } from '../users/policy.js';

/** How often running sessions are checked against their users' policy (expiry, a changed rate). */
export const POLICY_TICK_MS = 1_000;

export interface PolicyLookup {
  get(name: string): { readonly policy?: UserPolicy | undefined } | undefined;
}

export class PolicyAgent {
  readonly #engine: TunnelEngine;
  readonly #users: PolicyLookup;
  readonly #logger: Logger;
  readonly #now: () => number;
  #blocked: ReadonlySet<string> = new Set();
  #timer: NodeJS.Timeout | undefined;

  constructor(engine: TunnelEngine, users: PolicyLookup, logger: Logger, now: () => number = Date.now) {
    this.#engine = engine;
    this.#users = users;
    this.#logger = logger;
    this.#now = now;
  }

  /** The engine's rateLimitOf: a user's rate in bytes per second each way (0: none). */
  readonly rateOf = (user: string): number => rateBytesPerSecond(this.#policy(user));

  /** The authenticator's isBlocked: over their data quota (refused like a wrong password). */
  readonly isBlocked = (user: string): boolean => this.#blocked.has(user);

  start(): this {
    this.#timer = setInterval(() => this.apply(), POLICY_TICK_MS);
    this.#timer.unref();
    return this;
  }

  close(): void {
    clearInterval(this.#timer);
  }

  /** Applies the users' current policy to the running sessions: rates, and expiry. */
  apply(): void {
    const now = this.#now();
    for (const user of this.#engine.users()) {
      const policy = this.#policy(user);
      if (isExpired(policy, now)) {
        this.#logger.info({ user, expires: policy.expires }, 'account expired: session ended');
        this.#engine.closeUser(user, DisconnectReason.ADMIN, `account expired at ${policy.expires}`);
        continue;
      }
      this.#engine.setRateLimit(user, rateBytesPerSecond(policy));
    }
  }

  /** The primary's quota decision for this engine. */
  setQuota(blocked: ReadonlySet<string>, allowances: ReadonlyMap<string, ByteAllowance>): void {
    for (const user of blocked) {
      if (!this.#blocked.has(user) && this.#engine.users().includes(user))
        this.#logger.info({ user }, 'data quota used up: session ended');
    }
    this.#blocked = blocked;
    this.#engine.setAllowances(allowances);
  }

  #policy(user: string): UserPolicy {
    return this.#users.get(user)?.policy ?? NO_POLICY;
  }
}
