"""Benchmark: model delivery by the holo server, against a plain gRPC bytes stream, in one run.

Both serve the same GLB, the skull ``ct_skull_phantom_philips_bone_1mm`` converted by
``holo.pipeline.convert`` with its defaults (LODs of 10k / 30k / 100k triangles plus full
detail, about 1.5M triangles, laid out coarse first), on 127.0.0.1 port 0 in this process,
each on its own event loop in a thread:

- holo: the real server (``holo.testing.TestServer``: interceptors, token check, store,
  blob cache), plain text; ``HoloClient.fetch_model`` on the client side.
- baseline: a minimal ``grpc.aio`` server with one generic unary-stream method whose
  serializers are identity on bytes, streaming the same bytes in the same 1 MiB chunks,
  plain text, no auth, no manifest; the client appends the chunks to a ``bytearray``.

1. One client, sequential fetches (``--fetches`` N, after one warm-up each), holo and
   baseline alternating: milliseconds from the call to the first complete coarse LOD (the
   prefix of ``lods[0].complete_at_bytes`` bytes) and to the whole model; median and p90.
   Target: holo's first coarse LOD in under 150 ms (p90).
2. ``--clients`` (100) clients fetching the model at once: one thread, one channel and one
   TCP connection each, connected before a barrier releases them together; ``--rounds``
   (10) rounds per server, alternating. Throughput (total bytes / wall time from the
   release to the last byte; median round) and p50 / p99 of each client's completion
   time. Target: holo's throughput >= 0.5x the baseline's.

With ``cryptography`` installed (a dev dependency) both tables get TLS rows too, with a
throw-away CA (``tests/tls.py``), for both servers. The GLB is cached in a scratch folder
outside the repository (``$HOLO_BENCH_SERVE`` or ``/tmp/holo-bench-serve``), keyed by the
series files and holo's version, so a second run skips the conversion (about 16 s).

Usage: python benchmarks/serve.py [--data DIR] [--fetches N] [--clients N] [--rounds N]
       [--no-tls] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from tables import print_table

import holo.client
from holo.client.channel import CHANNEL_OPTIONS
from holo.export.manifest import model_manifest
from holo.testing import TestServer

DEFAULT_DATA = Path(
    os.environ.get("HOLO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SERIES = "ct_skull_phantom_philips_bone_1mm"
CACHE_DIR = Path(
    os.environ.get("HOLO_BENCH_SERVE", Path(tempfile.gettempdir()) / "holo-bench-serve")
)
CASE_ID = "bench-case"
CHUNK_BYTES = 1 << 20  # what holo's AssetService sends per ModelData (asset.proto)
FIRST_LOD_TARGET_S = 0.150
THROUGHPUT_RATIO_TARGET = 0.5
MIN_TRIANGLES = 1_000_000
CALL_TIMEOUT_S = 120.0  # every call is bounded: the benchmark stops by itself
BASELINE_METHOD = "/bench.Bytes/Get"
# Both clients use the options HoloClient uses; a local subchannel pool gives every channel
# its own TCP connection, as separate headsets have (by default gRPC shares one connection
# among channels of one process with the same target and options).
CLIENT_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
SERVER_OPTIONS = [("grpc.max_receive_message_length", (1 << 20) + (64 << 10))]


# --------------------------------------------------------------------------- helpers


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def connections_to(port: int) -> int | None:
    """Established TCP connections to 127.0.0.1:``port`` (Linux /proc), None elsewhere.

    gRPC's sockets are dual-stack, so they are listed in ``tcp6`` as IPv4-mapped addresses.
    """
    lines = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError):
            lines += Path(table).read_text().splitlines()[1:]
    if not lines:
        return None
    wanted = f"0100007F:{port:04X}"
    return sum(
        1 for f in (line.split() for line in lines) if f[2].endswith(wanted) and f[3] == "01"
    )


# --------------------------------------------------------------------------- the model


def cached_glb(folder: Path) -> Path:
    """The skull converted with holo's defaults; reused while the series and holo are."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise SystemExit(f"no files in {folder}: pass --data (the shared data folder)")
    key = hashlib.sha256(package_version("holo").encode())
    for p in files:
        stat = p.stat()
        key.update(f"{p.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    target = CACHE_DIR / f"{SERIES}-{key.hexdigest()[:16]}.glb"
    if target.is_file():
        print(f"model: cached {target}")
        return target
    from holo.pipeline import convert  # imports VTK: only when a conversion is needed

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    convert(folder, target)  # export_glb writes atomically: no half file is ever cached
    print(f"model: converted in {time.perf_counter() - t:.1f} s -> {target}")
    return target


# --------------------------------------------------------------------------- the baseline


class BytesServer:
    """A minimal grpc.aio server streaming fixed bytes in 1 MiB chunks; no auth, no manifest."""

    def __init__(self, data: bytes, credentials: grpc.ServerCredentials | None = None) -> None:
        self.data = data
        self.credentials = credentials
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: aio.Server | None = None
        self.port = 0

    async def _get(self, request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        data = self.data
        for start in range(0, len(data), CHUNK_BYTES):
            yield data[start : start + CHUNK_BYTES]  # a copy per chunk, as holo's slicing

    async def _start(self) -> None:
        server = aio.server(options=SERVER_OPTIONS)
        handler = grpc.method_handlers_generic_handler(
            "bench.Bytes",
            {"Get": grpc.unary_stream_rpc_method_handler(self._get)},  # None: bytes as they are
        )
        server.add_generic_rpc_handlers((handler,))
        if self.credentials is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = server.add_secure_port("127.0.0.1:0", self.credentials)
        await server.start()
        self._server = server

    def __enter__(self) -> BytesServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0.5), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# --------------------------------------------------------------------------- the two clients


@dataclass
class Fetch:
    first_lod_s: float
    total_s: float
    nbytes: int


@dataclass
class Side:
    """One server as the benchmark sees it: how to make a client and fetch with it."""

    name: str
    port: int
    connect: Callable[[], Any]  # a new client with its own channel
    channel: Callable[[Any], grpc.Channel]
    fetch: Callable[[Any], Fetch]
    close: Callable[[Any], None]


def holo_side(name: str, server: TestServer, model_id: str, ca: bytes | None) -> Side:
    def connect() -> holo.client.HoloClient:
        return server.client(
            "observer", CASE_ID, ca=ca, timeout_s=CALL_TIMEOUT_S, own_connection=True
        )

    def fetch(client: holo.client.HoloClient) -> Fetch:
        result = client.fetch_model(model_id)
        # The client's own clocks: seconds_total is taken at the last byte, before it
        # checks the sha256 and copies the bytes out.
        return Fetch(result.seconds_to_first_lod, result.seconds_total, result.bytes_received)

    return Side(name, server.port, connect, lambda c: c.channel, fetch, lambda c: c.close())


def baseline_side(name: str, port: int, coarse_at: int, ca: bytes | None) -> Side:
    def connect() -> grpc.Channel:
        if ca is None:
            return grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS)
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        return grpc.secure_channel(f"localhost:{port}", credentials, options=CLIENT_OPTIONS)

    def fetch(channel: grpc.Channel) -> Fetch:
        call = channel.unary_stream(BASELINE_METHOD)  # no serializers: bytes as they come
        start = time.perf_counter()
        received = bytearray()
        first = 0.0
        for chunk in call(b"", timeout=CALL_TIMEOUT_S):
            received += chunk
            if not first and len(received) >= coarse_at:
                first = time.perf_counter() - start
        total = time.perf_counter() - start
        return Fetch(first, total, len(received))

    return Side(name, port, connect, lambda c: c, fetch, lambda c: c.close())


