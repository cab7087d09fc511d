// GetModel over gRPC-Web: the manifest, then the GLB coarse first. Each level of detail
// is handed over as soon as its bytes are complete and match its prefix's sha256; a
// broken stream resumes at the received offset; the whole file is checked against the
// manifest's sha256. A device with a triangle budget (a headset) stops at the finest
// level within it: the finer levels' bytes never travel.
import { create } from "@bufbuild/protobuf";
import { GetModelRequestSchema } from "./gen/holo/v1/asset_pb.js";
import { backoffMs, retryable, sleep } from "./rpc.js";
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
 * completes (glb: the full-length buffer, zeros past what arrived). Returns the manifest,
 * the bytes, and `upTo`: the last level downloaded (all of them unless `maxTriangles`).
 */
export async function fetchModel(assets, modelId, { onManifest, onLod, onProgress, signal, maxTriangles = Infinity } = {}) {
  let manifest = null;
  let glb = null;
  let received = 0;
  let done = 0;
  let upTo = -1; // the level after which the download may stop
  for (let failures = 0; upTo < 0 || done <= upTo; ) {
    const request = create(GetModelRequestSchema, { modelId: { value: modelId }, offset: BigInt(received) });
    try {
      for await (const reply of assets.getModel(request, { signal })) {
        failures = 0;
        if (reply.part.case === "manifest") {
          if (manifest === null) {
            manifest = reply.part.value;
            glb = new Uint8Array(Number(manifest.sizeBytes));
            upTo = manifest.lods.length - 1;
            const last = lastLevel(manifest.lods, maxTriangles);
            // Stopping early leaves only the levels' own checksums: a model published
            // before holo recorded them is downloaded whole, to be checked whole.
            if (manifest.lods.slice(0, last + 1).every((lod) => lod.prefixSha256)) upTo = last;
            onManifest?.(manifest);
          } else if (reply.part.value.sha256 !== manifest.sha256) {
            throw new Error(`model ${modelId} changed during the download; open it again`);
          }
          continue;
        }
        const part = reply.part.value;
        if (Number(part.offset) !== received) throw new Error(`model ${modelId}: a chunk at ${part.offset}, expected ${received}`);
        glb.set(part.data, received);
        received += part.data.length;
        onProgress?.(received, glb.length);
        while (done < manifest.lods.length && received >= Number(manifest.lods[done].completeAtBytes)) {
          const lod = manifest.lods[done];
          const prefix = glb.subarray(0, Number(lod.completeAtBytes));
          if (lod.prefixSha256 && (await sha256Hex(prefix)) !== lod.prefixSha256) {
            throw new Error(`model ${modelId}: level ${lod.name} does not match its checksum; open it again`);
          }
          await onLod?.(done, lod, glb);
          done += 1;
        }
        if (done > upTo) break; // the device's last level is in: leave the stream
      }
      break;
    } catch (err) {
      if (signal?.aborted || !retryable(err) || ++failures > 20) throw err;
      await sleep(backoffMs(failures), signal);
    }
  }
  if (manifest === null) throw new Error(`model ${modelId}: the server sent no manifest`);
  if (upTo === manifest.lods.length - 1 && (await sha256Hex(glb)) !== manifest.sha256) {
    throw new Error(`model ${modelId}: the bytes received do not match its checksum; open it again`);
  }
  return { manifest, glb: glb.subarray(0, received), upTo };
}
