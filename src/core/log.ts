// The logger: one per process; components take a child with their own bindings.
//
// Two ways out, one set of events. JSON, one object a line, for journald, Docker and log shippers (when
// stdout is not a terminal, or `--log-format json`); lines for people at a terminal (pino-pretty, or
// `--log-format pretty`), where the events an operator follows most, a client connecting and leaving,
// read as sentences with the user, the address, the time online and the bytes. Both carry the same fields:
// the JSON of a disconnect has user, ipv4, seconds, bytesIn and bytesOut.

import { type DestinationStream, type Logger, pino } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export type LogFormat = 'auto' | 'json' | 'pretty';

export interface LoggerOptions {
  level?: string | undefined;
  name?: string | undefined;
  /** auto (the default): for people when `destination` (stdout) is a terminal, JSON otherwise. */
  format?: LogFormat | undefined;
  /** Where lines go: stdout unless a test gives a stream. */
  destination?: (NodeJS.WritableStream & { isTTY?: boolean }) | undefined;
}

/** One logger per process; components take a child with their own `component` binding. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const settings = {
    name: options.name ?? 'facade',
    level: options.level ?? process.env.FACADE_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
  };
  const out = options.destination ?? process.stdout;
  const format = options.format ?? 'auto';
  const forPeople = format === 'pretty' || (format === 'auto' && out.isTTY === true);
  if (!forPeople)
    return options.destination === undefined
      ? pino(settings)
      : pino(settings, options.destination as DestinationStream);
  // In this thread (not a worker transport): the message format is a function, and a line written
  // synchronously is out before a process that is stopping exits.
  const stream = pretty({
    sync: true,
    destination: options.destination ?? 1,
    colorize: out.isTTY === true && process.env.NO_COLOR === undefined,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss',
    ignore: 'pid,hostname,name',
    hideObject: true,
    messageFormat: (log) => humanLine(log as LogRecord),
  });
  return pino(settings, stream);
}

type LogRecord = Record<string, unknown>;

/** Fields every line has, or that the line for people shows elsewhere. */
const OWN_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);

/** The message of one line for people: a sentence for the main events, else the message and its fields. */
export function humanLine(log: LogRecord): string {
  const msg = String(log.msg ?? '');
  if (msg === 'client connected, address assigned') {
    const addresses = [log.ipv4, log.ipv6].filter((a) => typeof a === 'string').join(' and ');
    return `${log.user} connected from ${log.remote} as ${addresses}`;
  }
  if (msg === 'client disconnected') {
    const why = log.message === undefined ? String(log.reason) : `${log.reason}: ${log.message}`;
    return (
      `${log.user} disconnected (${log.ipv4}) after ${duration(Number(log.seconds))}, ` +
      `received ${bytes(Number(log.bytesIn))}, sent ${bytes(Number(log.bytesOut))} (${why})`
    );
  }
  // A field the message already says (a reason spelled out in it) is not said twice.
  const rest = Object.entries(log)
    .filter(([key, value]) => !OWN_FIELDS.has(key) && value !== undefined)
    .filter(([, value]) => typeof value !== 'string' || value.length < 8 || !msg.includes(value))
    .map(([key, value]) => `${key}=${fieldText(value)}`);
  return rest.length === 0 ? msg : `${msg}  ${rest.join(' ')}`;
}

function fieldText(value: unknown): string {
  if (typeof value === 'string') return /[\s"=]/.test(value) || value === '' ? JSON.stringify(value) : value;
  if (value instanceof Object && 'message' in value) return JSON.stringify(String(value.message));
  return JSON.stringify(value);
}

/** 42 s, 3 min 05 s, 2 h 07 min, 3 d 4 h. */
export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  if (s < 86_400)
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** 512 B, 1.2 kB, 3.4 MB, 5.6 GB (powers of 1000, as link speeds and disks count). */
export function bytes(count: number): string {
  if (!Number.isFinite(count)) return '?';
  if (count < 1000) return `${count} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = count / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}