# --------------------------------------------------------------------------- 1. one client


def bench_sequential(sides: Sequence[Side], fetches: int, size: int) -> dict[str, list[Fetch]]:
    """Table 1: N sequential fetches per side, alternating, after one warm-up each."""
    clients = {s.name: s.connect() for s in sides}
    runs: dict[str, list[Fetch]] = {s.name: [] for s in sides}
    try:
        for s in sides:
            s.fetch(clients[s.name])  # warm-up: connection, holo's blob cache, allocator
        for _ in range(fetches):  # alternate, so drift in machine load hits every side alike
            for s in sides:
                gc.collect()
                done = s.fetch(clients[s.name])
                if done.nbytes != size:
                    raise SystemExit(f"{s.name}: fetched {done.nbytes} bytes, not {size}")
                runs[s.name].append(done)
    finally:
        for s in sides:
            s.close(clients[s.name])
    return runs


def report_sequential(
    runs: dict[str, list[Fetch]], pairs: Sequence[tuple[str, str]], fetches: int
) -> None:
    rows: list[list[Any]] = []
    for name, fetched in runs.items():
        first = [f.first_lod_s * 1000 for f in fetched]
        total = [f.total_s * 1000 for f in fetched]
        rows.append(
            [
                name,
                f"{statistics.median(first):.1f}",
                f"{percentile(first, 90):.1f}",
                f"{statistics.median(total):.1f}",
                f"{percentile(total, 90):.1f}",
                f"{fetched[0].nbytes / statistics.median(total) / 1e3:.0f}",
            ]
        )
    for holo_name, base_name in pairs:
        h, b = runs[holo_name], runs[base_name]

        def ratio(pick: Callable[[Fetch], float], h: list[Fetch] = h, b: list[Fetch] = b) -> str:
            return f"{statistics.median(map(pick, h)) / statistics.median(map(pick, b)):.2f}"

        label = f"ratio {holo_name} / {base_name}"
        rows.append([label, ratio(lambda f: f.first_lod_s), "", ratio(lambda f: f.total_s), "", ""])
    print_table(
        f"1. one client, sequential fetches (median and p90 of {fetches}, after 1 warm-up)",
        ["server", "first LOD ms", "p90", "full model ms", "p90", "MB/s"],
        rows,
    )
    first_p90 = percentile([f.first_lod_s for f in runs[pairs[0][0]]], 90)
    print(
        f"first coarse LOD, {pairs[0][0]}: p90 {first_p90 * 1000:.1f} ms  "
        f"(target < {FIRST_LOD_TARGET_S * 1000:.0f} ms: {verdict(first_p90 < FIRST_LOD_TARGET_S)})"
    )


