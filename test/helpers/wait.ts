// Bounded waits: a test that waits for an event fails with what it waited for, instead of hanging until
// the runner's timeout.

/** How long a wait may take before the test fails. */
export const WAIT_MS = 5_000;

/** `promise`, or a rejection naming `what` when it takes longer than WAIT_MS. */
export async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
