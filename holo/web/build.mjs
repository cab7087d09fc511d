// Builds the page into dist/: one bundled, minified app.js (three.js, the generated
// messages, Connect), the HTML and CSS, and the Draco decoder (WebAssembly) that three.js
// loads at run time. Everything the page needs is served by the web port itself: no CDN.
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "decoders", "draco"), { recursive: true });

await build({
  entryPoints: [join(here, "src", "main.js")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  splitting: false,
  minify: true,
  sourcemap: "linked",
  target: ["chrome110", "safari16", "firefox115"],
  legalComments: "linked",
  logLevel: "warning",
});
for (const name of ["index.html", "style.css", "favicon.svg"]) copyFileSync(join(here, "src", name), join(dist, name));
const draco = join(here, "node_modules", "three", "examples", "jsm", "libs", "draco", "gltf");
for (const name of ["draco_wasm_wrapper.js", "draco_decoder.wasm"]) {
  copyFileSync(join(draco, name), join(dist, "decoders", "draco", name));
}
// Compressed once here, served as they are when the browser accepts them (holo.server.web):
// 0.9 MB of JavaScript is 0.2 MB in Brotli, a quarter of the time on a hospital's Wi-Fi.
function compressAll(folder) {
  for (const name of readdirSync(folder)) {
    const path = join(folder, name);
    if (statSync(path).isDirectory()) compressAll(path);
    else if (/\.(js|css|html|svg|wasm|map|txt)$/.test(name)) {
      const data = readFileSync(path);
      writeFileSync(`${path}.br`, brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
      writeFileSync(`${path}.gz`, gzipSync(data, { level: 9 }));
    }
  }
}
compressAll(dist);
console.log(`built ${dist}`);
