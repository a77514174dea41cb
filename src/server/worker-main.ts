// The entry point the primary forks for each worker of `facade server --workers N` (worker.ts).
import { runWorker } from './worker.js';

runWorker().catch((err: unknown) => {
  process.stderr.write(
    `facade worker failed to start: ${err instanceof Error ? err.message : String(err)}\n`,
  );
  process.exit(1);
});
