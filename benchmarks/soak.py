"""Soak: a mixed load on one ``holo serve`` process for ``--minutes``; does anything grow?

One process (``holo.testing.ServeProcess``, memory bus, a media folder with a generated
640x360 clip) carries, all at once and for the whole run:

- a main session: a presenter dragging the sample knee and moving its head at 30 Hz and
  committing the anchor every second; a looped file video track watched by two viewers;
  a recording, stopped and started anew every ``--recording-minutes``; one observer that
  measures latency (event ``t_ns`` to receipt, durable and ephemeral);
- churn: every 10 s a group of ``--churn`` observers joins one of the case sessions
  (a new case, opened by a presenter of its own, every minute), stays 10-30 s and leaves;
- an upload and conversion of ``sample_data/knee_ct`` every ``--convert-every`` seconds
  (``holo upload --convert``, a process of its own).

Every ``--sample-seconds`` it samples the server process's resident memory and open file
descriptors (``/proc``) and the latency of that interval. At the end: the table and a
growth verdict: the least-squares slope of RSS and of descriptors over the second half of
the run (the first half is warm-up: caches filling, the session eviction grace of 5 min,
``HubConfig.evict_after_s``), against ``--rss-slope`` MB/min (default 0.5: 30 MB an hour,
more than a day of that would need a restart) and 0.2 descriptors a minute. Asserts
nothing.

To find what grows: ``--tracemalloc DIR`` starts the server with ``HOLO_TRACEMALLOC=DIR``
(:mod:`holo.server.memtrace`: it traces Python's allocations, several times slower) and
writes a snapshot there at every sample, with the RSS, glibc's heap figures and a census
of the garbage in reference cycles; ``benchmarks/memdiff.py DIR/003.tracemalloc
DIR/010.tracemalloc`` prints what grew between two, by traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from session import publish_model  # noqa: E402
from tables import print_table  # noqa: E402
from video import make_clip  # noqa: E402

from holo.client.channel import ClientError  # noqa: E402
from holo.client.session import SessionClient  # noqa: E402
from holo.client.video import VideoClient  # noqa: E402
from holo.session.records import Pose  # noqa: E402
from holo.testing import ServeProcess  # noqa: E402
from holo.testing.simulate import percentiles  # noqa: E402

HOLO = [sys.executable, "-m", "holo.cli"]
SAMPLE = REPO / "sample_data" / "knee_ct"


def usage(pid: int) -> tuple[float, int]:
    """(resident MB, open file descriptors) of a process."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


