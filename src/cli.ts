#!/usr/bin/env node
// facade: one binary, two modes. `facade server` serves a website and tunnels for those who know the way in;
// `facade client` connects to it. This file only picks the command; each lives in src/commands/.

import { exitCodeFor, FacadeError } from './core/errors.js';

const HELP = `facade — a VPN whose server is an ordinary HTTPS website

Usage:
  facade init [--dir DIR] [--host NAME_OR_IP[:PORT]]
                                          write a starter config, users file and secret tunnel path,
                                          and print the first user's invite
  facade server [options]                 serve the decoy site on HTTPS and accept tunnels
  facade client https://HOST[:PORT]/PATH  connect to a facade server
  facade client --invite LINK [--save FILE]
  facade user add|invite|del|list NAME --config FILE
  facade status [--state-dir DIR]         show the running server's sessions

Run \`facade COMMAND --help\` for the options of one command.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(HELP);
      return 0;
    // Each command is loaded when asked for: `facade user` need not load the server's web stack.
    case 'server':
      return (await import('./commands/server.js')).runServer(rest);
    case 'client':
      return (await import('./commands/client.js')).runClient(rest);
    case 'user':
      return (await import('./commands/user.js')).runUserCommand(rest, {
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
      });
    case 'init':
      return (await import('./commands/init.js')).runInit(rest);
    case 'status':
      return (await import('./commands/status.js')).runStatus(rest);
    default:
      process.stderr.write(`facade: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Everything of ours is closed by now; a third-party timer (acme-client's uncancellable retry wait)
    // must not hold a stopping server for a minute. Give pino's last lines a moment to drain.
    if (process.argv[2] === 'server' || process.argv[2] === 'client')
      setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => {
    const code = err instanceof FacadeError ? ` [${err.code}]` : '';
    // Exit once the message is out: a handle left open by a half-started server must not keep a failed
    // process alive.
    const exitCode = exitCodeFor(err);
    process.exitCode = exitCode;
    process.stderr.write(`facade: ${err instanceof Error ? err.message : String(err)}${code}\n`, () =>
      process.exit(exitCode),
    );
  },
);
