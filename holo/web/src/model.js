// GetModel over gRPC-Web: the manifest, then the GLB coarse first. Each level of detail
// is handed over as soon as its bytes are complete and match its prefix's sha256; a
// broken stream resumes at the received offset; the whole file is checked against the
// manifest's sha256. A device with a triangle budget (a headset) stops at the finest
// level within it: the finer levels' bytes never travel.
import { create } from "@bufbuild/protobuf";
import { GetModelRequestSchema } from "./gen/holo/v1/asset_pb.js";
import { Code, ConnectError, backoffMs, retryable, sleep } from "./rpc.js";
import { sha256Hex } from "./ui.js";

/** The last level a device with a budget of `maxTriangles` (whole scene) needs: the finest
 * within it, and the coarse level always. */
export function lastLevel(lods, maxTriangles = Infinity) {
  let last = 0;
  lods.forEach((lod, k) => {
    if (Number(lod.triangles) <= maxTriangles) last = k;
  });
  return last;
}

/**
 * Download `modelId`; `onManifest(manifest)` once, `onLod(index, lod, glb)` per level as it
 * completes and matches its checksum (glb: the full-length buffer, zeros past what
 * arrived). Returns the manifest, the bytes received and `upTo`: the last level handed
 * over (every level unless `maxTriangles` stopped the download earlier).
 *
 * Errors: a chunk out of place or a level that does not match its checksum is DataLoss,
 * a model replaced during the download Aborted: neither is retried (the bytes are not
 * what was published; open the model again). A broken or short stream resumes at the
 * received offset, up to 20 times without progress, `backoff(failures)` ms apart.
 */
export async function fetchModel(assets, modelId, { onManifest, onLod, onProgress, signal, maxTriangles = Infinity, backoff = backoffMs } = {}) {
  const fail = (message, code) => new ConnectError(`model ${modelId}: ${message}; open it again`, code);
  let manifest = null;
  let glb = null;
  let received = 0;
  let done = 0; // levels checked and handed over
  let needed = Infinity; // levels this download needs: known from the manifest
  for (let failures = 0; done < needed; ) {
    if (signal?.aborted) throw new ConnectError(`model ${modelId}: download cancelled`, Code.Canceled);
    // An abort of its own for each attempt: leaving the stream at the budget must cancel
    // the request (Connect's stream iterator does not cancel the fetch on `break`).
    const attempt = new AbortController();
    const forward = () => attempt.abort();
    signal?.addEventListener("abort", forward, { once: true });
    // The budget goes to the server too: it ends the stream after the last level within
    // it, so the finer levels do not travel even on a link faster than the page reads.
    const budget = Number.isFinite(maxTriangles) && maxTriangles > 0 ? BigInt(Math.floor(maxTriangles)) : 0n;
    const request = create(GetModelRequestSchema, { modelId: { value: modelId }, offset: BigInt(received), maxTriangles: budget });
    try {
      for await (const reply of assets.getModel(request, { signal: attempt.signal })) {
        if (reply.part.case === "manifest") {
          if (manifest === null) {
            manifest = reply.part.value;
            glb = new Uint8Array(Number(manifest.sizeBytes));
            const last = lastLevel(manifest.lods, maxTriangles);
            // Stopping early leaves only the levels' own checksums: a model published
            // before holo recorded them is downloaded whole, to be checked whole.
            const checkable = manifest.lods.slice(0, last + 1).every((lod) => lod.prefixSha256);
            needed = checkable ? last + 1 : manifest.lods.length;
            onManifest?.(manifest);
          } else if (reply.part.value.sha256 !== manifest.sha256) {
            throw fail("it changed during the download", Code.Aborted);
          }
          continue;
        }
        const part = reply.part.value;
        if (Number(part.offset) !== received) throw fail(`a chunk at ${part.offset}, expected ${received}`, Code.DataLoss);
        glb.set(part.data, received);
        received += part.data.length;
        failures = 0; // progress: a later break starts the count again
        onProgress?.(received, glb.length);
        while (done < manifest.lods.length && received >= Number(manifest.lods[done].completeAtBytes)) {
          const lod = manifest.lods[done];
          const prefix = glb.subarray(0, Number(lod.completeAtBytes));
          if (lod.prefixSha256 && (await sha256Hex(prefix)) !== lod.prefixSha256) {
            throw fail(`level ${lod.name} does not match its checksum`, Code.DataLoss);
          }
          await onLod?.(done, lod, glb);
          done += 1;
        }
        if (done >= needed) break; // this device's last level is in: leave the stream
      }
      if (done < needed) throw new ConnectError("the stream ended before the model did", Code.Unavailable);
    } catch (err) {
      // Only the network's errors are retried: a page's own failure (a level that cannot
      // be drawn) is not made better by downloading again.
      if (signal?.aborted || !(err instanceof ConnectError) || !retryable(err) || ++failures > 20) throw err;
      await sleep(backoff(failures), signal);
    } finally {
      signal?.removeEventListener("abort", forward);
      attempt.abort();
    }
  }
  const last = manifest.lods.at(-1);
  if (needed === manifest.lods.length && !last?.prefixSha256 && (await sha256Hex(glb)) !== manifest.sha256) {
    throw fail("the bytes received do not match its checksum", Code.DataLoss);
  }
  return { manifest, glb: glb.subarray(0, received), upTo: done - 1 };
}
