"""Shared-session load: one presenter at 60 Hz, experts, N observers; against bare grpc.aio.

Each scenario starts real ``holo serve`` processes (memory bus for one node; a real
``redis-server`` and ``--bus redis://`` for three), publishes the sample knee as the case's
model, and runs ``holo simulate --json`` against them as a separate process, which reports
per-role delivery latency (event ``t_ns`` on the session clock to receipt), events lost,
resyncs, and the servers' CPU and memory (from /proc). Asserts nothing; prints the table
with the issue's targets marked ``met`` or ``MISSED``. The tables (README, "session.py"):

1. one node (memory bus) at each ``--observers`` size, and ``--cluster-observers`` across
   three nodes on a Redis bus;
2. holo against a bare grpc.aio server (``bare_fanout.py``: the same fan-out, same crowd,
   sizes and rates, no holo code), with holo's server-side fan-out time (``HOLO_FANOUT_TIMES``)
   and server CPU per message an observer received;
3. the latency each role needs (presenter and experts, observers), against its target;
4. the observers' ephemeral rate cap (``holo serve --observer-ephemeral-hz``): CPU and bytes
   per observer at each ``--observer-hz``, and the sync error against 30 fps video of a
   timeline that interpolates between the values and of one that holds them;
5. one node as several ``holo serve`` processes sharing a Redis bus (``--processes``).

The simulator's clients run on the same machine as the servers (2 cores here): their own
CPU cost is in every latency figure, so these are upper bounds for a deployment where
headsets are other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the redis-server helper the tests use

import bare_fanout  # noqa: E402
from tables import print_table  # noqa: E402

from holo.testing import ServeProcess  # noqa: E402
from holo.testing.simulate import percentiles  # noqa: E402

HOLO = [sys.executable, "-m", "holo.cli"]
SAMPLE = REPO / "sample_data" / "knee_ct"


class RunFailedError(Exception):
    """A ``holo`` command of the benchmark failed; its last stderr line says why."""


def _run(*args: str) -> str:
    result = subprocess.run([*HOLO, *args], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RunFailedError(f"holo {args[0]} failed: {last}")
    return result.stdout


def publish_model(node: ServeProcess, case: str) -> str:
    token = node.token("radiologist", case)
    out = json.loads(
        _run(
            "upload",
            str(SAMPLE),
            "--convert",
            "--server",
            node.address,
            "--insecure",
            "--token",
            token,
            "--json",
        )
    )
    return str(out["job"]["model_id"]["value"])


def simulate(
    nodes: list[ServeProcess],
    secret_args: list[str],
    case: str,
    model: str,
    args: argparse.Namespace,
    observers: int,
) -> dict[str, Any]:
    command = ["simulate", "--case", case, *secret_args, "--insecure", "--json"]
    command += ["--server", ",".join(n.address for n in nodes), "--model", model]
    command += ["--experts", str(args.experts), "--observers", str(observers)]
    command += ["--rate", str(args.rate), "--seconds", str(args.seconds)]
    command += ["--observers-per-process", str(args.observers_per_process)]
    for n in nodes:
        command += ["--server-pid", str(n.pid)]
    return dict(json.loads(_run(*command)))


def attempt(*args: Any) -> dict[str, Any]:
    """simulate(), or the reason it failed (the other scenarios still run)."""
    try:
        return simulate(*args)
    except RunFailedError as err:
        return {"failed": str(err)}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


#: The simulator's observers share one token: a crowd of 1,000 on one user is over the
#: per-user join and stream defaults (holo.server.ratelimit), so those two are off.
CROWD = ("--rate-limit", "streams=0", "--rate-limit", "join_burst=0")


def start_node(data: Path, fanout: Path, **kwargs: Any) -> ServeProcess:
    """``holo serve`` with its fan-out timer writing to ``fanout`` (and :data:`CROWD`)."""
    os.environ["HOLO_FANOUT_TIMES"] = str(fanout)
    try:
        return ServeProcess(data, options=CROWD, **kwargs)
    finally:
        del os.environ["HOLO_FANOUT_TIMES"]


def fanout_ms(files: list[Path], report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Percentiles of the fan-out times (``event``, ``frame``) the nodes wrote for items
    accepted inside the report's measured window."""
    start, end = report.get("window_unix_ns", (0, 0))
    times: dict[str, list[float]] = {"event": [], "frame": []}
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            kind, unix, ms = line.split()
            if start <= int(unix) <= end:
                times[kind].append(float(ms))
    return {kind: percentiles(v) for kind, v in times.items()}


