"""The web page and the web port, measured in one run (issue 16's benchmark).

- Time from opening the page to the first level of detail on screen and to the full model,
  for the sample knee and a real head CT from ``../shared/data``, in Debian's Chromium
  (playwright-core, SwiftShader WebGL: no GPU here), over TLS on loopback. Target: the first
  level under 1 s.
- ``GetModel`` throughput over gRPC-Web (HTTP/1.1, as HoloLens 2 speaks it; and HTTP/2 as a
  browser speaks it is not measurable from Python here) against the native gRPC port, same
  server, same model, same TLS. Target: at least 0.5 of native.
- Session event latency (the presenter's send to the participant's fold) to 50 browser
  pages against 50 Python SDK clients, the same events at the same rate, one after the
  other against the same server. Target: pages' p99 within 2x of the SDK clients'. The
  server's CPU per delivered event is reported for both (from /proc).
- The compressed size of the page's JavaScript.

Everything shares this machine's 2 cores: the browser, the SDK clients and the server.
The ratios compare runs made under the same sharing. Asserts nothing; prints tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the throw-away CA the tests use

from tables import print_table  # noqa: E402
from tls import make_pki  # noqa: E402

from holo.client.session import SessionClient  # noqa: E402
from holo.session.records import Pose  # noqa: E402
from holo.testing import ServeProcess, TestServer  # noqa: E402
from holo.testing.browser import Browser  # noqa: E402
from holo.testing.grpcweb import GrpcWebClient  # noqa: E402
from holo.v1 import asset_pb2, common_pb2  # noqa: E402

T = TypeVar("T")
SAMPLE = REPO / "sample_data" / "knee_ct"
DATA = Path(os.environ.get("HOLO_DATA", REPO.parent / "shared" / "data"))
HEAD_CT = DATA / "ct_head_ge_gantry_tilt_variable_spacing"
HOME = Pose((0.0, 1.2, 0.0), (0.0, 0.0, 0.0, 1.0))
DIST = REPO / "holo" / "web" / "dist"


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds() -> float:
    """This process's CPU time (the in-process server's, with everything else here)."""
    times = os.times()
    return times.user + times.system


def convert(server: TestServer | ServeProcess, case: str, study: Path, **client: Any) -> str:
    """Upload ``study`` to ``case`` as a radiologist and convert it; the model's id.
    ``client``: the client's options (``ca=`` for a server over TLS)."""
    with server.client("radiologist", case, **client) as radiologist:
        uploaded = radiologist.upload_study([study])
        job = radiologist.wait_job(
            radiologist.start_conversion(uploaded.study_id.value).job_id.value
        )
    if not job.model_id.value:
        raise SystemExit(f"converting {study} failed: {job.message}")
    return job.model_id.value


def open_session(loop: Loop, server: TestServer, ca: bytes, case: str, model: str) -> SessionClient:
    client = SessionClient(server.address, token=server.token("presenter", case), ca=ca)

    async def start() -> None:
        info = await client.create_session()
        await client.join(info.session_id.value)
        await client.load_model(model, HOME)

    loop.run(start())
    return client


def first_lod(browser: Browser, server: TestServer, case: str, trials: int) -> dict[str, float]:
    """Median ms from opening the page to the first level and the full model on screen."""
    first, full, levels = [], [], 0
    for trial in range(trials):
        token = server.token("observer", case, subject=f"bench-{trial}")
        page = browser.page(f"lod-{case}-{trial}", f"{server.web_url}#token={token}")
        page.wait_for("window.holo?.lods?.length > 0", 60, "the first level")
        lods = page.wait_for(
            "(() => { const m = window.holo.conn.state.models.keys().next().value;"
            " const shown = window.holo.lods.filter(l => l.modelId === m);"
            " return shown.length && shown[shown.length - 1].index ==="
            " window.holo.levels.get(m) - 1 ? shown : null; })()",
            120,
            "the full model",
        )
        first.append(lods[0]["at"])
        full.append(lods[-1]["at"])
        levels = len(lods)
        page.close()
    return {"first": statistics.median(first), "full": statistics.median(full), "levels": levels}