class Soak:
    def __init__(self, node: ServeProcess, args: argparse.Namespace) -> None:
        self.node = node
        self.args = args
        self.event_ms: list[float] = []
        self.ephemeral_ms: list[float] = []
        self.counts = {"joins": 0, "sessions": 0, "conversions": 0, "failed": 0, "recordings": 0}
        self.errors: list[str] = []

    def client(self, role: str, case: str, **kwargs: Any) -> SessionClient:
        return SessionClient(
            self.node.address, token=self.node.token(role, case), insecure=True, **kwargs
        )

    async def main_session(self, stop: float) -> None:
        node, case = self.node, "soak-main"
        model = await asyncio.to_thread(publish_model, node, case)
        presenter = self.client("presenter", case)
        probe = self.client(
            "observer",
            case,
            on_event=lambda e: self.event_ms.append((time.time_ns() - e.t_ns) / 1e6),
            on_ephemeral=lambda u: self.ephemeral_ms.append((time.time_ns() - u.t_ns) / 1e6),
        )
        video = VideoClient(node.address, token=node.token("presenter", case), insecure=True)
        viewers = [
            VideoClient(node.address, token=node.token("observer", case), insecure=True)
            for _ in range(2)
        ]
        tasks: list[asyncio.Task[None]] = []
        try:
            session_id = (await presenter.create_session()).session_id.value
            await presenter.join(session_id)
            await presenter.load_model(model, Pose.IDENTITY)
            await probe.join(session_id)
            track = await video.open_track(
                session_id, "endoscope", "endoscope", file="clip.mp4", loop=True
            )

            async def watch(viewer: VideoClient) -> None:
                async for _item in viewer.watch(track.track_id.value):
                    if time.monotonic() > stop:
                        return

            tasks = [asyncio.create_task(watch(v)) for v in viewers]
            await video.start_recording(session_id)
            self.counts["recordings"] += 1
            next_commit = next_rotation = time.monotonic()
            next_rotation += 60 * self.args.recording_minutes
            while (now := time.monotonic()) < stop:
                t = now / 2
                pose = Pose((0.2 * math.sin(t), 1.1, -0.5), (0.0, 0.0, 0.0, 1.0))
                try:
                    await presenter.drag(model, pose, t_ns=time.time_ns())
                    await presenter.head_pose(pose, t_ns=time.time_ns())
                    if now >= next_commit:
                        await presenter.commit_anchor(model, pose)
                        next_commit = now + 1.0
                except ClientError as err:
                    # A value refused (stamped over 1 s before the server read it: the
                    # server stalled) is counted; the run goes on.
                    self.errors.append(f"presenter: {err.code.name}")
                if now >= next_rotation:
                    await video.stop_recording(session_id)
                    await video.start_recording(session_id)
                    self.counts["recordings"] += 1
                    next_rotation = now + 60 * self.args.recording_minutes
                await asyncio.sleep(max(0.0, 1 / 30 - (time.monotonic() - now)))
            await video.stop_recording(session_id)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(
                presenter.close(),
                probe.close(),
                video.close(),
                *(v.close() for v in viewers),
                return_exceptions=True,
            )

    async def churn(self, stop: float) -> None:
        """New case sessions each minute; groups of observers joining and leaving."""
        cases: list[tuple[str, str, SessionClient]] = []  # (case, session id, its presenter)
        groups: list[asyncio.Task[None]] = []

        async def visit(case: str, session_id: str) -> None:
            crowd = [self.client("observer", case) for _ in range(self.args.churn)]
            try:
                await asyncio.gather(*(c.join(session_id) for c in crowd))
                self.counts["joins"] += len(crowd)
                await asyncio.sleep(random.uniform(10, 30))
            except Exception as err:
                self.errors.append(f"churn: {type(err).__name__}: {err}")
            finally:
                await asyncio.gather(*(c.close() for c in crowd), return_exceptions=True)

        next_case = time.monotonic()
        try:
            while time.monotonic() < stop:
                if time.monotonic() >= next_case:
                    case = f"soak-{self.counts['sessions']}"
                    presenter = self.client("presenter", case)
                    session_id = (await presenter.create_session()).session_id.value
                    await presenter.join(session_id)
                    self.counts["sessions"] += 1
                    cases.append((case, session_id, presenter))
                    if len(cases) > 2:  # the oldest presenter leaves: its session ends
                        _c, _s, old = cases.pop(0)
                        await old.leave()
                        await old.close()
                    next_case = time.monotonic() + 60
                case, session_id, _p = random.choice(cases)
                groups = [g for g in groups if not g.done()]
                groups.append(asyncio.create_task(visit(case, session_id)))
                await asyncio.sleep(10)
        finally:
            await asyncio.gather(*groups, return_exceptions=True)
            await asyncio.gather(*(p.close() for _c, _s, p in cases), return_exceptions=True)

    async def conversions(self, stop: float) -> None:
        k = 0
        while time.monotonic() < stop:
            k += 1
            token = self.node.token("radiologist", f"soak-upload-{k}")
            command = [*HOLO, "upload", str(SAMPLE), "--convert", "--server", self.node.address]
            command += ["--insecure", "--token", token, "--json"]
            result = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=600
            )
            self.counts["conversions" if result.returncode == 0 else "failed"] += 1
            await asyncio.sleep(max(0.0, min(self.args.convert_every, stop - time.monotonic())))

    async def run(self) -> list[dict[str, Any]]:
        start = time.monotonic()
        stop = start + 60 * self.args.minutes
        work = [
            asyncio.create_task(self.main_session(stop)),
            asyncio.create_task(self.churn(stop)),
            asyncio.create_task(self.conversions(stop)),
        ]
        samples = []
        rss, fds = usage(self.node.pid)
        samples.append({"minute": 0.0, "rss_mb": rss, "fds": fds, **self._take()})
        while time.monotonic() < stop:
            await asyncio.sleep(min(self.args.sample_seconds, max(0.0, stop - time.monotonic())))
            rss, fds = usage(self.node.pid)
            minute = (time.monotonic() - start) / 60
            if self.args.tracemalloc is not None:  # holo.server.memtrace: a snapshot
                os.kill(self.node.pid, signal.SIGUSR1)
            samples.append({"minute": minute, "rss_mb": rss, "fds": fds, **self._take()})
            print(
                f"  {minute:5.1f} min: RSS {rss:.1f} MB, {fds} fds, durable p99 "
                f"{samples[-1]['event_p99']:.1f} ms",
                flush=True,
            )
            for task in work:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        await asyncio.gather(*work)
        return samples

    def _take(self) -> dict[str, Any]:
        events, ephemeral = percentiles(self.event_ms), percentiles(self.ephemeral_ms)
        out = {
            "event_p50": events["p50"],
            "event_p99": events["p99"],
            "pose_p99": ephemeral["p99"],
            **self.counts,
        }
        self.event_ms.clear()
        self.ephemeral_ms.clear()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--churn", type=int, default=20, help="observers per joining group")
    parser.add_argument("--convert-every", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--recording-minutes", type=float, default=5.0)
    parser.add_argument("--rss-slope", type=float, default=0.5, help="MB/min deemed growth")
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        metavar="DIR",
        help="trace the server's allocations (HOLO_TRACEMALLOC) and write a snapshot to DIR "
        "at every sample; compare two with benchmarks/memdiff.py (tracing slows the server)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"{os.cpu_count()} cores; {args.minutes:g} min: main session (30 Hz drag + head pose, "
        f"commit/s, looped video to 2 viewers, recording rotated every "
        f"{args.recording_minutes:g} min), {args.churn} observers joining every 10 s for "
        f"10-30 s, a new session a minute, a knee upload + conversion every "
        f"{args.convert_every:g} s; a sample every {args.sample_seconds:g} s"
    )
    with tempfile.TemporaryDirectory(prefix="holo-bench-soak-") as tmp:
        root = Path(tmp)
        media = root / "media"
        media.mkdir()
        make_clip(media / "clip.mp4", 640, 360, frames=60)
        if args.tracemalloc is not None:  # inherited by the server process
            os.environ["HOLO_TRACEMALLOC"] = str(args.tracemalloc.resolve())
        node = ServeProcess(root / "data", media=media)
        try:
            soak = Soak(node, args)
            samples = asyncio.run(soak.run())
        finally:
            node.stop()
    header = ["minute", "RSS MB", "fds", "durable p50 ms", "durable p99 ms", "pose p99 ms"]
    header += ["joins", "sessions", "conversions", "failed", "recordings"]
    rows = [
        [
            f"{s['minute']:.1f}",
            f"{s['rss_mb']:.1f}",
            str(s["fds"]),
            f"{s['event_p50']:.1f}",
            f"{s['event_p99']:.1f}",
            f"{s['pose_p99']:.1f}",
            *(str(s[k]) for k in ("joins", "sessions", "conversions", "failed", "recordings")),
        ]
        for s in samples
    ]
    print_table("soak: the server process, sampled", header, rows)
    half = [s for s in samples if s["minute"] >= args.minutes / 2]
    xs = [s["minute"] for s in half]
    rss_slope = slope(xs, [s["rss_mb"] for s in half])
    fd_slope = slope(xs, [float(s["fds"]) for s in half])
    enough = len(half) >= 3
    print(
        f"growth over the second half ({len(half)} samples): RSS {rss_slope:+.2f} MB/min "
        f"(limit {args.rss_slope:g}), descriptors {fd_slope:+.2f}/min (limit 0.2): "
        + (
            ("no growth trend: met" if rss_slope < args.rss_slope and fd_slope < 0.2 else "MISSED")
            if enough
            else "too few samples for a verdict (run longer or sample more often)"
        )
    )
    if soak.errors:
        print(f"errors ({len(soak.errors)}): {sorted(set(soak.errors))[:5]}")
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
