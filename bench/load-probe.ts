// Bench instrumentation preloaded into a server under test (bench/load.sh starts it with
// `node --expose-gc --import dist/bench/load-probe.js dist/src/cli.js server ...`). Changes nothing in the
// server: on SIGUSR2 it runs a full collection (when --expose-gc is given) and writes the process's memory
// figures as JSON to the file named by FACADE_LOAD_PROBE (written to a temporary name, then renamed), so the
// load tool can split the server's RSS into V8 heap, external memory and the rest. Without the variable it
// does nothing at all.

import { renameSync, writeFileSync } from 'node:fs';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';

const out = process.env.FACADE_LOAD_PROBE;
if (out !== undefined && out !== '') {
  let seq = 0;
  process.on('SIGUSR2', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    const before = process.memoryUsage().rss;
    gc?.();
    const usage = process.memoryUsage();
    const heap = getHeapStatistics();
    const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_used_size]));
    const report = {
      seq: ++seq,
      at: Date.now(),
      gc: gc !== undefined,
      rssBeforeGc: before,
      ...usage,
      mallocedMemory: heap.malloced_memory,
      totalHeapSize: heap.total_heap_size,
      nativeContexts: heap.number_of_native_contexts,
      spaces,
    };
    try {
      writeFileSync(`${out}.tmp`, JSON.stringify(report));
      renameSync(`${out}.tmp`, out);
    } catch {
      // A probe that cannot write says nothing; the load tool notices the missing file.
    }
  });
}
