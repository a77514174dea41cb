// `facade client URL`: one tunnel to a server, reconnecting, until a signal or a fatal refusal stops it.

import { TunnelClient } from '../client/client.js';
import { CLIENT_SETTINGS, validateClientConfig } from '../config/client-settings.js';
import { renderHelp } from '../config/help.js';
import { loadSettings } from '../config/load.js';
import { createLogger } from '../core/log.js';
import { TunDevice } from '../net/tun.js';
import { untilSignal } from './until-signal.js';

export async function runClient(argv: string[]): Promise<number> {
  const { raw, positionals, help } = loadSettings('client', CLIENT_SETTINGS, argv);
  if (help) {
    process.stdout.write(
      `Usage: facade client https://HOST[:PORT]/PATH [--config FILE] [options]\n\n${renderHelp(CLIENT_SETTINGS)}\n`,
    );
    return 0;
  }
  // The URL argument, like a flag, wins over the file.
  const config = validateClientConfig(positionals[0] === undefined ? raw : { ...raw, url: positionals[0] });
  const logger = createLogger({ level: config.logLevel });
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
