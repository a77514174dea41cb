// `facade server`: the website and the tunnels, until a signal stops them.

import { renderHelp } from '../config/help.js';
import { loadSettings } from '../config/load.js';
import type { ServerConfig } from '../config/schema.js';
import { SERVER_SETTINGS, validateServerConfig } from '../config/server-settings.js';
import { exitCodeFor, isFacadeError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/log.js';
import { type RunningServer, startServer } from '../server/server.js';
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
  const logger = createLogger({ level: config.logLevel, format: config.logFormat });
  // Listening for SIGINT/SIGTERM from before start-up: one that comes while the server starts stops it
  // as soon as it is up, instead of killing the process half way (the default action).
  const stopRequested = untilSignal(logger);
  const server = await startServer(config, logger);
  // SIGHUP: the operator's reload. The config file and flags are read again and what can change without
  // dropping a session is applied (server.ts's reload says which); the ACME certificate is renewed now.
  process.on('SIGHUP', () => {
    void onReload(argv, server, logger);
  });
  // Until a signal, or until the server fails on its own (its TUN was removed): then it exits non-zero.
  const failure = await Promise.race([stopRequested.then(() => undefined), server.failed]);
  await server.close();
  if (failure === undefined) return 0;
  logger.fatal(
    { err: isFacadeError(failure) ? failure.code : undefined },
    `server stopped: ${failure.message}`,
  );
  return exitCodeFor(failure);
}

async function onReload(argv: string[], server: RunningServer, logger: Logger): Promise<void> {
  let next: ServerConfig;
  try {
    next = validateServerConfig(loadSettings('server', SERVER_SETTINGS, argv).raw);
  } catch (err) {
    logger.warn(
      { err: err instanceof Error ? err.message : String(err) },
      'SIGHUP: the configuration has a problem; nothing changed, the running settings stay',
    );
    return;
  }
  const { applied, needsRestart } = await server.reload(next);
  logger.info(
    { applied, needsRestart },
    `SIGHUP: configuration reloaded; ${applied.length === 0 ? 'nothing to apply' : `applied ${applied.join(', ')}`}${
      needsRestart.length === 0 ? '' : `; needs a restart: ${needsRestart.join(', ')}`
    }`,
  );
  if (server.certificates === undefined) return;
  logger.info('SIGHUP: renewing the certificate now');
  await server.certificates.renewNow().catch((err: unknown) => {
    logger.warn(
      { err: err instanceof Error ? err.message : String(err) },
      'forced renewal failed; the old certificate keeps serving',
    );
  });
}
