// `facade server`: the website and the tunnels, until a signal stops them.

import { renderHelp } from '../config/help.js';
import { loadSettings } from '../config/load.js';
import { SERVER_SETTINGS, validateServerConfig } from '../config/server-settings.js';
import { exitCodeFor, isFacadeError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { startServer } from '../server/server.js';
import { untilSignal } from './until-signal.js';

export async function runServer(argv: string[]): Promise<number> {
  const { raw, help } = loadSettings('server', SERVER_SETTINGS, argv);
  if (help) {
    process.stdout.write(
      `Usage: facade server [--config FILE] [options]\n\n${renderHelp(SERVER_SETTINGS)}\n`,
    );
    return 0;
  }
  const config = validateServerConfig(raw);
  const logger = createLogger({ level: config.logLevel });
  const server = await startServer(config, logger);
  // SIGHUP: renew the ACME certificate now (an operator's "reload"); the old one serves until it succeeds.
  process.on('SIGHUP', () => {
    if (server.certificates === undefined) {
      logger.info('SIGHUP: nothing to renew (no ACME certificate)');
      return;
    }
    logger.info('SIGHUP: renewing the certificate now');
    server.certificates.renewNow().catch((err: unknown) => {
      logger.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'forced renewal failed; the old certificate keeps serving',
      );
    });
  });
  // Until a signal, or until the server fails on its own (its TUN was removed): then it exits non-zero.
  const failure = await Promise.race([untilSignal(logger).then(() => undefined), server.failed]);
  await server.close();
  if (failure === undefined) return 0;
  logger.fatal(
    { err: isFacadeError(failure) ? failure.code : undefined },
    `server stopped: ${failure.message}`,
  );
  return exitCodeFor(failure);
}
