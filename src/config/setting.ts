// One setting, defined once: config key, flag, kind, default, help, and the older keys it also answers
// to. A table of them (field name → setting) is all the flag parser, the validation, --help and the README
// need; resolveSettings turns raw settings into the typed values the table describes.

import { isDeepStrictEqual } from 'node:util';
import { facadeError } from '../core/errors.js';
import { type Kind, problem, SettingProblem } from './kinds.js';
import { suggestion } from './suggest.js';

/** Raw settings as a JSON file merged with flags gives them: keys not yet checked, values not yet read. */
export type RawSettings = Record<string, unknown>;

/** Another key for the same setting, kept because config files in use have it. */
export interface Alias<T> {
  readonly key: string;
  readonly flag?: string;
  /** undefined: the value leaves the setting alone (`noOffload: false`). */
  readonly kind: Kind<T | undefined>;
  readonly help: string;
}

export interface Setting<T> {
  /** camelCase config key; the table's field name when not given. */
  readonly key?: string;
  readonly flag?: string;
  /** Shown instead of a flag for a value given as a command argument (the client's URL). */
  readonly argument?: string;
  readonly kind: Kind<T>;
  readonly help: string;
  readonly aliases?: readonly Alias<T>[];
  /** The default as a user would write it, for --help and the README. */
  readonly shownDefault?: string;
  readonly required?: boolean;
  /** The value when no source gives one: the default, undefined, or a refusal. */
  readonly absent: () => T;
}

export type SettingsTable = Readonly<Record<string, Setting<unknown>>>;

export type Values<T extends SettingsTable> = { -readonly [F in keyof T]: ReturnType<T[F]['absent']> };

/** One way to give a setting: its own key or an alias. */
export interface Input {
  readonly key: string;
  readonly flag?: string | undefined;
  readonly kind: Kind<unknown>;
}

type Describe<T> = Pick<Setting<T>, 'key' | 'flag' | 'argument' | 'help' | 'aliases'>;

export function optional<T>(kind: Kind<T>, describe: Describe<T>): Setting<T | undefined> {
  return { ...describe, kind, absent: () => undefined };
}

/** `hint` says what the value is for, in the refusal when it is missing. */
export function required<T>(kind: Kind<T>, hint: string, describe: Describe<T>): Setting<T> {
  return { ...describe, kind, required: true, absent: () => problem(`is required: ${hint}`) };
}

/** `fallback` is written as a user would write it and read like one. */
export function withDefault<T>(
  kind: Kind<T>,
  fallback: string | number | boolean,
  describe: Describe<T>,
): Setting<T> {
  return { ...describe, kind, shownDefault: String(fallback), absent: () => kind.read(fallback) };
}

export function settingKey(field: string, setting: Setting<unknown>): string {
  return setting.key ?? field;
}

/** The setting's own key first, then its aliases. */
export function inputsOf(field: string, setting: Setting<unknown>): Input[] {
  return [
    { key: settingKey(field, setting), flag: setting.flag, kind: setting.kind },
    ...(setting.aliases ?? []),
  ];
}

/** Turns what a reader found wrong into the error the user sees. */
export type Blame = (input: Input, problem: string) => Error;

export function invalid(key: string, problem: string): never {
  throw facadeError('CONFIG_INVALID', [key, problem]);
}

const blameConfigKey: Blame = (input, text) => facadeError('CONFIG_INVALID', [input.key, text]);

/** Refuses a key no setting of `table` answers to, suggesting the nearest one. */
export function refuseUnknownKeys(table: SettingsTable, raw: RawSettings): void {
  const known = Object.entries(table).flatMap(([field, setting]) =>
    inputsOf(field, setting).map((input) => input.key),
  );
  for (const key of Object.keys(raw)) {
    if (known.includes(key)) continue;
    const near = suggestion(key, known);
    invalid(key, `is not a setting${near === undefined ? '' : `; did you mean "${near}"?`}`);
  }
}

/**
 * Reads every setting of `table` from `raw` (null counts as not given). A setting given under two of its
 * keys must say the same under both: which one should win is not for us to guess.
 */
export function resolveSettings<T extends SettingsTable>(
  table: T,
  raw: RawSettings,
  blame: Blame = blameConfigKey,
): Values<T> {
  refuseUnknownKeys(table, raw);
  const values: Record<string, unknown> = {};
  for (const [field, setting] of Object.entries(table)) {
    let found: { input: Input; value: unknown } | undefined;
    for (const input of inputsOf(field, setting)) {
      const given = raw[input.key];
      if (given === undefined || given === null) continue;
      const value = blamed(input, blame, () => input.kind.read(given));
      if (value === undefined) continue;
      if (found !== undefined && !isDeepStrictEqual(found.value, value))
        throw blame(input, `says otherwise than "${found.input.key}"; keep one of them`);
      found = { input, value };
    }
    const own = inputsOf(field, setting)[0]!;
    values[field] = found === undefined ? blamed(own, blame, setting.absent) : found.value;
  }
  return values as Values<T>;
}

function blamed<T>(input: Input, blame: Blame, reader: () => T): T {
  try {
    return reader();
  } catch (err) {
    if (err instanceof SettingProblem) throw blame(input, err.message);
    throw err;
  }
}