def throughput(
    server: TestServer, ca: bytes, case: str, model: str, repeats: int
) -> dict[str, float]:
    """MB/s of GetModel, native port and web port (gRPC-Web over HTTP/1.1), alternating."""
    native, web = [], []
    size = 0
    web_client = GrpcWebClient(server.web_url, token=server.token("observer", case), ca=ca)
    request = asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value=model))
    with server.client("observer", case, ca=ca) as client:
        for _ in range(repeats):
            start = time.perf_counter()
            size = len(client.fetch_model(model).data)
            native.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = sum(len(r.data.data) for r in web_client.stream(
                "/holo.v1.AssetService/GetModel", request, asset_pb2.GetModelResponse
            ))  # fmt: skip
            web.append(time.perf_counter() - start)
            assert got == size
    mb = size / 1e6
    return {
        "size_mb": mb,
        "native": mb / statistics.median(native),
        "web": mb / statistics.median(web),
    }


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def browser_cpu_seconds() -> float:
    """User + system CPU seconds of every Chromium process on this machine now."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(chrom" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def latency(
    loop: Loop, node: ServeProcess, browser: Browser, clients: int, events: int, rate_hz: float
) -> list[list[Any]]:
    """p50/p99 ms from the presenter's send to the fold: SDK clients, then pages, each
    against the same ``holo serve`` process (plain text on loopback), whose CPU is read."""
    case = "bench-latency"
    model = convert(node, case, SAMPLE)
    presenter = SessionClient(node.address, token=node.token("presenter", case), insecure=True)

    async def start() -> None:
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        await presenter.load_model(model, HOME)

    loop.run(start())
    rows: list[list[Any]] = []
    cores: dict[str, float] = {}

    def send(tag: str) -> tuple[dict[int, float], float]:
        sent: dict[int, float] = {}
        cpu = proc_cpu_seconds(node.pid)
        clients_cpu = browser_cpu_seconds() + cpu_seconds()
        started = time.monotonic()

        async def run() -> None:
            for k in range(events):
                at = time.time() * 1000
                seq = await presenter.add_marker(f"{tag}-{k}", model, (0.001 * (k % 50), 0.0, 0.0))
                sent[seq] = at
                await asyncio.sleep(1 / rate_hz)

        loop.run(run())
        time.sleep(2.0)  # the last events reach everyone
        elapsed = time.monotonic() - started
        # The participants' CPU (this process's SDK clients, or the browser's processes),
        # in cores: 2 is all this machine has.
        used = browser_cpu_seconds() + cpu_seconds() - clients_cpu
        cores[tag] = used / elapsed
        return sent, proc_cpu_seconds(node.pid) - cpu

    def row(name: str, tag: str, lat: list[float], lost: int, cpu: float) -> list[Any]:
        per = 1000 * cpu / max(1, len(lat))
        p50, p99 = f"{percentile(lat, 50):.1f}", f"{percentile(lat, 99):.1f}"
        return [name, clients, p50, p99, lost, f"{per:.3f}", f"{cores[tag]:.2f}"]

    # 50 SDK clients in one event loop (as a site's relay or a load generator holds them).
    received: list[dict[int, float]] = [{} for _ in range(clients)]
    sdk = []
    for n in range(clients):

        def record(event: Any, into: dict[int, float] = received[n]) -> None:
            into[event.seq] = time.time() * 1000

        token = node.token("observer", case, subject=f"sdk-{n}")
        sdk.append(SessionClient(node.address, token=token, insecure=True, on_event=record))

    async def join_all() -> None:
        await asyncio.gather(*(c.join(presenter.session_id) for c in sdk))

    async def close_all() -> None:
        await asyncio.gather(*(c.close() for c in sdk))

    loop.run(join_all())
    sent, cpu = send("sdk")
    sdk_lat = [r[s] - t for r in received for s, t in sent.items() if s in r]
    lost = sum(1 for r in received for s in sent if s not in r)
    loop.run(close_all())
    rows.append(row("SDK clients", "sdk", sdk_lat, lost, cpu))

    # The same with browser pages, each in its own context (its own person).
    pages = []
    for n in range(clients):
        token = node.token("observer", case, subject=f"page-{n}")
        pages.append(browser.page(f"lat-{n}", f"{node.web_url}#token={token}"))
    # Steady state: every page has joined and drawn the model before the events start.
    for page in pages:
        page.wait_for(f"window.holo?.modelsShown?.get({model!r}) >= 0", 180, "the model shown")
    time.sleep(2.0)
    sent, cpu = send("page")
    page_lat: list[float] = []
    lost = 0
    for page in pages:
        got = page.eval(
            "(() => { const c = window.holo.conn; const out = {};"
            " c.applied.forEach((s, i) => { out[s] = c.appliedAt[i]; }); return out; })()"
        )
        for seq, at in sent.items():
            if str(seq) in got:
                page_lat.append(got[str(seq)] - at)
            else:
                lost += 1
    for page in pages:
        page.close()
    rows.append(row("browser pages", "page", page_lat, lost, cpu))
    loop.run(presenter.close())
    ratio = percentile(page_lat, 99) / percentile(sdk_lat, 99)
    rows.append(
        [
            "pages / SDK (p99)",
            "",
            "",
            f"{ratio:.2f}",
            "",
            "within 2x: " + ("met" if ratio <= 2 else "MISSED"),
            "",
        ]
    )
    return rows


def page_and_throughput(folder: Path, loop: Loop, trials: int) -> None:
    """The page's time to the model, and GetModel over both ports (an in-process server)."""
    pki = make_pki(folder / "pki")
    ca = pki.ca_pem
    with TestServer(folder / "store", tls=(pki.cert, pki.key), web=True) as server:
        models = [("sample knee", "bench-knee", convert(server, "bench-knee", SAMPLE, ca=ca))]
        if HEAD_CT.is_dir():
            head = convert(server, "bench-head", HEAD_CT, ca=ca)
            models.append(("real head CT (GE, 28 slices)", "bench-head", head))
        else:
            print(f"({HEAD_CT} not found: the real CT rows are left out)")
        presenters = [open_session(loop, server, ca, case, m) for _, case, m in models]
        with Browser(trust=(pki.cert.read_bytes(),)) as browser:
            rows = []
            for name, case, _model in models:
                with server.client("observer", case, ca=ca) as client:
                    manifest = client.list_models()[0]
                result = first_lod(browser, server, case, trials)
                rows.append([
                    name, f"{manifest.size_bytes / 1e6:.2f}", len(manifest.lods),
                    f"{result['first']:.0f}", f"{result['full']:.0f}",
                    "met" if result["first"] < 1000 else "MISSED",
                ])  # fmt: skip
            print_table(
                f"opening the page to the model on screen (median of {trials}, "
                "ms since the page was opened)",
                ["model", "GLB MB", "levels", "first level", "full model", "< 1 s"],
                rows,
            )
        rows = []
        for name, case, model in models:
            r = throughput(server, ca, case, model, 5)
            ratio = r["web"] / r["native"]
            rows.append([
                name, f"{r['size_mb']:.2f}", f"{r['native']:.0f}", f"{r['web']:.0f}",
                f"{ratio:.2f}", "met" if ratio >= 0.5 else "MISSED",
            ])  # fmt: skip
        print_table(
            "GetModel throughput, MB/s (median of 5, TLS, loopback)",
            ["model", "MB", "native gRPC", "gRPC-Web HTTP/1.1", "web / native", ">= 0.5"],
            rows,
        )
        for presenter in presenters:
            loop.run(presenter.close())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", type=int, default=50, help="pages and SDK clients (default 50)"
    )
    parser.add_argument("--events", type=int, default=100, help="events sent to each group")
    parser.add_argument("--rate", type=float, default=10.0, help="events a second")
    parser.add_argument("--trials", type=int, default=3, help="page openings per model")
    parser.add_argument(
        "--latency-only", action="store_true", help="only the event latency (pages vs SDK)"
    )
    args = parser.parse_args()
    if not (DIST / "index.html").is_file():
        raise SystemExit("the page is not built: run `make setup`")
    print(f"holo web benchmark: {os.cpu_count()} cores; server, browser and clients share them")
    with tempfile.TemporaryDirectory() as folder:
        loop = Loop()
        if not args.latency_only:
            page_and_throughput(Path(folder), loop, args.trials)
        node = ServeProcess(Path(folder) / "node", options=("--web", "127.0.0.1:0"))
        try:
            with Browser() as browser:
                rows = latency(loop, node, browser, args.clients, args.events, args.rate)
        finally:
            node.stop()
        print_table(
            f"session event latency, {args.events} events at {args.rate:g}/s "
            "(presenter's send to the participant's fold, ms; server CPU per delivery)",
            [
                "participants",
                "n",
                "p50",
                "p99",
                "lost",
                "server CPU ms/delivery",
                "clients' cores",
            ],
            rows,
        )

    def sizes(paths: list[Path]) -> list[int]:
        """Bytes as built, gzip -9 and Brotli 11 (the .gz and .br files the port serves)."""
        plain = sum(p.stat().st_size for p in paths)
        packed = [sum(Path(f"{p}{end}").stat().st_size for p in paths) for end in (".gz", ".br")]
        return [plain, *packed]

    decoders = [p for p in (DIST / "decoders").rglob("*") if p.suffix in (".js", ".wasm")]
    small = [DIST / name for name in ("index.html", "style.css", "favicon.svg")]
    print_table(
        "the page's size (what a browser downloads)",
        ["file", "bytes", "gzip -9", "brotli"],
        [
            ["app.js (three.js, Connect, messages, the page)", *sizes([DIST / "app.js"])],
            ["Draco decoder (WebAssembly + wrapper)", *sizes(decoders)],
            ["index.html, style.css, favicon.svg", *sizes(small)],
        ],
    )


if __name__ == "__main__":
    main()
