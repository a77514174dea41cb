// Settings come from an optional JSON config file and from flags; flags override the file.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { facadeError } from '../core/errors.js';
import type { RawSettings } from './schema.js';

export interface FlagSpec {
  /** camelCase config key the flag sets. */
  readonly key: string;
  readonly type: 'string' | 'boolean';
  readonly multiple?: boolean;
  readonly help: string;
}

/** Turns `--tunnel-path` style flags into config keys, reads `--config FILE`, and merges (flags win). */
export function loadSettings(
  command: string,
  argv: string[],
  flags: Readonly<Record<string, FlagSpec>>,
): { settings: RawSettings; positionals: string[]; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    config: { type: 'string' },
    help: { type: 'boolean' },
  };
  for (const [name, spec] of Object.entries(flags)) {
    options[name] = spec.multiple ? { type: spec.type, multiple: true } : { type: spec.type };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw facadeError('CLI_USAGE', [err instanceof Error ? err.message : String(err), command]);
  }
  const values = parsed.values as Record<string, unknown>;
  const settings: RawSettings = {};
  const configPath = values.config;
  if (typeof configPath === 'string') Object.assign(settings, readConfigFile(configPath));
  for (const [name, spec] of Object.entries(flags)) {
    const value = values[name];
    if (value !== undefined) settings[spec.key] = value;
  }
  return { settings, positionals: parsed.positionals, help: values.help === true };
}

export function readConfigFile(path: string): RawSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw facadeError('CONFIG_READ', [path, err instanceof Error ? err.message : String(err)]);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw facadeError('CONFIG_PARSE', [path, err instanceof Error ? err.message : String(err)]);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw facadeError('CONFIG_PARSE', [path, 'the top level must be an object of settings']);
  }
  return value as RawSettings;
}

export function renderFlagHelp(flags: Readonly<Record<string, FlagSpec>>): string {
  const width = Math.max(...Object.keys(flags).map((name) => name.length)) + 4;
  return Object.entries(flags)
    .map(([name, spec]) => `  --${name.padEnd(width)}${spec.help} (config key: ${spec.key})`)
    .join('\n');
}
