// Small DOM helpers: no framework, no inline script or style (the page's CSP forbids both).

export const $ = (selector) => document.querySelector(selector);

/** An element with properties and children (strings become text). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "ariaHidden") node.setAttribute("aria-hidden", value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

/** The status line: what is happening, in words (kind: ok, info, wait, error). */
export function setStatus(text, kind = "info") {
  const status = $("#status");
  if (!status) return;
  status.textContent = text;
  status.dataset.kind = kind;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}

/** The SHA-256 of bytes as 64 lowercase hex digits (holo's content hashes). */
export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A model's manifest in the side panel: each level's triangles, bytes and where it is
 * complete, and the structures with their triangles per level. */
export function showManifest(m) {
  $("#model-pane").hidden = false;
  const count = (n) => Number(n).toLocaleString("en");
  $("#lods").replaceChildren(
    el("tr", {}, el("th", {}, "Level"), el("th", {}, "Triangles"), el("th", {}, "Size"), el("th", {}, "Complete at")),
    ...m.lods.map((lod) =>
      el("tr", {}, el("td", {}, lod.name), el("td", {}, count(lod.triangles)), el("td", {}, formatBytes(Number(lod.bytes))), el("td", {}, formatBytes(Number(lod.completeAtBytes))))),
  );
  $("#structures").textContent = m.structures.map((s) => `${s.name} (${s.triangles.map(count).join(" / ")})`).join(", ");
}
