// The options part of `facade COMMAND --help`, one line per setting.

import { describeSettings } from './describe.js';
import type { SettingsTable } from './setting.js';

/** `configFile`: whether the command reads a config file, so that naming the keys is of any use. */
export function renderHelp(table: SettingsTable, { configFile = true } = {}): string {
  const rows = describeSettings(table).map((setting) => {
    const notes = [
      ...(setting.required ? ['required'] : []),
      ...(setting.shownDefault === undefined ? [] : [`default ${setting.shownDefault}`]),
      ...(configFile ? [`config key ${setting.key}`] : []),
      ...setting.aliases.map((alias) => `${alias.key}: ${alias.help}`),
    ];
    const right = notes.length === 0 ? setting.help : `${setting.help} (${notes.join('; ')})`;
    return { left: setting.flags.join(', ') || '(config file only)', right };
  });
  const width = Math.max(...rows.map((row) => row.left.length)) + 2;
  return rows.map((row) => `  ${row.left.padEnd(width)}${row.right}`).join('\n');
}
