// What --help and the README say about each setting, taken from the table so neither can drift.

import { inputsOf, type SettingsTable, settingKey } from './setting.js';

export interface SettingDescription {
  readonly key: string;
  /** `--pool CIDR`, `--no-offload`; or the command argument; empty for a file-only setting. */
  readonly flags: string[];
  readonly type: string;
  readonly required: boolean;
  /** As a user would write it; none for an empty list or a switch that is off. */
  readonly shownDefault: string | undefined;
  readonly help: string;
  /** `keepaliveMs: the same in milliseconds` */
  readonly aliases: { key: string; help: string }[];
}

export function describeSettings(table: SettingsTable): SettingDescription[] {
  return Object.entries(table).map(([field, setting]) => {
    const flags = inputsOf(field, setting).flatMap((input) => {
      if (input.flag === undefined) return [];
      if (input.kind.arg === 'switch') return [`--${input.flag}`];
      if (input.kind.arg === 'optional') return [`--${input.flag} [${input.kind.type}]`];
      return [`--${input.flag} ${input.kind.type}`];
    });
    if (setting.argument !== undefined) flags.unshift(setting.argument);
    const shown = setting.shownDefault;
    return {
      key: settingKey(field, setting),
      flags,
      type: setting.kind.type,
      required: setting.required === true,
      shownDefault: shown === '' || shown === 'false' ? undefined : shown,
      help: setting.help,
      aliases: (setting.aliases ?? []).map(({ key, help }) => ({ key, help })),
    };
  });
}
