// Everything the server opens is registered here the moment it exists, and closed in reverse order: on a
// start-up failure at any step, and on shutdown. So no step needs its own clean-up path, and a failure
// halfway leaves nothing open (no port, no TUN, no timer keeping the process alive).

import type { Logger } from '../core/log.js';

interface Entry {
  readonly name: string;
  readonly close: () => void | Promise<void>;
}

export class Disposer {
  readonly #stack: Entry[] = [];
  #disposing: Promise<void> | undefined;

  constructor(private readonly logger: Logger) {}

  /** Registers a resource's close; returns the resource, so `const tun = d.add('tun', open(), t => t.close())`. */
  add<T>(name: string, resource: T, close: (resource: T) => void | Promise<void>): T {
    if (this.#disposing !== undefined) {
      // Opened after shutdown began (a step that was still running): close it at once.
      void Promise.resolve()
        .then(() => close(resource))
        .catch(() => undefined);
      return resource;
    }
    this.#stack.push({ name, close: () => close(resource) });
    return resource;
  }

  /** Registers a plain clean-up step (a timer, a listener). */
  defer(name: string, close: () => void | Promise<void>): void {
    this.add(name, undefined, close);
  }

  /** Closes everything, last opened first. A close that fails is logged and the rest still run. Idempotent. */
  dispose(): Promise<void> {
    this.#disposing ??= (async () => {
      for (let entry = this.#stack.pop(); entry !== undefined; entry = this.#stack.pop()) {
        try {
          await entry.close();
        } catch (err) {
          this.logger.warn(
            { err: err instanceof Error ? err.message : String(err) },
            `closing ${entry.name} failed`,
          );
        }
      }
    })();
    return this.#disposing;
  }
}
