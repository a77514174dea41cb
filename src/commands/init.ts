// `facade init`: a starter config with a random secret tunnel path, an empty users file, the next steps.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { renderHelp } from '../config/help.js';
import { text } from '../config/kinds.js';
import { loadSettings } from '../config/load.js';
import { resolveSettings, withDefault } from '../config/setting.js';
import { UsersFile } from '../users/users-file.js';

const INIT_SETTINGS = {
  dir: withDefault(text('DIR'), '.', { flag: 'dir', help: 'where to write facade.json and users.json' }),
};

export async function runInit(argv: string[]): Promise<number> {
  const { raw, help } = loadSettings('init', INIT_SETTINGS, argv);
  if (help) {
    process.stdout.write(`Usage: facade init [--dir DIR]\n\n${renderHelp(INIT_SETTINGS)}\n`);
    return 0;
  }
  const dir = resolve(resolveSettings(INIT_SETTINGS, raw).dir);
  const configPath = resolve(dir, 'facade.json');
  if (existsSync(configPath)) {
    process.stderr.write(`facade init: ${configPath} exists; not overwriting it\n`);
    return 1;
  }
  const tunnelPath = `/${randomBytes(12).toString('base64url')}`;
  const config = {
    listen: '0.0.0.0:443',
    pool: '10.89.0.0/24',
    users: resolve(dir, 'users.json'),
    tunnelPath,
    stateDir: resolve(dir, 'state'),
  };
  await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  // The users file records the tunnel path's realm: the users' keys are derived from the path.
  const users = await UsersFile.load(config.users, { allowMissing: true, tunnelPath });
  await users.save();
  process.stdout.write(
    `wrote ${configPath} (secret tunnel path ${tunnelPath})\n\n` +
      `next:\n  echo 'a-long-password' | npx facade user add alice --config ${configPath}\n` +
      `  sudo npx facade server --config ${configPath}\n` +
      `  # on a client: sudo npx facade client https://SERVER${tunnelPath} --user alice --password-file FILE --pin <fingerprint the server logs>\n`,
  );
  return 0;
}
