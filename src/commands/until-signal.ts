// Both modes run until SIGINT or SIGTERM, then shut down in order.

import type { Logger } from '../core/log.js';

export function untilSignal(logger: Logger): Promise<void> {
  return new Promise((resolvePromise) => {
    const stop = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'shutting down');
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      resolvePromise();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
