// `facade status`: the running server's sessions, asked over its admin socket (server/admin-socket.ts);
// when no server answers, says so and shows the last snapshot it wrote (status.json), marked as such.

import { resolve } from 'node:path';
import { renderHelp } from '../config/help.js';
import { onOff } from '../config/kinds.js';
import { loadSettings } from '../config/load.js';
import { SERVER_SETTINGS } from '../config/server-settings.js';
import { resolveSettings, withDefault } from '../config/setting.js';
import { adminSocketPath, askStatus } from '../server/admin-socket.js';
import { readStatusFile, type StatusSnapshot } from '../server/status.js';
import { formatBytes } from '../users/policy.js';

// The server's own setting, so the default and a `--config` server file agree with the server.
const STATUS_SETTINGS = {
  stateDir: SERVER_SETTINGS.stateDir,
  json: withDefault(onOff, false, { flag: 'json', help: 'print the status as one JSON object' }),
};

export async function runStatus(argv: string[]): Promise<number> {
  const { raw, help } = loadSettings('status', STATUS_SETTINGS, argv, { configFile: SERVER_SETTINGS });
  if (help) {
    process.stdout.write(
      `Usage: facade status [--state-dir DIR] [--json]\n\n${renderHelp(STATUS_SETTINGS)}\n`,
    );
    return 0;
  }
  const { stateDir, json } = resolveSettings(STATUS_SETTINGS, raw);
  const dir = resolve(stateDir);
  let live: StatusSnapshot | undefined;
  try {
    live = await askStatus(dir);
  } catch (err) {
    process.stderr.write(`facade status: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  if (live !== undefined) {
    process.stdout.write(json ? `${JSON.stringify({ running: true, ...live })}\n` : render(live));
    return 0;
  }
  // Nothing answers: no server runs with this state directory. Its last snapshot, if any, says what was.
  const last = await readStatusFile(dir);
  if (json) {
    process.stdout.write(`${JSON.stringify({ running: false, lastKnown: last ?? null })}\n`);
    return 1;
  }
  process.stdout.write(
    `no facade server is running with --state-dir ${stateDir} (nothing answers at ${adminSocketPath(dir)})\n`,
  );
  if (last !== undefined) {
    process.stdout.write(
      `last known status, written ${last.updated} by pid ${last.pid} before it stopped:\n`,
    );
    process.stdout.write(render(last));
  }
  return 1;
}

function render(status: StatusSnapshot): string {
  const lines = [
    `server pid ${status.pid}, listening on ${status.listen}, TUN ${status.tun}, as of ${status.updated}`,
  ];
  if (status.workers !== undefined)
    lines.push(
      `${status.workers.length} workers: ${status.workers
        .map(
          (w) =>
            `#${w.index} pid ${w.pid ?? '-'} ${w.ready ? 'serving' : 'starting'}${w.restarts > 0 ? ` (restarted ${w.restarts}×)` : ''}`,
        )
        .join(', ')}`,
    );
  lines.push(`${status.sessions.length} session(s)`);
  const now = Date.now();
  for (const s of status.sessions) {
    const seen =
      s.lastSeen === undefined
        ? ''
        : `  last seen ${Math.max(0, Math.round((now - Date.parse(s.lastSeen)) / 1000))} s ago`;
    lines.push(
      `  ${s.user}  ${s.ipv4}${s.ipv6 === undefined ? '' : ` ${s.ipv6}`}  from ${s.remote} (${s.transport})  since ${s.since}  in ${s.bytesIn} B  out ${s.bytesOut} B${seen}${s.worker === undefined ? '' : `  worker ${s.worker}`}`,
    );
  }
  // Accounting (UTC days), in + out, for users who used anything or have a quota.
  const usage = Object.entries(status.usage ?? {}).filter(
    ([, u]) => u.quotaBytes !== undefined || u.month.bytesIn + u.month.bytesOut > 0,
  );
  if (usage.length > 0) lines.push('usage (UTC; in + out)');
  for (const [user, u] of usage) {
    const quota =
      u.quotaBytes === undefined
        ? ''
        : `  quota ${formatBytes(u.quotaUsed ?? 0)} of ${formatBytes(u.quotaBytes)} this ${u.quotaPeriod}`;
    lines.push(
      `  ${user}  today ${formatBytes(u.today.bytesIn + u.today.bytesOut)}  month ${formatBytes(u.month.bytesIn + u.month.bytesOut)}${quota}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