def run_bare(args: argparse.Namespace, observers: int) -> dict[str, Any]:
    """The same crowd against a fresh ``bare_fanout.py serve`` process."""
    server = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "bare_fanout.py"), "serve"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        port = re.search(r":(\d+)", server.stderr.readline())
        if port is None:
            return {"failed": "the bare server did not start"}
        return asyncio.run(
            bare_fanout.run_crowd(
                f"127.0.0.1:{port.group(1)}",
                server.pid,
                experts=args.experts,
                observers=observers,
                rate=args.rate,
                seconds=args.seconds,
                per_process=args.observers_per_process,
            )
        )
    finally:
        server.terminate()
        server.wait(10)


def us_per_message(r: dict[str, Any]) -> float:
    """Server CPU per stream message an observer received, in microseconds."""
    cpu_s = r["server"]["cpu_percent"] / 100 * r["seconds"]
    return 1e6 * cpu_s / max(1, r["roles"]["observer"]["messages"])


async def sync_error(node: ServeProcess, case: str, model: str, seconds: float) -> dict[str, Any]:
    """Ephemeral sync against 30 fps video, as an observer's timeline pairs values with frames.

    The presenter drags the model at 60 Hz along x at 0.1 m/s (x says the moment of the
    pose: ``x / 0.1`` s after the start), stamping each value as it sends it. An observer
    feeds two timelines, one interpolating, one holding the newest value. For each 30 fps
    frame moment of the run (after the first value and before the last), the pose each
    timeline shows gives the moment it belongs to; the error is that moment's distance from
    the frame's, in frames (rounded: 0 means the hologram shown is that frame's).
    """
    from holo.client.session import SessionClient
    from holo.client.timeline import SessionTimeline
    from holo.session.records import EphemeralUpdate, Pose, SceneModel

    speed = 0.1  # m/s
    held = SessionTimeline(interpolate=False)
    smooth = SessionTimeline(interpolate=True)

    def take(update: EphemeralUpdate) -> None:
        held.on_ephemeral(update)

    presenter = SessionClient([node.address], token=node.token("presenter", case), insecure=True)
    observer = SessionClient(
        [node.address],
        token=node.token("observer", case),
        insecure=True,
        timeline=smooth,
        on_ephemeral=take,
    )
    try:
        session_id = (await presenter.create_session()).session_id.value
        await presenter.join(session_id)
        await presenter.load_model(model, Pose.IDENTITY)
        await observer.join(session_id)
        t0 = time.time_ns()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            now = time.time_ns()
            pose = Pose((speed * (now - t0) / 1e9, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
            await presenter.drag(model, pose, t_ns=now)
            await asyncio.sleep(1 / 60)
        await asyncio.sleep(0.5)  # the last values arrive (the jitter buffer's job)
        received = [u.t_ns for u in observer.latest.values() if u.channel == "drag"]
        last = max(received, default=t0)
    finally:
        await asyncio.gather(presenter.close(), observer.close(), return_exceptions=True)
    out: dict[str, Any] = {}
    for name, timeline in (("interpolated", smooth), ("held", held)):
        errors = []
        frame_ns = 1e9 / 30
        for k in range(math.ceil(0.1e9 / frame_ns), int((last - t0) / frame_ns)):
            t = t0 + int(k * frame_ns)
            value = timeline.state_at(t).ephemeral.get((presenter.participant_id, "drag"))
            if value is None or not isinstance(value.value, SceneModel):
                continue
            shown = t0 + value.value.anchor_pose.position[0] / speed * 1e9
            errors.append(round((t - shown) / frame_ns))
        out[name] = {
            "frames": len(errors),
            "max": max(errors, default=0),
            "nonzero": sum(e != 0 for e in errors),
        }
    return out


def one_node_table(rows: list[tuple[str, int, int, dict[str, Any]]]) -> None:
    header = [
        "scenario",
        "nodes",
        "observers",
        "event p50 ms",
        "event p99 ms",
        "pose p50 ms",
        "pose p99 ms",
        "lost",
        "resyncs",
        "server CPU %",
        "clients CPU %",
        "CPU ms/obs/s",
        "KB/client",
    ]
    table = []
    for name, nodes_n, n, r in rows:
        obs = r["roles"]["observer"]
        server = r.get("server", {})
        table.append(
            [
                name,
                str(nodes_n),
                str(n),
                f"{obs['event_latency_ms']['p50']:.1f}",
                f"{obs['event_latency_ms']['p99']:.1f}",
                f"{obs['ephemeral_latency_ms']['p50']:.1f}",
                f"{obs['ephemeral_latency_ms']['p99']:.1f}",
                str(r["events_lost"]),
                str(r["resyncs"]),
                f"{server.get('cpu_percent', 0):.0f}",
                f"{r.get('simulator_cpu_percent', 0):.0f}",
                f"{server.get('cpu_ms_per_observer_second', 0):.2f}",
                f"{server.get('rss_kb_per_client_joined', 0):.1f}",
            ]
        )
    print_table("1. holo: one node and a cluster", header, table)
    print(
        "event = durable events (commits, annotations, presence) to observers; pose = ephemeral "
        "(drag, head pose, pointer), newest value only; CPU % of one core (servers: all nodes "
        "summed; clients: the simulator's processes)"
    )


def observer_p99(r: dict[str, Any]) -> float:
    obs = r["roles"]["observer"]
    return float(max(obs["event_latency_ms"]["p99"], obs["ephemeral_latency_ms"]["p99"]))


def baseline_table(pairs: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]]) -> None:
    """holo against the bare server, per crowd size: latency ratios per role and kind, the
    server's CPU per observer message, holo's fan-out time."""
    header = ["observers", "role", "kind", "holo p50", "bare p50", "p50 x", "holo p99"]
    header += ["bare p99", "p99 x"]
    table = []
    for n, holo, bare, _fan in pairs:
        for role in ("presenter", "expert", "observer"):
            for kind, key in (
                ("durable", "event_latency_ms"),
                ("ephemeral", "ephemeral_latency_ms"),
            ):
                h, b = holo["roles"][role][key], bare["roles"][role][key]
                table.append(
                    [
                        str(n),
                        role,
                        kind,
                        f"{h['p50']:.1f}",
                        f"{b['p50']:.1f}",
                        f"{h['p50'] / max(b['p50'], 1e-3):.2f}",
                        f"{h['p99']:.1f}",
                        f"{b['p99']:.1f}",
                        f"{h['p99'] / max(b['p99'], 1e-3):.2f}",
                    ]
                )
    print_table("2a. holo / bare grpc.aio, same crowd: latency ms and ratios", header, table)
    header = ["observers", "server", "lost", "server CPU %", "CPU us/obs msg", "obs msgs/s"]
    header += ["obs KB/s", "fan-out event p50/p99 ms", "fan-out frame p50/p99 ms"]
    table = []
    for n, holo, bare, fan in pairs:
        for name, r in (("holo", holo), ("bare", bare)):
            obs = r["roles"]["observer"]
            fan_cells = ["", ""]
            if name == "holo":
                fan_cells = [
                    f"{fan['event']['p50']:.1f} / {fan['event']['p99']:.1f}",
                    f"{fan['frame']['p50']:.1f} / {fan['frame']['p99']:.1f}",
                ]
            table.append(
                [
                    str(n),
                    name,
                    str(r["events_lost"]),
                    f"{r['server']['cpu_percent']:.0f}",
                    f"{us_per_message(r):.1f}",
                    f"{obs['messages'] / r['seconds']:.0f}",
                    f"{obs['bytes'] / r['seconds'] / 1024:.0f}",
                    *fan_cells,
                ]
            )
    print_table("2b. server cost, same crowd", header, table)
    print(
        "CPU us/obs msg: the server process's CPU over the measured window / the stream "
        "messages all observers received in it. fan-out: holo's, from a durable event's fold "
        "(an ephemeral frame's making, after up to one pacing interval) to the write of the "
        "last subscriber's message carrying it (HOLO_FANOUT_TIMES); the bare server is not "
        "instrumented. Both servers pace observers' ephemeral values at 15 Hz, the others' at "
        "60 Hz, so both latencies include that wait."
    )
    for n, holo, bare, _fan in pairs:
        if n != 500:
            continue
        ratio = observer_p99(holo) / max(observer_p99(bare), 1e-3)
        lost = holo["events_lost"]
        print(
            f"target: 500 observers on one node, holo's observer p99 within 1.5x bare's, 0 lost: "
            f"{ratio:.2f}x, {lost} lost: {verdict(ratio <= 1.5 and lost == 0)}"
        )


