// Settings come from an optional JSON config file (--config FILE) and from flags; flags win, setting by
// setting. The flags are the settings table's own, so the parser, --help and the README cannot disagree.

import { readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { facadeError } from '../core/errors.js';
import { type Input, inputsOf, type RawSettings, refuseUnknownKeys, type SettingsTable } from './setting.js';
import { suggestion } from './suggest.js';

export interface CommandLine {
  /** File settings overlaid with flag settings, by config key; resolveSettings reads them. */
  readonly raw: RawSettings;
  readonly positionals: string[];
  readonly help: boolean;
}

export interface LoadOptions {
  /**
   * The table a `--config FILE`'s keys are checked against (the command's own by default; `facade status`
   * reads the server's file), or false for a command that takes no config file.
   */
  readonly configFile?: SettingsTable | false;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Reads `argv` (the arguments after the command name) against `table`'s flags, and the config file. */
export function loadSettings(
  command: string,
  table: SettingsTable,
  argv: string[],
  { configFile = table }: LoadOptions = {},
): CommandLine {
  const byFlag = new Map<string, { field: string; input: Input }>();
  for (const [field, setting] of Object.entries(table))
    for (const input of inputsOf(field, setting))
      if (input.flag !== undefined) byFlag.set(input.flag, { field, input });
  const options: Options = { help: { type: 'boolean', short: 'h' } };
  if (configFile !== false) options.config = { type: 'string' };
  const optionalValue = new Set<string>();
  for (const [flag, { input }] of byFlag) {
    // parseArgs has no optional values: such a flag is parsed as a switch and takes the next argument
    // itself (readFlags), unless that looks like an option.
    if (input.kind.arg === 'optional') optionalValue.add(flag);
    options[flag] = {
      type: input.kind.arg === 'switch' || input.kind.arg === 'optional' ? 'boolean' : 'string',
      multiple: input.kind.arg === 'repeated',
    };
  }
  const { values, positionals } = readFlags(command, argv, options, optionalValue);

  const raw: RawSettings = {};
  if (typeof values.config === 'string' && configFile !== false) {
    const file = readConfigFile(values.config);
    refuseUnknownKeys(configFile, file);
    for (const [field, setting] of Object.entries(table))
      for (const { key } of inputsOf(field, setting)) if (key in file) raw[key] = file[key];
  }
  // A flag replaces whatever the file said for its setting, under any of the setting's keys.
  const flagged = [...byFlag].filter(([flag]) => values[flag] !== undefined);
  for (const [, { field }] of flagged) for (const { key } of inputsOf(field, table[field]!)) delete raw[key];
  for (const [flag, { input }] of flagged) raw[input.key] = values[flag];
  return { raw, positionals, help: values.help === true };
}

/**
 * node:util parseArgs, with the refusals stated our way: an unknown option (with the nearest known one),
 * a missing or empty value, a value on a switch, a single-valued option given twice.
 */
function readFlags(
  command: string,
  argv: string[],
  options: Options,
  optionalValue: ReadonlySet<string> = new Set(),
): { values: Record<string, unknown>; positionals: string[] } {
  const usage: (problem: string) => never = (problem) => {
    throw facadeError('CLI_USAGE', [problem, command]);
  };
  const { tokens } = parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true });
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token.kind === 'positional') positionals.push(token.value);
    if (token.kind !== 'option') continue;
    const option = options[token.name];
    if (option === undefined) {
      const near = suggestion(token.name, Object.keys(options));
      usage(`unknown option "${token.rawName}"${near === undefined ? '' : `; did you mean "--${near}"?`}`);
    }
    if (optionalValue.has(token.name)) {
      if (values[token.name] !== undefined) usage(`option ${token.rawName} given twice`);
      // `--nat=eth0`, `--nat eth0` (the very next argument, not an option), or `--nat` alone (true).
      const next = tokens[i + 1];
      if (token.value !== undefined) {
        if (token.value === '') usage(`option ${token.rawName} needs a value after "="`);
        values[token.name] = token.value;
      } else if (next?.kind === 'positional' && next.index === token.index + 1) {
        values[token.name] = next.value;
        i++;
      } else values[token.name] = true;
      continue;
    }
    if (option.type === 'boolean') {
      if (token.value !== undefined) usage(`option ${token.rawName} takes no value`);
      values[token.name] = true;
      continue;
    }
    if (token.value === undefined || token.value === '') usage(`option ${token.rawName} needs a value`);
    const before = values[token.name];
    if (option.multiple) values[token.name] = [...((before as string[] | undefined) ?? []), token.value];
    else if (before !== undefined) usage(`option ${token.rawName} given twice`);
    else values[token.name] = token.value;
  }
  return { values, positionals };
}

function readConfigFile(path: string): RawSettings {
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
