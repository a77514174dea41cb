// Settings both modes have. Defined here once; each mode's table takes them with its own default or help.

import { DEFAULT_KEEPALIVE_MS } from '../core/limits.js';
import { convert, integer, onOff, text, where } from './kinds.js';
import type { LogFormat } from './schema.js';
import { type Alias, type Setting, withDefault } from './setting.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const plaintext = withDefault(onOff, false, {
  flag: 'plaintext',
  help: 'NO TLS: plain TCP, for debugging only',
});

export function tunName(fallback: string): Setting<string> {
  const name = where(text('NAME'), (value) =>
    value.length > 15 ? `interface names have at most 15 characters, got "${value}"` : null,
  );
  return withDefault(name, fallback, { flag: 'tun', help: 'TUN interface name' });
}

/** Seconds in flags and files; `keepaliveMs` is what older files say. The config holds milliseconds. */
export const keepaliveMs = withDefault(
  convert(integer(0, 3600, 'SECONDS'), (seconds) => seconds * 1000),
  DEFAULT_KEEPALIVE_MS / 1000,
  {
    key: 'keepalive',
    flag: 'keepalive',
    help: 'keepalive interval in seconds (0 = off)',
    aliases: [{ key: 'keepaliveMs', kind: integer(0, 3_600_000, 'MS'), help: 'the same in milliseconds' }],
  },
);

/** A setting that is on unless turned off, and whose flag (and older files) say it the negative way. */
export function offSwitch(key: string, flag: string): Alias<boolean> {
  return { key, flag, kind: convert(onOff, (off) => (off ? false : undefined)), help: 'true turns it off' };
}

export function offload(help: string): Setting<boolean> {
  return withDefault(onOff, true, { help, aliases: [offSwitch('noOffload', 'no-offload')] });
}

export const logLevel = withDefault(
  where(text('LEVEL'), (level) =>
    LOG_LEVELS.includes(level) ? null : `expected one of ${LOG_LEVELS.join(', ')}, got "${level}"`,
  ),
  'info',
  { flag: 'log-level', help: LOG_LEVELS.slice(0, -1).join('|') },
);

const LOG_FORMATS: readonly LogFormat[] = ['auto', 'json', 'pretty'];

export const logFormat = withDefault(
  convert(
    where(text('auto|json|pretty'), (format) =>
      (LOG_FORMATS as readonly string[]).includes(format)
        ? null
        : `expected one of ${LOG_FORMATS.join(', ')}, got "${format}"`,
    ),
    (format) => format as LogFormat,
  ),
  'auto',
  {
    flag: 'log-format',
    help: 'auto: lines for people when stdout is a terminal, JSON (one object a line, for journald and log shippers) otherwise',
  },
);
