// The tunnel engine's settings from the server's config: one place for the engine of a single process
// (server.ts) and that of each worker (worker.ts).

import type { ServerConfig } from '../config/schema.js';
import type { EngineOptions } from '../engine/engine.js';

export function engineSettings(
  config: ServerConfig,
): Pick<EngineOptions, 'mtu' | 'keepaliveMs' | 'clientToClient' | 'routes' | 'dns' | 'dnsDomains'> {
  const { mtu, keepaliveMs, clientToClient, routes, dns, dnsDomains } = config;
  return { mtu, keepaliveMs, clientToClient, routes, dns, dnsDomains };
}
