// Preloaded into the real `facade server` by test/netns/acme-tunnel.test.ts (NODE_OPTIONS=--import=...).
// acme-client retries a request that got no response 5 times, waiting 5 s x attempt (75 s in all), so a
// forced renewal against a stopped CA would only report its failure after more than a minute. This sets
// the process-wide count to 0, as CertificateManager's `requestRetries: 0` does in test/netns/acme.test.ts;
// the server is otherwise unchanged (same module instance: ESM caches acme-client by its resolved path).

import { axios } from 'acme-client';

(axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings.retryMaxAttempts =
  0;
