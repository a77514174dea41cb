// The tunnel engine's settings and its front's options from the server's config: one place for the
// single process (server.ts) and each worker (worker.ts).

import type { ServerConfig } from '../config/schema.js';
import type { Logger } from '../core/log.js';
import type { EngineOptions } from '../engine/engine.js';
import type { TunnelHost } from '../front/acceptor.js';
import type { FrontOptions } from '../front/front.js';
import { createAuthenticator, type LoginCounters } from '../users/authenticator.js';
import type { UsersFile } from '../users/users-file.js';
import type { PolicyAgent } from './policy-agent.js';

export function engineSettings(
  config: ServerConfig,
): Pick<EngineOptions, 'mtu' | 'keepaliveMs' | 'clientToClient' | 'routes' | 'dns' | 'dnsDomains'> {
  const { mtu, keepaliveMs, clientToClient, routes, dns, dnsDomains } = config;
  return { mtu, keepaliveMs, clientToClient, routes, dns, dnsDomains };
}

/**
 * The site and its tunnel transports, handing sessions to `host`. `policy` is read at each login (the
 * agent starts after the engine it watches); `logins` counts the answers for metrics.
 */
export function frontSettings(
  config: ServerConfig,
  parts: {
    readonly tls: FrontOptions['tls'];
    readonly users: UsersFile;
    readonly policy: () => PolicyAgent | undefined;
    readonly logins: LoginCounters;
    readonly host: TunnelHost;
    readonly logger: Logger;
  },
): FrontOptions {
  return {
    siteDir: config.site,
    upstream: config.upstream,
    tls: parts.tls,
    tunnelPath: config.tunnelPath,
    authenticate: createAuthenticator(parts.users, {
      isBlocked: (user) => parts.policy()?.isBlocked(user) ?? false,
      counters: parts.logins,
    }),
    host: parts.host,
    logger: parts.logger,
    behindProxy: config.behindProxy !== undefined,
  };
}
