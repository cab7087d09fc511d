// The headset's rules that need no browser: how often the page sends what a headset
// tracks (Paced), and which levels of detail a device with a budget downloads (lastLevel).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Paced } from "../src/pacing.js";
import { lastLevel } from "../src/model.js";

/** Time that moves only when the test says: timers run in order as it advances. */
class TestClock {
  constructor() {
    this.t = 0;
    this.timers = new Map();
    this.next = 1;
  }
  now = () => this.t;
  later = (fn, ms) => {
    this.timers.set(this.next, { at: this.t + ms, fn });
    return this.next++;
  };
  cancel = (id) => this.timers.delete(id);
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      const due = [...this.timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = end;
    await flush();
  }
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

test("a paced sender keeps to its rate and sends the newest value", async () => {
  const clock = new TestClock();
  const sent = [];
  const paced = new Paced(50, (value) => sent.push([clock.now(), value]), clock);
  // 90 values a second for a second (a headset's frame rate), 11 ms apart.
  for (let k = 0; k < 90; k++) {
    paced.offer(k);
    await clock.advance(11);
  }
  await clock.advance(100);
  const gaps = sent.slice(1).map(([t], k) => t - sent[k][0]);
  assert.ok(gaps.every((g) => g >= 50), `two sends closer than 50 ms: ${gaps}`);
  assert.ok(sent.length >= 19 && sent.length <= 21, `${sent.length} sends in 1 s at 20 a second`);
  assert.equal(sent.at(-1)[1], 89, "the last value offered is sent");
  const values = sent.map(([, v]) => v);
  assert.deepEqual(values, [...values].sort((a, b) => a - b), "never an older value after a newer");
});

test("one call in flight: what is offered meanwhile waits for it, then the newest goes", async () => {
  const clock = new TestClock();
  const sent = [];
  let finish;
  const paced = new Paced(10, (value) => {
    sent.push(value);
    return new Promise((resolve) => (finish = resolve));
  }, clock);
  paced.offer("a");
  await clock.advance(100);
  paced.offer("b");
  paced.offer("c");
  await clock.advance(100);
  assert.deepEqual(sent, ["a"], "a second call while the first is in flight");
  finish();
  await clock.advance(20);
  assert.deepEqual(sent, ["a", "c"]);
});

test("settle drops what waits and lets the call in flight finish", async () => {
  const clock = new TestClock();
  const sent = [];
  let finished = 0;
  let finish;
  const paced = new Paced(1000, (value) => {
    sent.push(value);
    return new Promise((resolve) => (finish = resolve)).then(() => (finished += 1));
  }, clock);
  paced.offer("first");
  paced.offer("dropped"); // at once: waits for the 1 s pace
  const settled = paced.settle();
  await flush(); // the call starts
  finish();
  await settled;
  assert.equal(finished, 1);
  await clock.advance(2000);
  assert.deepEqual(sent, ["first"]);
});

test("a device draws the finest level within its budget, the coarse one always", () => {
  const lods = [{ triangles: 9998n }, { triangles: 29998n }, { triangles: 99000n }, { triangles: 1500000n }];
  assert.equal(lastLevel(lods), 3);
  assert.equal(lastLevel(lods, 100000), 2);
  assert.equal(lastLevel(lods, 29998), 1);
  assert.equal(lastLevel(lods, 20000), 0);
  assert.equal(lastLevel(lods, 5000), 0, "the coarse level is shown even over the budget");
});
