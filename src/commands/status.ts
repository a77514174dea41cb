// `facade status`: the running server's sessions, from the status file it keeps in its state directory.

import { resolve } from 'node:path';
import { renderHelp } from '../config/help.js';
import { loadSettings } from '../config/load.js';
import { SERVER_SETTINGS } from '../config/server-settings.js';
import { resolveSettings } from '../config/setting.js';
import { readStatusFile, statusPath } from '../server/status.js';

// The server's own setting, so the default and a `--config` server file agree with the server.
const STATUS_SETTINGS = { stateDir: SERVER_SETTINGS.stateDir };

export async function runStatus(argv: string[]): Promise<number> {
  const { raw, help } = loadSettings('status', STATUS_SETTINGS, argv, { configFile: SERVER_SETTINGS });
  if (help) {
    process.stdout.write(`Usage: facade status [--state-dir DIR]\n\n${renderHelp(STATUS_SETTINGS)}\n`);
    return 0;
  }
  const { stateDir } = resolveSettings(STATUS_SETTINGS, raw);
  const path = statusPath(resolve(stateDir));
  const status = await readStatusFile(resolve(stateDir));
  if (status === undefined) {
    process.stderr.write(
      `facade status: no status at ${path}: is the server running with --state-dir ${stateDir}?\n`,
    );
    return 1;
  }
  let alive = true;
  try {
    process.kill(status.pid, 0);
  } catch {
    alive = false;
  }
  process.stdout.write(
    `server pid ${status.pid} ${alive ? 'running' : 'NOT running'}, listening on ${status.listen}, updated ${status.updated}\n`,
  );
  process.stdout.write(`${status.sessions.length} session(s)\n`);
  for (const s of status.sessions) {
    process.stdout.write(
      `  ${s.user}  ${s.ipv4}  from ${s.remote} (${s.transport})  since ${s.since}  in ${s.bytesIn} B  out ${s.bytesOut} B\n`,
    );
  }
  return 0;
}
