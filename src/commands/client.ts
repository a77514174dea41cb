// `facade client URL` (or `--invite LINK`): one tunnel to a server, reconnecting, until a signal or a fatal
// refusal stops it. `--save FILE` keeps the settings of this run, an invite's key among them, for later
// runs (`--config FILE`, the systemd unit facade-client@NAME).

import { TunnelClient } from '../client/client.js';
import { CLIENT_SETTINGS, validateClientConfig } from '../config/client-settings.js';
import { renderHelp } from '../config/help.js';
import { text } from '../config/kinds.js';
import { loadSettings } from '../config/load.js';
import type { ClientConfig } from '../config/schema.js';
import { optional, type RawSettings, resolveSettings } from '../config/setting.js';
import { PRIVATE_FILE_MODE, writeFileAtomic } from '../core/atomic-file.js';
import { facadeError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { TunDevice } from '../net/tun.js';
import { untilSignal } from './until-signal.js';

/** What the command takes besides the client's settings: where to keep them (never a key of the file). */
const COMMAND_SETTINGS = {
  ...CLIENT_SETTINGS,
  save: optional(text('FILE'), {
    flag: 'save',
    help: 'write the settings of this run (with the invite expanded: server, user, key, pin) to FILE, mode 0600, for later runs with --config FILE; then connect',
  }),
};

export async function runClient(argv: string[]): Promise<number> {
  const { raw, positionals, help } = loadSettings('client', COMMAND_SETTINGS, argv, {
    configFile: CLIENT_SETTINGS,
  });
  if (help) {
    process.stdout.write(
      `Usage: facade client https://HOST[:PORT]/PATH [--config FILE] [options]\n` +
        `       facade client --invite LINK [--save FILE] [options]\n\n${renderHelp(COMMAND_SETTINGS)}\n`,
    );
    return 0;
  }
  if (positionals.length > 1)
    throw facadeError('CLI_USAGE', [`unexpected argument "${positionals[1]}"`, 'client']);
  const { save } = resolveSettings({ save: COMMAND_SETTINGS.save }, { save: raw.save });
  const { save: _save, ...settings } = raw;
  // The URL argument, like a flag, wins over the file.
  const given = positionals[0] === undefined ? settings : { ...settings, url: positionals[0] };
  const config = validateClientConfig(given);
  // An invite given on the command line shows in `ps` while we run: our own copy of it goes at least.
  if (raw.invite !== undefined) process.title = 'facade client';
  const logger = createLogger({ level: config.logLevel, format: config.logFormat });
  if (save !== undefined) {
    await saveClientConfig(save, given, config);
    logger.info(
      { file: save },
      `settings saved to ${save} (mode 0600; it holds the key): later, facade client --config ${save}`,
    );
  }
  if (config.plaintext)
    logger.warn('PLAINTEXT MODE: no TLS. Everything crosses the network in clear. Debugging only.');
  const client = new TunnelClient({
    config,
    logger,
    openTun: ({ vnetHdr }) => TunDevice.open({ name: config.tunName, vnetHdr }),
  });
  await client.start();
  await Promise.race([untilSignal(logger), client.done]);
  await client.stop();
  return client.fatalError === undefined ? 0 : 1;
}

/**
 * The settings of this run as a client config file: what was given (file and flags), with an invite
 * expanded into the settings it stands for, so the file reads and edits like any other.
 */
async function saveClientConfig(path: string, given: RawSettings, config: ClientConfig): Promise<void> {
  const { invite, ...rest } = given;
  const file: RawSettings =
    invite === undefined
      ? { ...rest, url: config.url.href }
      : { url: config.url.href, user: config.user, key: config.key, pin: config.pin, ...rest };
  for (const [key, value] of Object.entries(file)) if (value === undefined) delete file[key];
  try {
    await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`, PRIVATE_FILE_MODE);
  } catch (err) {
    throw facadeError('CONFIG_WRITE', [path, err instanceof Error ? err.message : String(err)]);
  }
}
