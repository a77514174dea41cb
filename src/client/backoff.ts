// Reconnect delays: exponential with a ceiling and random jitter, so a fleet of clients that lost the same
// server does not come back in lockstep.

import { RECONNECT_INITIAL_MS, RECONNECT_JITTER, RECONNECT_MAX_MS } from '../core/limits.js';

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs = RECONNECT_INITIAL_MS,
    private readonly maxMs = RECONNECT_MAX_MS,
    private readonly jitter = RECONNECT_JITTER,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call doubles the base up to the ceiling. */
  next(): number {
    const base = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt++;
    const spread = base * this.jitter;
    return Math.max(0, Math.round(base - spread + this.random() * 2 * spread));
  }

  reset(): void {
    this.attempt = 0;
  }
}
