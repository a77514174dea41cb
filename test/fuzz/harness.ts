// Shared plumbing of the fuzz properties (fast-check): how many inputs a run tries, which seed it starts
// from, and the inputs/second figure each property reports.
//
//   npm test                                   a short run of every property (a few seconds per target)
//   FACADE_FUZZ_RUNS=2500000 node --test dist/test/fuzz/*.test.js
//                                              the long run: that many inputs per target (docs/FUZZING.md)
//   FACADE_FUZZ_SEED=1234 ...                  replays a run (fast-check prints the seed and the shrunk
//                                              counterexample of a failure; the path replays one case)
//   FACADE_FUZZ_REPORT=file.jsonl ...          also appends one JSON line of figures per property

import { appendFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import fc from 'fast-check';

/** Inputs per target for this run: FACADE_FUZZ_RUNS, else the target's short-run default. */
export function targetRuns(shortDefault: number, variable = 'FACADE_FUZZ_RUNS'): number {
  const text = process.env[variable];
  if (text === undefined || text === '') return shortDefault;
  const runs = Number(text);
  if (!Number.isInteger(runs) || runs < 1)
    throw new Error(`${variable}=${text}: expected a positive integer`);
  return runs;
}

/** True when a long run was asked for (the short defaults are not in force). */
export function isLongRun(variable = 'FACADE_FUZZ_RUNS'): boolean {
  return (process.env[variable] ?? '') !== '';
}

function seed(): number | undefined {
  const text = process.env.FACADE_FUZZ_SEED;
  return text === undefined || text === '' ? undefined : Number(text);
}

/** Counts the inputs a property really tried (a batched property tries several per run). */
export class InputCounter {
  count = 0;
}

/**
 * Runs `property` for `numRuns` runs and fails the test with fast-check's report (seed, path, shrunk
 * counterexample) on the first failure. Reports inputs, seconds and inputs/second as a test diagnostic.
 */
export async function runProperty<Ts extends [unknown, ...unknown[]]>(
  t: TestContext,
  name: string,
  property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>,
  numRuns: number,
  counter?: InputCounter,
): Promise<void> {
  const started = performance.now();
  const parameters: fc.Parameters<Ts> = { numRuns };
  const fixedSeed = seed();
  if (fixedSeed !== undefined) parameters.seed = fixedSeed;
  const path = process.env.FACADE_FUZZ_PATH;
  if (path !== undefined && path !== '') parameters.path = path;
  const details = await fc.check(property as fc.IAsyncProperty<Ts>, parameters);
  const seconds = (performance.now() - started) / 1000;
  const inputs = counter?.count ?? details.numRuns;
  const rate = Math.round(inputs / seconds);
  t.diagnostic(
    `${name}: ${inputs} inputs in ${seconds.toFixed(1)} s = ${rate} inputs/s (seed ${details.seed}${details.failed ? ', FAILED' : ''})`,
  );
  const report = process.env.FACADE_FUZZ_REPORT;
  if (report !== undefined && report !== '') {
    appendFileSync(
      report,
      `${JSON.stringify({ name, runs: details.numRuns, inputs, seconds: Number(seconds.toFixed(2)), rate, seed: details.seed, failed: details.failed })}\n`,
    );
  }
  if (details.failed) {
    // A counterexample can hold a 64 KiB frame: keep the report readable, the seed and path replay it.
    const cause =
      details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    const message = `${fc.defaultReportMessage(details) ?? `${name} failed`}\nError: ${cause}`;
    throw new Error(message.length > 6000 ? `${message.slice(0, 6000)}... (report cut)` : message);
  }
}

/** Byte strings as latin1 text, the way an HTTP head or a TLV is built byte by byte. */
export const byteChar = fc.integer({ min: 0, max: 255 }).map((code) => String.fromCharCode(code));

/** Cut points for splitting `length` bytes into chunks, as arbitrary offsets mapped into range. */
export const cutPoints = fc.array(fc.nat(), { maxLength: 12 });

/** Splits `bytes` at the given points (taken modulo its length), keeping every byte exactly once, in order. */
export function splitAt(bytes: Uint8Array, points: readonly number[]): Buffer[] {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length === 0) return [];
  const cuts = [...new Set(points.map((p) => p % (buffer.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    if (cut > from) chunks.push(buffer.subarray(from, cut));
    from = Math.max(from, cut);
  }
  if (from < buffer.length) chunks.push(buffer.subarray(from));
  return chunks;
}
