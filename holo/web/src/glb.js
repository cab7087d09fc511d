// A GLB with one of its scenes only: how a level of detail is drawn before the finer ones
// have arrived. holo's GLB holds one scene per LOD, coarse first, and lays out the bytes so
// each level is complete in a prefix of the file (the manifest's complete_at_bytes); the
// bytes not yet received are zeros, which the kept scene never reads.

const JSON_CHUNK = 0x4e4f534a;

/** `glb` (Uint8Array, full length) as an ArrayBuffer whose scene list is `sceneName` only. */
export function sceneOnly(glb, sceneName) {
  const view = new DataView(glb.buffer, glb.byteOffset, glb.byteLength);
  if (view.getUint32(0, true) !== 0x46546c67) throw new Error("not a GLB");
  const jsonLength = view.getUint32(12, true);
  if (view.getUint32(16, true) !== JSON_CHUNK) throw new Error("a GLB whose first chunk is not JSON");
  const tree = JSON.parse(new TextDecoder().decode(glb.subarray(20, 20 + jsonLength)));
  const index = tree.scenes.findIndex((s) => s.name === sceneName);
  if (index < 0) throw new Error(`the model has no scene ${sceneName}`);
  tree.scenes = [tree.scenes[index]];
  tree.scene = 0;
  let json = new TextEncoder().encode(JSON.stringify(tree));
  const padded = (json.length + 3) & ~3;
  const rest = glb.subarray(20 + jsonLength);
  const out = new Uint8Array(12 + 8 + padded + rest.length);
  const outView = new DataView(out.buffer);
  outView.setUint32(0, 0x46546c67, true);
  outView.setUint32(4, 2, true);
  outView.setUint32(8, out.length, true);
  outView.setUint32(12, padded, true);
  outView.setUint32(16, JSON_CHUNK, true);
  out.set(json, 20);
  out.fill(0x20, 20 + json.length, 20 + padded); // JSON chunks are padded with spaces
  out.set(rest, 20 + padded);
  json = null;
  return out.buffer;
}
