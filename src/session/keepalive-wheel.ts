// One timer for the keepalives of many sessions. With a timer each, 5,000 idle sessions with a 10 s
// keepalive wake the event loop 500 times a second, one echo request each, and the replies come back as
// many separate wake-ups; in an idle Node process every wake-up is cold and costs ~0.1 ms (bench/README.md,
// node-echo). The wheel splits the interval into SLOTS ticks and runs a slot's sessions together: their
// echo requests leave in one turn of the loop, their replies arrive together, and the loop wakes SLOTS
// times per interval however many sessions there are.
//
// A session joins the slot that runs last (its first tick comes 0.9 to 1 interval after it starts, as with
// setInterval) and leaves when it closes; the timer runs only while the wheel has sessions.

/** Ticks per interval: a session's tick is early by at most one tenth of the interval. */
const SLOTS = 10;

export class KeepaliveWheel {
  readonly #slots: Set<() => void>[] = Array.from({ length: SLOTS }, () => new Set());
  #cursor = 0;
  #size = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(readonly intervalMs: number) {}

  /** Calls `tick` once per interval from now on; returns what stops it. */
  add(tick: () => void): () => void {
    const slot = this.#slots[(this.#cursor + SLOTS - 1) % SLOTS] as Set<() => void>;
    slot.add(tick);
    this.#size++;
    if (this.#timer === undefined) {
      this.#timer = setInterval(this.#turn, this.intervalMs / SLOTS);
      this.#timer.unref();
    }
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      slot.delete(tick);
      this.#size--;
      if (this.#size === 0) this.#stop();
    };
  }

  /** Sessions ticking on this wheel. */
  get size(): number {
    return this.#size;
  }

  readonly #turn = (): void => {
    const slot = this.#slots[this.#cursor] as Set<() => void>;
    this.#cursor = (this.#cursor + 1) % SLOTS;
    // A tick may close its session (a dead peer), which removes it from this set: Set iteration allows it.
    for (const tick of slot) tick();
  };

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