# --------------------------------------------------------------------------- 2. many clients


@dataclass
class Crowd:
    wall_s: float
    seconds: list[float]  # per client, from the barrier's release to its last byte
    nbytes: int
    errors: list[str]
    connections: int | None


def fetch_at_once(side: Side, clients: int) -> Crowd:
    """``clients`` threads, each with its own connected channel, released by one barrier."""
    with ExitStack() as stack:
        made = []
        for _ in range(clients):
            client = side.connect()
            stack.callback(side.close, client)
            made.append(client)
        for client in made:  # connected before the start: the transfer is what is timed
            grpc.channel_ready_future(side.channel(client)).result(timeout=30)
        connections = connections_to(side.port)
        barrier = threading.Barrier(clients)

        def one(client: Any) -> tuple[float, float, int, str]:
            barrier.wait(timeout=60)
            start = time.perf_counter()
            try:
                nbytes = side.fetch(client).nbytes
                error = ""
            except Exception as err:  # counted and shown, not raised: the run goes on
                nbytes, error = 0, f"{type(err).__name__}: {err}"
            return start, time.perf_counter(), nbytes, error

        gc.collect()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            done = [
                f.result(timeout=CALL_TIMEOUT_S + 60) for f in [pool.submit(one, c) for c in made]
            ]
    begin = min(d[0] for d in done)
    return Crowd(
        wall_s=max(d[1] for d in done) - begin,
        seconds=[d[1] - d[0] for d in done],
        nbytes=sum(d[2] for d in done),
        errors=[d[3] for d in done if d[3]],
        connections=connections,
    )


def bench_concurrent(
    sides: Sequence[Side], pairs: Sequence[tuple[str, str]], clients: int, rounds: int
) -> None:
    """Table 2: every side ``rounds`` times, alternating; throughput is the median round's."""
    crowds: dict[str, list[Crowd]] = {s.name: [] for s in sides}
    for _ in range(rounds):
        for s in sides:
            crowds[s.name].append(fetch_at_once(s, clients))
    mbps = {n: statistics.median(c.nbytes / c.wall_s / 1e6 for c in cs) for n, cs in crowds.items()}
    rows: list[list[Any]] = []
    for name, cs in crowds.items():
        seconds = [s for c in cs for s in c.seconds]
        rows.append(
            [
                name,
                f"{mbps[name]:.0f}",
                f"{statistics.median(c.wall_s for c in cs):.2f}",
                f"{percentile(seconds, 50):.2f}",
                f"{percentile(seconds, 99):.2f}",
                f"{cs[0].connections if cs[0].connections is not None else '?'}",
                sum(len(c.errors) for c in cs),
            ]
        )
    for holo_name, base_name in pairs:
        label = f"ratio {holo_name} / {base_name}"
        rows.append([label, f"{mbps[holo_name] / mbps[base_name]:.2f}", "", "", "", "", ""])
    print_table(
        f"2. {clients} clients fetching the model at once (median of {rounds} round(s); "
        "p50 / p99 over all clients of all rounds)",
        ["server", "MB/s", "wall s", "p50 s", "p99 s", "TCP conns", "errors"],
        rows,
    )
    for name, cs in crowds.items():
        for error in sorted({e for c in cs for e in c.errors})[:3]:
            print(f"  {name} error: {error[:300]}")
    ratio = mbps[pairs[0][0]] / mbps[pairs[0][1]]
    print(
        f"throughput at {clients} clients, {pairs[0][0]} / {pairs[0][1]}: {ratio:.2f}  "
        f"(target >= {THROUGHPUT_RATIO_TARGET}: {verdict(ratio >= THROUGHPUT_RATIO_TARGET)})"
    )


# --------------------------------------------------------------------------- main


