// Drives Debian's Chromium with playwright-core for holo's browser tests and benchmarks
// (holo/testing/browser.py starts it). One JSON command per stdin line, one JSON answer
// per stdout line: {"id": n, "op": "...", ...} -> {"id": n, "ok": true, "value": ...}.
//
// Each page records what a test must check: console errors, uncaught exceptions, failed
// requests, CSP violations, and every byte the page sent and received (through the
// DevTools protocol, streams included), so a test can search the traffic for a canary.
import { createInterface } from "node:readline";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("../package.json", import.meta.url));
const { chromium } = require("playwright-core");

const executablePath = process.env.HOLO_CHROMIUM || "/usr/bin/chromium";
let browser = null;
const contexts = new Map();
const pages = new Map();

const BASE_FLAGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-angle=swiftshader",
  "--enable-unsafe-swiftshader",
  "--disable-renderer-backgrounding",
  "--disable-background-timer-throttling",
  "--disable-backgrounding-occluded-windows",
];

// An emulated Quest 3 (npm iwer) for the headset tests: installed before the page's own
// scripts, over Chromium's native navigator.xr (which offers nothing without a device).
// The test moves it through window.__xrDevice (head, controllers, buttons).
let iwerSource = null;
function emulatorScript() {
  iwerSource ??= readFileSync(require.resolve("iwer/build/iwer.min.js"), "utf8");
  return `${iwerSource}
;(() => {
  const device = new IWER.XRDevice(IWER.metaQuest3);
  device.installRuntime({ forceInstall: true });
  window.__xrDevice = device;
})();`;
}

async function openPage({ page: name, url, width = 1280, height = 800, context: contextName, xr = false }) {
  let context = contexts.get(contextName ?? name);
  if (!context) {
    context = await browser.newContext({ viewport: { width, height } });
    contexts.set(contextName ?? name, context);
  }
  const page = await context.newPage();
  const record = { page, console: [], errors: [], failed: [], traffic: [], requests: new Map() };
  pages.set(name, record);
  page.on("console", (m) => record.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => record.errors.push(String(e)));
  page.on("requestfailed", (r) => {
    const why = r.failure()?.errorText ?? "";
    // A stream the page cancels itself (leaving, reconnecting) is not a failure.
    if (!why.includes("ERR_ABORTED")) record.failed.push(`${r.method()} ${r.url()}: ${why}`);
  });
  if (xr) await page.addInitScript({ content: emulatorScript() });
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable", { maxTotalBufferSize: 64 << 20, maxResourceBufferSize: 32 << 20 });
  // Each request's fate, for tests of what the page asked for and what it cancelled.
  cdp.on("Network.requestWillBeSent", ({ requestId, request }) => {
    record.requests.set(requestId, { url: request.url, bytes: 0, finished: false, canceled: false });
  });
  cdp.on("Network.dataReceived", ({ requestId, encodedDataLength }) => {
    const r = record.requests.get(requestId);
    if (r) r.bytes += encodedDataLength;
  });
  cdp.on("Network.loadingFinished", ({ requestId, encodedDataLength }) => {
    const r = record.requests.get(requestId);
    if (!r) return;
    r.finished = true;
    // The total on the wire: dataReceived does not report every part of a streamed body.
    r.bytes = Math.max(r.bytes, encodedDataLength);
  });
  cdp.on("Network.loadingFailed", ({ requestId, canceled }) => {
    const r = record.requests.get(requestId);
    if (r) r.canceled = Boolean(canceled);
  });
  cdp.on("Network.requestWillBeSent", ({ request }) => {
    record.traffic.push(Buffer.from(request.url + " " + JSON.stringify(request.headers)));
    if (request.postData) record.traffic.push(Buffer.from(request.postData, "latin1"));
  });
  cdp.on("Network.responseReceived", ({ requestId, response }) => {
    record.traffic.push(Buffer.from(JSON.stringify(response.headers)));
    cdp.send("Network.streamResourceContent", { requestId }).then(
      ({ bufferedData }) => bufferedData && record.traffic.push(Buffer.from(bufferedData, "base64")),
      () => {},
    );
  });
  cdp.on("Network.dataReceived", ({ data }) => data && record.traffic.push(Buffer.from(data, "base64")));
  cdp.on("Network.loadingFinished", ({ requestId }) => {
    cdp.send("Network.getResponseBody", { requestId }).then(
      ({ body, base64Encoded }) => record.traffic.push(Buffer.from(body, base64Encoded ? "base64" : "utf8")),
      () => {},
    );
  });
  if (url) await page.goto(url, { waitUntil: "load" });
  return true;
}

function pageOf(name) {
  const record = pages.get(name);
  if (!record) throw new Error(`no page ${name}`);
  return record;
}

const ops = {
  async launch({ flags = [] }) {
    browser = await chromium.launch({ executablePath, headless: true, args: [...BASE_FLAGS, ...flags] });
    return browser.version();
  },
  open: openPage,
  async goto({ page, url }) {
    await pageOf(page).page.goto(url, { waitUntil: "load" });
    return true;
  },
  async reload({ page }) {
    await pageOf(page).page.reload({ waitUntil: "load" });
    return true;
  },
  async eval({ page, expression }) {
    return await pageOf(page).page.evaluate(expression);
  },
  async screenshot({ page, path }) {
    await pageOf(page).page.screenshot({ path });
    return path;
  },
  async mouse({ page, action, x, y, button = "left" }) {
    const mouse = pageOf(page).page.mouse;
    if (action === "click") await mouse.click(x, y, { button });
    else if (action === "move") await mouse.move(x, y, { steps: 5 });
    else if (action === "down") await mouse.down({ button });
    else if (action === "up") await mouse.up({ button });
    return true;
  },
  async press({ page, selector, key }) {
    await pageOf(page).page.press(selector, key);
    return true;
  },
  async click({ page, selector }) {
    await pageOf(page).page.click(selector);
    return true;
  },
  async fill({ page, selector, text }) {
    await pageOf(page).page.fill(selector, text);
    return true;
  },
  async setFiles({ page, selector, files }) {
    await pageOf(page).page.setInputFiles(selector, files);
    return true;
  },
  async content({ page }) {
    const p = pageOf(page).page;
    return { html: await p.content(), text: await p.evaluate("document.body.innerText") };
  },
  async logs({ page }) {
    const r = pageOf(page);
    const csp = await r.page.evaluate("window.__csp || []").catch(() => []);
    return { console: r.console, errors: r.errors, failed: r.failed, csp };
  },
  async search({ page, needles }) {
    // Each needle: is it anywhere in what the page sent or received (raw or base64)?
    const all = Buffer.concat(pageOf(page).traffic);
    return Object.fromEntries(needles.map((n) => [n, all.includes(Buffer.from(n)) || all.includes(Buffer.from(Buffer.from(n).toString("base64")))]));
  },
  async requests({ page, urlPart }) {
    return [...pageOf(page).requests.values()].filter((r) => r.url.includes(urlPart));
  },
  async trafficBytes({ page }) {
    return pageOf(page).traffic.reduce((n, b) => n + b.length, 0);
  },
  async closePage({ page }) {
    const r = pages.get(page);
    if (r) {
      await r.page.close({ runBeforeUnload: true });
      pages.delete(page);
    }
    return true;
  },
  async close() {
    if (browser) await browser.close();
    browser = null;
    return true;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const { id, op, ...args } = JSON.parse(line);
  let answer;
  try {
    answer = { id, ok: true, value: await ops[op](args) };
  } catch (err) {
    answer = { id, ok: false, error: String(err?.stack || err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (op === "close") break;
}
process.exit(0);
