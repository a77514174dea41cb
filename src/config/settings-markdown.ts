// The README's settings tables, generated from the definitions, and their place between two markers.

import { CLIENT_SETTINGS } from './client-settings.js';
import { describeSettings } from './describe.js';
import { SERVER_SETTINGS } from './server-settings.js';
import type { SettingsTable } from './setting.js';

export const SETTINGS_START = '<!-- settings:start -->';
export const SETTINGS_END = '<!-- settings:end -->';

/** Both modes' tables, as they stand between the markers. */
export function renderSettingsMarkdown(): string {
  return [
    '### `facade server`',
    '',
    renderTable(SERVER_SETTINGS),
    '',
    '### `facade client`',
    '',
    renderTable(CLIENT_SETTINGS),
  ].join('\n');
}

function renderTable(table: SettingsTable): string {
  const rows = describeSettings(table).map((setting) => {
    const keys = [setting.key, ...setting.aliases.map((alias) => alias.key)].map(code).join(', ');
    const flags = setting.flags.map(code).join(', ');
    const value = [
      code(setting.type),
      ...(setting.required ? ['required'] : []),
      ...(setting.shownDefault === undefined ? [] : [`default ${code(setting.shownDefault)}`]),
    ].join(', ');
    const meaning = [
      setting.help,
      ...setting.aliases.map((alias) => `${code(alias.key)}: ${alias.help}`),
    ].join('; ');
    return `| ${[keys, flags, value, meaning].map(cell).join(' | ')} |`;
  });
  return ['| config key | flag | value | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

function code(text: string): string {
  return `\`${text}\``;
}

/** A pipe would end the cell, even inside backticks. */
function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

/** `readme` with the text between the markers replaced by `block`; refuses a README without the markers. */
export function replaceSettingsBlock(readme: string, block: string): string {
  const start = readme.indexOf(SETTINGS_START);
  const end = readme.indexOf(SETTINGS_END);
  if (start === -1 || end < start) throw new Error(`README has no ${SETTINGS_START} … ${SETTINGS_END} block`);
  return `${readme.slice(0, start + SETTINGS_START.length)}\n${block}\n${readme.slice(end)}`;
}