def load_make_pki() -> Callable[[Path], Any] | str:
    """tests/tls.py's make_pki, or why TLS rows are skipped."""
    if importlib.util.find_spec("cryptography") is None:
        return "cryptography is not installed (pip install -e '.[dev]')"
    path = Path(__file__).resolve().parents[1] / "tests" / "tls.py"
    spec = importlib.util.spec_from_file_location("holo_bench_tls", path)
    if spec is None or spec.loader is None:
        return f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module.make_pki  # type: ignore[no-any-return]


@contextmanager
def servers(
    glb: Path, manifest: dict[str, Any], scratch: Path, tls: bool
) -> Iterator[list[tuple[Side, Side]]]:
    """(holo, baseline) per transport, plain text then TLS, all started; stopped on exit."""
    data = glb.read_bytes()
    coarse_at = manifest["lods"][0]["complete_at_bytes"]
    transports: list[tuple[str, Any]] = [("plain", None)]
    make_pki = load_make_pki() if tls else "--no-tls"
    if callable(make_pki):
        transports.append(("TLS", make_pki(scratch / "pki")))
    else:
        print(f"TLS rows skipped: {make_pki}")
    with ExitStack() as stack:
        pairs = []
        for label, pki in transports:
            data_dir = scratch / f"store-{label}"
            server = stack.enter_context(
                TestServer(data_dir, tls=(pki.cert, pki.key) if pki else None)
            )
            # Recorded the way a finished job records a model (a placeholder study).
            model_id = server.publish_model(CASE_ID, glb)
            credentials = None
            if pki:
                pair = (pki.key.read_bytes(), pki.cert.read_bytes())
                credentials = grpc.ssl_server_credentials([pair])
            base = stack.enter_context(BytesServer(data, credentials))
            ca = pki.ca_pem if pki else None
            pairs.append(
                (
                    holo_side(f"holo {label}", server, model_id, ca),
                    baseline_side(f"baseline {label}", base.port, coarse_at, ca),
                )
            )
        yield pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--fetches", type=int, default=20, help="sequential fetches (table 1)")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (table 2)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of table 2 per server")
    parser.add_argument("--no-tls", action="store_true", help="plain-text rows only")
    parser.add_argument(
        "--quick", action="store_true", help="5 fetches, 1 round of table 2, no TLS"
    )
    args = parser.parse_args()
    if args.quick:
        args.fetches, args.rounds, args.no_tls = min(args.fetches, 5), 1, True
    if args.fetches < 2 or args.clients < 1 or args.rounds < 1:
        parser.error("--fetches must be at least 2, --clients and --rounds at least 1")
    started = time.perf_counter()
    print(
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
        ", loopback, servers and clients in this process"
    )
    print(
        "versions: "
        + ", ".join(f"{p} {package_version(p)}" for p in ("holo", "grpcio", "protobuf"))
    )
    source = cached_glb(args.data / SERIES)
    glb = source.read_bytes()
    manifest = model_manifest(glb)
    lods = manifest["lods"]
    full = lods[-1]["triangles"]
    print(
        f"model: {len(glb):,} bytes ({len(glb) / 2**20:.1f} MiB, "
        f"{-(-len(glb) // CHUNK_BYTES)} chunks of 1 MiB), {full:,} triangles at full detail "
        f"(>= {MIN_TRIANGLES:,}: {'yes' if full >= MIN_TRIANGLES else 'NO'})"
    )
    print(
        "LODs: "
        + "; ".join(
            f"{lod['name']} {lod['triangles']:,} tri complete at {lod['complete_at_bytes']:,} B"
            for lod in lods
        )
    )
    with (
        tempfile.TemporaryDirectory(prefix="holo-bench-serve-") as tmp,
        servers(source, manifest, Path(tmp), tls=not args.no_tls) as transports,
    ):
        sides = [side for pair in transports for side in pair]
        pairs = [(h.name, b.name) for h, b in transports]
        runs = bench_sequential(sides, args.fetches, len(glb))
        report_sequential(runs, pairs, args.fetches)
        print(
            "first LOD = the call to the first "
            f"{lods[0]['complete_at_bytes']:,} bytes ({lods[0]['name']}) received; "
            "holo's times are FetchResult's own (seconds_to_first_lod, seconds_total)"
        )
        coarse_at = lods[0]["complete_at_bytes"]
        print(
            f"holo's chunks also end at each LOD boundary: lod0 is complete with the message "
            f"ending at byte {coarse_at:,}; the baseline's 1 MiB chunks hold it back until "
            f"byte {min(CHUNK_BYTES, len(glb)):,}"
        )
        bench_concurrent(sides, pairs, args.clients, args.rounds)
        print(
            "p50 / p99 s = per client, from the barrier to fetch_model's return (holo: "
            "incl. its sha256 check) or the baseline's last byte; MB/s = all bytes / wall"
        )
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
