import { type Logger, pino } from 'pino';

export type { Logger };

/** One logger per process; components take a child with their own `component` binding. */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: options.name ?? 'facade',
    level: options.level ?? process.env.FACADE_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
  });
}