def roles_table(rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Per-role p99 against the latency each role needs."""
    targets = {
        ("presenter", "durable"): 50.0,
        ("presenter", "ephemeral"): 50.0,
        ("expert", "durable"): 50.0,
        ("expert", "ephemeral"): 50.0,
        ("observer", "durable"): 100.0,
        ("observer", "ephemeral"): 250.0,  # FrameSync's default jitter buffer
    }
    header = ["observers", "role", "kind", "p50 ms", "p99 ms", "target p99 ms", "verdict"]
    table = []
    for n, r in rows:
        for (role, kind), target in targets.items():
            key = "event_latency_ms" if kind == "durable" else "ephemeral_latency_ms"
            got = r["roles"][role][key]
            table.append(
                [
                    str(n),
                    role,
                    kind,
                    f"{got['p50']:.1f}",
                    f"{got['p99']:.1f}",
                    f"< {target:g}",
                    verdict(got["p99"] < target),
                ]
            )
    print_table("3. the latency each role needs (holo, one node)", header, table)
    print(
        "presenter and experts act on what they see: < 50 ms; observers watch: durable "
        "< 100 ms, ephemeral < the jitter buffer their timeline holds video back by (250 ms, "
        "holo.client.timeline.FrameSync) so every value of a frame's moment has arrived"
    )


def rate_cap_table(rows: list[tuple[float, dict[str, Any], dict[str, Any]]], n: int) -> None:
    header = ["observer Hz", "obs pose p99 ms", "server CPU %", "CPU ms/obs/s", "eph msgs/obs/s"]
    header += ["eph bytes/obs/s", "sync err interpolated", "sync err held"]
    table = []
    base_cpu = base_bytes = 0.0
    for hz, r, sync in rows:
        obs = r["roles"]["observer"]
        cpu = r["server"]["cpu_ms_per_observer_second"]
        eph_bytes = obs["ephemeral_bytes"] / r["seconds"] / n
        if not base_cpu:
            base_cpu, base_bytes = cpu, eph_bytes
        cells = []
        for name in ("interpolated", "held"):
            e = sync.get(name, {})
            cells.append(f"max {e.get('max', '-')}, {e.get('nonzero', '-')}/{e.get('frames', '-')}")
        table.append(
            [
                f"{hz:g}",
                f"{obs['ephemeral_latency_ms']['p99']:.1f}",
                f"{r['server']['cpu_percent']:.0f}",
                f"{cpu:.2f} ({cpu / base_cpu:.2f}x)",
                f"{obs['ephemeral_messages'] / r['seconds'] / n:.1f}",
                f"{eph_bytes:.0f} ({eph_bytes / max(base_bytes, 1):.2f}x)",
                *cells,
            ]
        )
    print_table(f"4. observers' ephemeral rate cap, {n} observers, one node", header, table)
    print(
        "ratios against the first row; sync err: frames between a 30 fps frame's moment and "
        "the moment of the drag pose the observer's timeline shows with it (max, and frames "
        "off / frames checked); interpolated = SessionTimeline's default, held = "
        "interpolate=False. Target: 0 frames."
    )
    for hz, _r, sync in rows:
        e = sync.get("interpolated", {})
        ok = e.get("frames", 0) > 0 and e.get("nonzero", 1) == 0
        print(f"target: sync error 0 frames at {hz:g} Hz, interpolated: {verdict(ok)}")


def scaling_table(rows: list[tuple[str, int, dict[str, Any]]], n: int) -> None:
    header = ["one node as", "event p50 ms", "event p99 ms", "pose p50 ms", "pose p99 ms"]
    header += ["lost", "resyncs", "server CPU %", "clients CPU %", "x one process p99"]
    table = []
    base = observer_p99(rows[0][2]) if rows else 1.0
    for name, _k, r in rows:
        obs = r["roles"]["observer"]
        table.append(
            [
                name,
                f"{obs['event_latency_ms']['p50']:.1f}",
                f"{obs['event_latency_ms']['p99']:.1f}",
                f"{obs['ephemeral_latency_ms']['p50']:.1f}",
                f"{obs['ephemeral_latency_ms']['p99']:.1f}",
                str(r["events_lost"]),
                str(r["resyncs"]),
                f"{r['server']['cpu_percent']:.0f}",
                f"{r.get('simulator_cpu_percent', 0):.0f}",
                f"{observer_p99(r) / max(base, 1e-3):.2f}",
            ]
        )
    print_table(f"5. one node, more than one core: {n} observers", header, table)
    print(
        "several `holo serve` processes on this machine sharing a Redis bus, the same crowd "
        "assigned to them round robin by the simulator (each process has its own port and "
        "data folder: the model is published on the first, where the presenter joins; "
        "SO_REUSEPORT sharing of one port is not used). Server CPU: all processes summed."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observers", default="100,500,1000", help="one-node crowd sizes")
    parser.add_argument("--cluster-observers", type=int, default=1000, help="across three nodes")
    parser.add_argument("--experts", type=int, default=2)
    parser.add_argument(
        "--observers-per-process", type=int, default=250, help="the simulator's worker size"
    )
    parser.add_argument("--rate", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--observer-hz",
        default="30,15,10",
        help="table 4: observers' ephemeral rates (ratios against the first; default 15)",
    )
    parser.add_argument("--cap-observers", type=int, default=500, help="table 4's crowd")
    parser.add_argument(
        "--processes", default="1,2,3", help="table 5: holo serve processes for one node"
    )
    parser.add_argument("--scale-observers", type=int, default=500, help="table 5's crowd")
    parser.add_argument("--only", default="1,2,3,4,5", help="tables to run (3 comes with 1 and 2)")
    parser.add_argument(
        "--quick", action="store_true", help="100 observers, 5 s, 300 on three nodes, 100 elsewhere"
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.observers.split(",") if n]
    if args.quick:
        sizes, args.cluster_observers, args.seconds = [100], 300, 5.0
        args.cap_observers = args.scale_observers = 100
    only = {int(k) for k in args.only.split(",") if k}
    rates = [float(h) for h in args.observer_hz.split(",") if h]
    process_counts = [int(k) for k in args.processes.split(",") if k]
    started = time.perf_counter()
    print(
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}; "
        f"presenter at {args.rate:g} Hz (drag + head pose), commit every 1 s, marker every 3 s; "
        f"{args.experts} experts pointing at {args.rate / 2:g} Hz, a stroke every 5 s; "
        f"{args.seconds:g} s per run; clients and servers on this machine"
    )
    rows: list[tuple[str, int, int, dict[str, Any]]] = []
    pairs: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    caps: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
    scaling: list[tuple[str, int, dict[str, Any]]] = []
    failures: list[tuple[str, int, str]] = []

    def keep(name: str, n: int, r: dict[str, Any]) -> bool:
        if "failed" in r:
            failures.append((name, n, r["failed"]))
            return False
        return True

    with tempfile.TemporaryDirectory(prefix="holo-bench-session-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        if only & {1, 2, 3}:
            node = start_node(root / "single", root / "fanout-single.txt")
            stack.callback(node.stop)
            secret_args = ["--data", str(root / "single")]
            for n in sizes:
                case = f"bench-{n}"
                model = publish_model(node, case)
                r = attempt([node], secret_args, case, model, args, n)
                if keep("one node", n, r):
                    rows.append(("one node, memory bus", 1, n, r))
                print(f"  ran {n} observers on one node", flush=True)
                if only & {2, 3}:
                    bare = run_bare(args, n)
                    if keep("bare grpc.aio", n, r) and keep("bare grpc.aio", n, bare):
                        pairs.append((n, r, bare, fanout_ms([root / "fanout-single.txt"], r)))
                    print(f"  ran {n} observers on the bare grpc.aio server", flush=True)
            node.stop()
        if 4 in only:
            for hz in rates:
                name = f"cap{hz:g}"
                node = ServeProcess(
                    root / name, options=(*CROWD, "--observer-ephemeral-hz", f"{hz:g}")
                )
                stack.callback(node.stop)
                model = publish_model(node, f"bench-{name}")
                r = attempt(
                    [node],
                    ["--data", str(root / name)],
                    f"bench-{name}",
                    model,
                    args,
                    args.cap_observers,
                )
                # a model is of one case: the sync run's case gets its own
                sync_model = publish_model(node, f"sync-{name}")
                sync = asyncio.run(sync_error(node, f"sync-{name}", sync_model, args.seconds))
                if keep(f"observers at {hz:g} Hz", args.cap_observers, r):
                    caps.append((hz, r, sync))
                node.stop()
                print(f"  ran observers at {hz:g} Hz", flush=True)
        if only & {1, 5}:
            from redis_server import RedisServer

            from holo.auth import load_secret

            url = stack.enter_context(RedisServer())
            load_secret(root / "shared")
            secret = root / "shared" / "secret.key"
            secret_args = ["--secret", str(secret)]
            for k in process_counts if 5 in only else []:
                files = [root / f"fanout-p{k}-{i}.txt" for i in range(k)]
                nodes = [
                    start_node(root / f"p{k}-{i}", files[i], bus=url, secret=secret)
                    for i in range(k)
                ]
                for one in nodes:
                    stack.callback(one.stop)
                model = publish_model(nodes[0], f"bench-p{k}")
                n = args.scale_observers
                r = attempt(nodes, secret_args, f"bench-p{k}", model, args, n)
                name = f"{k} process{'es' if k > 1 else ''}, Redis bus"
                if keep(name, n, r):
                    scaling.append((name, k, r))
                for one in nodes:
                    one.stop()
                print(f"  ran {n} observers on {k} processes", flush=True)
            if 1 in only:
                files = [root / f"fanout-node{k}.txt" for k in range(3)]
                nodes = [
                    start_node(root / f"node{k}", files[k], bus=url, secret=secret)
                    for k in range(3)
                ]
                for one in nodes:
                    stack.callback(one.stop)
                model = publish_model(nodes[0], "bench-cluster")
                n = args.cluster_observers
                r = attempt(nodes, secret_args, "bench-cluster", model, args, n)
                if keep("three nodes", n, r):
                    rows.append(("three nodes, Redis bus", 3, n, r))
                print(f"  ran {n} observers on three nodes", flush=True)
    print()
    if rows:
        one_node_table(rows)
        for name, _nodes, n, r in rows:
            p99 = observer_p99(r)
            lost = r["events_lost"]
            if name.startswith("one") and n == 500:
                ok = verdict(p99 < 50 and lost == 0)
                print(
                    f"target: 500 observers, one node, p99 < 50 ms, 0 lost: {p99:.1f} ms,", end=" "
                )
                print(f"{lost}: {ok}")
            if name.startswith("three"):
                ok = verdict(p99 < 100 and lost == 0)
                print(f"target: {n} observers, three nodes, p99 < 100 ms: {p99:.1f} ms, ", end="")
                print(f"{lost} lost: {ok}")
    if pairs:
        baseline_table(pairs)
        roles_table([(n, holo) for n, holo, _b, _f in pairs])
    if caps:
        rate_cap_table(caps, args.cap_observers)
    if scaling:
        scaling_table(scaling, args.scale_observers)
    for name, n, why in failures:
        print(f"FAILED: {name}, {n} observers: {why}")
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
