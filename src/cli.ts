#!/usr/bin/env node
// facade: one binary, two modes. `facade server` serves a website and tunnels for those who know the way in;
// `facade client` connects to it. Commands: server, client, user, init, status.

const HELP = `facade — a VPN whose server is an ordinary HTTPS website

Usage:
  facade server [options]                 serve the decoy site on HTTPS and accept tunnels
  facade client https://HOST[:PORT]/PATH  connect to a facade server
  facade user add|del|list NAME --users FILE
  facade init                             write a starter config
  facade status                           show the running server's sessions

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
    case 'server':
    case 'client':
    case 'user':
    case 'init':
    case 'status':
      process.stderr.write(`facade ${command}: not yet implemented (${rest.length} arguments ignored)\n`);
      return 2;
    default:
      process.stderr.write(`facade: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`facade: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
