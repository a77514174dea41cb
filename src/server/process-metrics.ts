// What each process that runs an engine reports for the metrics, beside its status: the engine's
// cumulative counters (accounting), logins, and its event loop's delay since the last report.

import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import type { EngineCounters } from '../engine/engine.js';
import type { LoginCounters } from '../users/authenticator.js';

export interface EventLoopDelay {
  readonly meanSeconds: number;
  readonly p99Seconds: number;
  readonly maxSeconds: number;
}

export interface EngineProcessMetrics {
  readonly counters: EngineCounters;
  readonly logins: LoginCounters;
  readonly eventLoopDelay: EventLoopDelay;
}

/** The event loop's delay, sampled every 10 ms; each read covers the time since the previous one. */
export class LoopDelayMonitor {
  readonly #histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });

  constructor() {
    this.#histogram.enable();
  }

  read(): EventLoopDelay {
    const h = this.#histogram;
    const result =
      h.count === 0
        ? { meanSeconds: 0, p99Seconds: 0, maxSeconds: 0 }
        : { meanSeconds: h.mean / 1e9, p99Seconds: h.percentile(99) / 1e9, maxSeconds: h.max / 1e9 };
    h.reset();
    return result;
  }

  close(): void {
    this.#histogram.disable();
  }
}
