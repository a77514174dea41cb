// The engine's keepalive wheel (session/keepalive-wheel.ts): each session ticks once per interval, sessions
// started within one slot tick together, a session that leaves stops ticking, and the timer runs only
// while someone is on the wheel.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeepaliveWheel } from '../../src/session/keepalive-wheel.js';

test('each session ticks once per interval, the first tick about one interval after it joined', async () => {
  const wheel = new KeepaliveWheel(200);
  const ticks: number[][] = [[], [], []];
  const started = performance.now();
  const leave = ticks.map((times) => wheel.add(() => times.push(performance.now() - started)));
  await sleep(700);
  for (const leaveOne of leave) leaveOne();
  for (const times of ticks) {
    // 700 ms at 200 ms: three ticks (fewer if timers run late on a busy machine; never early).
    assert.ok(times.length >= 1 && times.length <= 3, `ticks at ${times.map(Math.round)}`);
    assert.ok((times[0] as number) >= 180 - 5, `first tick at ${times[0]} ms, not early`);
    for (let i = 1; i < times.length; i++) {
      const gap = (times[i] as number) - (times[i - 1] as number);
      assert.ok(gap >= 150 && gap <= 450, `one interval between ticks: ${gap} ms`);
    }
  }
  // Joined in the same slot: they tick in the same turn (turns are 20 ms apart; one turn's ticks, µs).
  for (const other of [ticks[1], ticks[2]] as number[][]) {
    assert.equal(other.length, ticks[0]?.length);
    for (const [i, at] of other.entries()) {
      assert.ok(Math.abs(at - (ticks[0]?.[i] as number)) < 5, 'same turn');
    }
  }
});

test('sessions that join at different times tick in different turns; one that leaves stops', async () => {
  const wheel = new KeepaliveWheel(200);
  const early: number[] = [];
  const late: number[] = [];
  const leaveEarly = wheel.add(() => early.push(performance.now()));
  await sleep(100);
  const leaveLate = wheel.add(() => late.push(performance.now()));
  await sleep(250);
  assert.equal(early.length, 1);
  assert.equal(late.length, 1);
  assert.ok((late[0] as number) - (early[0] as number) >= 60, 'half an interval apart, not one turn');
  leaveEarly();
  leaveEarly(); // twice is harmless
  assert.equal(wheel.size, 1);
  await sleep(400);
  assert.equal(early.length, 1, 'no tick after leaving');
  assert.ok(late.length >= 2);
  leaveLate();
  assert.equal(wheel.size, 0);
});

test('a tick that ends its own session (leaves during the turn) does not disturb the others', async () => {
  const wheel = new KeepaliveWheel(100);
  const counts = [0, 0, 0];
  const leaves: (() => void)[] = [];
  for (let i = 0; i < 3; i++) {
    leaves.push(
      wheel.add(() => {
        counts[i] = (counts[i] as number) + 1;
        if (i === 0) (leaves[0] as () => void)();
      }),
    );
  }
  await sleep(350);
  assert.equal(counts[0], 1, 'left at its first tick');
  assert.ok((counts[1] as number) >= 2 && (counts[2] as number) >= 2, `others ticked on: ${counts}`);
  for (const leave of leaves) leave();
  assert.equal(wheel.size, 0);
});
