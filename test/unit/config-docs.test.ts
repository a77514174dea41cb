// --help and the README's settings tables come from the same definitions as the parser and validation.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CLIENT_SETTINGS } from '../../src/config/client-settings.js';
import { renderHelp } from '../../src/config/help.js';
import { SERVER_SETTINGS } from '../../src/config/server-settings.js';
import { inputsOf, type SettingsTable } from '../../src/config/setting.js';
import {
  renderSettingsMarkdown,
  replaceSettingsBlock,
  SETTINGS_END,
  SETTINGS_START,
} from '../../src/config/settings-markdown.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));
const tables: Array<[string, SettingsTable]> = [
  ['server', SERVER_SETTINGS],
  ['client', CLIENT_SETTINGS],
];

/** Every key and flag a table answers to. */
function names(table: SettingsTable): { keys: string[]; flags: string[] } {
  const inputs = Object.entries(table).flatMap(([field, setting]) => inputsOf(field, setting));
  return {
    keys: inputs.map((input) => input.key),
    flags: inputs.flatMap((input) => (input.flag === undefined ? [] : [`--${input.flag}`])),
  };
}

test('the README settings block is what `npm run docs:settings` writes', () => {
  const readme = readFileSync(README, 'utf8');
  assert.equal(
    replaceSettingsBlock(readme, renderSettingsMarkdown()),
    readme,
    'the README settings tables are out of date: run `npm run docs:settings`',
  );
});

test('every key and flag appears in --help and in the README table', () => {
  const readme = readFileSync(README, 'utf8');
  const block = readme.slice(readme.indexOf(SETTINGS_START), readme.indexOf(SETTINGS_END));
  for (const [mode, table] of tables) {
    const help = renderHelp(table);
    const { keys, flags } = names(table);
    for (const key of keys) {
      assert.match(help, new RegExp(`\\b${key}\\b`), `${mode} --help lacks config key ${key}`);
      assert.ok(block.includes(`\`${key}\``), `README lacks ${mode} config key ${key}`);
    }
    for (const flag of flags) {
      assert.ok(help.includes(flag), `${mode} --help lacks ${flag}`);
      assert.ok(block.includes(`\`${flag}`), `README lacks ${mode} flag ${flag}`);
    }
  }
});

test('a README without the markers is refused rather than rewritten', () => {
  assert.throws(() => replaceSettingsBlock('# facade\n', 'tables'), /settings:start/);
});
