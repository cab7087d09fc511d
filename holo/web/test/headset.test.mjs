// The headset's rules that need no browser: how often the page sends what a headset
// tracks (Paced), and which levels of detail a device with a budget downloads (lastLevel).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Paced } from "../src/immersive.js";
import { lastLevel } from "../src/model.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("a paced sender keeps to its rate and sends the newest value", async () => {
  const sent = [];
  const paced = new Paced(50, async (value) => {
    sent.push([performance.now(), value]);
    await sleep(5); // a call in flight
  });
  const start = performance.now();
  for (let k = 0; k < 100; k++) {
    paced.offer(k); // 100 values in about a second: 90 Hz, a headset's frame rate
    await sleep(10);
  }
  await sleep(120);
  const span = performance.now() - start;
  assert.ok(sent.length <= Math.ceil(span / 50) + 1, `${sent.length} sends in ${span.toFixed(0)} ms`);
  assert.ok(sent.length >= span / 50 / 2, `only ${sent.length} sends in ${span.toFixed(0)} ms`);
  for (let k = 1; k < sent.length; k++) assert.ok(sent[k][0] - sent[k - 1][0] >= 49, "two sends closer than 50 ms");
  assert.equal(sent.at(-1)[1], 99, "the last value offered is sent");
  const values = sent.map(([, v]) => v);
  assert.deepEqual(values, [...values].sort((a, b) => a - b), "never an older value after a newer");
});

test("settle drops what waits and lets the call in flight finish", async () => {
  const sent = [];
  let finished = 0;
  const paced = new Paced(1000, async (value) => {
    sent.push(value);
    await sleep(20);
    finished += 1;
  });
  paced.offer("first");
  paced.offer("dropped"); // waits for the 1 s pace
  await paced.settle();
  assert.equal(finished, 1);
  await sleep(50);
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
