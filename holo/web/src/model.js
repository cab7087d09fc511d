// GetModel over gRPC-Web: the manifest, then the GLB coarse first. Each level of detail
// is handed over as soon as its bytes are complete; a broken stream resumes at the
// received offset; the whole file is checked against the manifest's sha256.
import { create } from "@bufbuild/protobuf";
import { GetModelRequestSchema } from "./gen/holo/v1/asset_pb.js";
import { backoffMs, retryable, sleep } from "./rpc.js";
import { sha256Hex } from "./ui.js";

/**
 * Download `modelId`; `onManifest(manifest)` once, `onLod(index, lod, glb)` per level as it
 * completes (glb: the full-length buffer, zeros past what arrived). Returns the bytes.
 */
export async function fetchModel(assets, modelId, { onManifest, onLod, onProgress, signal } = {}) {
  let manifest = null;
  let glb = null;
  let received = 0;
  let done = 0;
  for (let failures = 0; ; ) {
    const request = create(GetModelRequestSchema, { modelId: { value: modelId }, offset: BigInt(received) });
    try {
      for await (const reply of assets.getModel(request, { signal })) {
        failures = 0;
        if (reply.part.case === "manifest") {
          if (manifest === null) {
            manifest = reply.part.value;
            glb = new Uint8Array(Number(manifest.sizeBytes));
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
          await onLod?.(done, manifest.lods[done], glb);
          done += 1;
        }
      }
      break;
    } catch (err) {
      if (signal?.aborted || !retryable(err) || ++failures > 20) throw err;
      await sleep(backoffMs(failures), signal);
    }
  }
  if (manifest === null) throw new Error(`model ${modelId}: the server sent no manifest`);
  if ((await sha256Hex(glb)) !== manifest.sha256) {
    throw new Error(`model ${modelId}: the bytes received do not match its checksum; open it again`);
  }
  return { manifest, glb };
}
