// fetchModel's decisions under faults a test server cannot be made to produce on demand
// (a corrupted level, a model replaced mid-download, a stream that breaks or ends short):
// `assets` here plays GetModel from a scripted list of replies. The real server's stream is
// exercised by the browser tests (tests/test_web_page.py, tests/test_web_xr.py).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { fetchModel } from "../src/model.js";

const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** A 3-level model of `size` bytes: levels complete at 1/4, 1/2 and the end. */
function model(size = 4096, { checksums = true } = {}) {
  const bytes = new Uint8Array(size).map((_, k) => (k * 7) % 251);
  const ends = [size / 4, size / 2, size];
  const lods = ends.map((end, k) => ({
    index: k,
    name: `lod${k}`,
    triangles: BigInt(10000 * 3 ** k),
    completeAtBytes: BigInt(end),
    prefixSha256: checksums ? sha(bytes.subarray(0, end)) : "",
  }));
  return { bytes, manifest: { sha256: sha(bytes), sizeBytes: BigInt(size), lods } };
}

/** GetModel from a script: `plan(call, offset)` gives the list of replies for each call
 * (numbers are chunk sizes, an Error is thrown, "manifest" or a manifest object is sent).
 * As on the network, the replies keep coming whether or not they are read, until the
 * call's signal aborts; and, as Connect's iterator, leaving the loop cancels nothing. */
function assetsFor({ bytes, manifest }, plan) {
  const calls = [];
  return {
    calls,
    getModel(request, { signal }) {
      const call = { offset: Number(request.offset), maxTriangles: request.maxTriangles, sent: 0, aborted: () => signal.aborted };
      calls.push(call);
      const queue = [];
      let wake = null;
      const push = (item) => {
        queue.push(item);
        wake?.();
      };
      (async () => {
        let at = call.offset;
        for (const step of plan(calls.length - 1, at)) {
          await new Promise((resolve) => setTimeout(resolve, 1));
          if (signal.aborted) return push({ end: true });
          if (step instanceof Error) return push({ error: step });
          if (step === "manifest" || typeof step === "object") {
            push({ reply: { part: { case: "manifest", value: step === "manifest" ? manifest : step } } });
            continue;
          }
          const data = bytes.slice(at, Math.min(at + step, bytes.length));
          if (!data.length) break;
          push({ reply: { part: { case: "data", value: { offset: BigInt(at), data } } } });
          call.sent += 1;
          at += data.length;
        }
        push({ end: true });
      })();
      return {
        [Symbol.asyncIterator]() {
          return {
            async next() {
              while (!queue.length) await new Promise((resolve) => (wake = resolve));
              const item = queue.shift();
              if (item.error) throw item.error;
              return item.end ? { done: true, value: undefined } : { done: false, value: item.reply };
            },
          };
        },
      };
    },
  };
}

const whole = (size) => ["manifest", ...Array(size / 512).fill(512)];

test("every level is handed over in order, then the whole file is checked", async () => {
  const m = model();
  const assets = assetsFor(m, () => whole(4096));
  const shown = [];
  const out = await fetchModel(assets, "m-1", { onLod: (k) => shown.push(k) });
  assert.deepEqual(shown, [0, 1, 2]);
  assert.equal(out.upTo, 2);
  assert.deepEqual(out.glb, m.bytes);
});

test("a budget is asked of the server, and the page ends the request after its last level", async () => {
  const m = model();
  const assets = assetsFor(m, () => whole(4096));
  const shown = [];
  const out = await fetchModel(assets, "m-1", { maxTriangles: 20000, onLod: (k) => shown.push(k) });
  assert.deepEqual(shown, [0]);
  assert.equal(out.upTo, 0);
  assert.equal(out.glb.length, 1024);
  assert.equal(assets.calls.length, 1);
  assert.equal(assets.calls[0].maxTriangles, 20000n, "the server is told the budget");
  assert.ok(assets.calls[0].aborted(), "the request was not cancelled");
  await new Promise((resolve) => setTimeout(resolve, 30));
  // Two chunks hold the coarse level; one more may have been on its way.
  assert.ok(assets.calls[0].sent <= 3, `${assets.calls[0].sent} of 8 chunks sent after the budget's level`);
});

test("without level checksums a budget still downloads the whole file, to check it", async () => {
  const m = model(4096, { checksums: false });
  const assets = assetsFor(m, () => whole(4096));
  const shown = [];
  const out = await fetchModel(assets, "m-1", { maxTriangles: 20000, onLod: (k) => shown.push(k) });
  assert.deepEqual(shown, [0, 1, 2]);
  assert.equal(out.glb.length, 4096);
});

test("a level that does not match its checksum is refused, not shown, not retried", async () => {
  const m = model();
  m.bytes[100] ^= 0xff; // inside level 0
  const assets = assetsFor(m, () => whole(4096));
  const shown = [];
  await assert.rejects(
    fetchModel(assets, "m-1", { onLod: (k) => shown.push(k) }),
    (err) => err instanceof ConnectError && err.code === Code.DataLoss && /level lod0 does not match/.test(err.message),
  );
  assert.deepEqual(shown, []);
  assert.equal(assets.calls.length, 1);
});

test("a broken stream resumes at the received offset", async () => {
  const m = model();
  const assets = assetsFor(m, (call) =>
    call === 0 ? ["manifest", 512, 512, 512, new ConnectError("gone", Code.Unavailable)] : whole(4096),
  );
  const out = await fetchModel(assets, "m-1", { backoff: () => 1 });
  assert.deepEqual(assets.calls.map((c) => c.offset), [0, 1536]);
  assert.deepEqual(out.glb, m.bytes);
});

test("a stream that ends before the model does is resumed", async () => {
  const m = model();
  const assets = assetsFor(m, (call) => (call === 0 ? ["manifest", 512, 512] : whole(4096)));
  const out = await fetchModel(assets, "m-1", { backoff: () => 1 });
  assert.deepEqual(assets.calls.map((c) => c.offset), [0, 1024]);
  assert.deepEqual(out.glb, m.bytes);
});

test("a model replaced during the download is refused, not retried", async () => {
  const m = model();
  const other = { ...m.manifest, sha256: "0".repeat(64) };
  const assets = assetsFor(m, (call) =>
    call === 0 ? ["manifest", 512, new ConnectError("gone", Code.Unavailable)] : [other, 512],
  );
  await assert.rejects(fetchModel(assets, "m-1", { backoff: () => 1 }), (err) => err.code === Code.Aborted && /changed/.test(err.message));
  assert.equal(assets.calls.length, 2);
});

test("a stream that never progresses gives up after 20 tries", async () => {
  const m = model();
  const assets = assetsFor(m, () => ["manifest", new ConnectError("gone", Code.Unavailable)]);
  await assert.rejects(fetchModel(assets, "m-1", { backoff: () => 1 }), (err) => err.code === Code.Unavailable);
  assert.equal(assets.calls.length, 21);
});

test("the page's own failure while showing a level is not retried", async () => {
  const m = model();
  const assets = assetsFor(m, () => whole(4096));
  await assert.rejects(
    fetchModel(assets, "m-1", {
      onLod: () => {
        throw new Error("cannot draw");
      },
    }),
    /cannot draw/,
  );
  assert.equal(assets.calls.length, 1);
});
