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
