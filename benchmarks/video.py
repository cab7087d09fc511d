"""Live video relay: a 1080p30 H.264 source relayed to N viewers on one node.

Generates a 10 s 1920 x 1080, 30 fps H.264 clip (PyAV + libx264; the frame number burned
into every picture), starts ``holo serve`` as a separate process with it in its media
folder, plays it into a session as a looped file track (paced in real time, passed through
without re-encoding), and runs N viewers (real SDK clients, each on its own connection) in
this process. For every frame each viewer receives: added latency = receipt time on the
session clock (ClockSync) minus the frame's ``t_ns`` (the moment ingest released it);
frames lost = gaps in a viewer's frame indices, and frames the server skipped for it.
Server CPU per viewer comes from /proc. One scenario also measures sync: a scripted
presenter commits the hologram's anchor at every 10th frame, and one observer decodes
every frame, reads its number and pairs it with the state of its time (SessionTimeline +
FrameSync): the sync error in frames.

Asserts nothing; prints the table with the issue's targets marked ``met`` or ``MISSED``.
Viewers and server share this machine's cores: the viewers' own CPU is in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from session import publish_model  # benchmarks/session.py: `holo upload --convert` the knee
from tables import print_table

from holo.client.clock import ClockSync
from holo.client.session import SessionClient
from holo.client.timeline import FrameSync, SessionTimeline
from holo.client.video import VideoClient
from holo.session.records import Pose
from holo.testing import ServeProcess
from holo.testing.probe import SyncProbe, sync_errors
from holo.testing.simulate import percentiles, process_usage
from holo.testing.testcard import make_test_card
from holo.video.frames import Frame

FPS = 30
NOISE = 4.0  # grey levels of sensor noise: about 8 Mbit/s at 1080p, an endoscope's rate
LOOP_FRAMES = 300


def make_clip(path: Path, width: int, height: int, frames: int = LOOP_FRAMES) -> int:
    """The benchmark's source: test cards, H.264 High, GOP 1 s, no B-frames. Its bytes."""
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(FPS), "bf": "0", "preset": "veryfast", "crf": "23"}
        rng = np.random.default_rng(20261201)
        band = height // 6  # the barcode band stays clean
        for i in range(frames):
            rgb = make_test_card(i, width, height)
            # Sensor noise below the barcode, so the bitrate is a camera's, not a slide's.
            noise = rng.normal(0, NOISE, (height - band, width, 1)).astype(np.int16)
            rgb[band:] = np.clip(rgb[band:].astype(np.int16) + noise, 0, 255).astype(np.uint8)
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.stat().st_size


class Viewer:
    def __init__(self, server: ServeProcess, case: str) -> None:
        self.video = VideoClient(
            server.address, token=server.token("observer", case), insecure=True
        )
        self.latencies_ms: list[float] = []
        self.frames = 0
        self.lost = 0
        self.skipped = 0
        self._last: int | None = None

    async def watch(
        self, track_id: str, clock: ClockSync, measure_from: float, stop: float
    ) -> None:
        async for item in self.video.watch(track_id):
            now = time.monotonic()
            if item.kind == "frame" and item.frame is not None:
                frame = item.frame
                if now >= measure_from:
                    self.latencies_ms.append((clock.now() - frame.t_ns) / 1e6)
                    self.frames += 1
                    if self._last is not None and frame.index != self._last + 1:
                        self.lost += frame.index - self._last - 1
                self._last = frame.index
            elif item.kind == "skipped" and now >= measure_from:
                self.skipped += 1
            if now >= stop:
                return


async def _sync_probe(
    server: ServeProcess,
    case: str,
    session_id: str,
    track_id: str,
    model_id: str,
    stop: float,
    presenter: SessionClient,
    presenter_video: VideoClient,
    presenter_clock: ClockSync,
) -> tuple[int, list[int | None]]:
    """A scripted presenter and one decoding observer: (frames checked, sync errors)."""
    commits: dict[int, dict[str, Any]] = {}
    timeline = SessionTimeline()
    observer = SessionClient(
        server.address, token=server.token("observer", case), insecure=True, timeline=timeline
    )
    video = VideoClient(server.address, token=server.token("observer", case), insecure=True)
    clock = video.clock()
    await clock.sync_many(8)
    await observer.join(session_id)
    sync: FrameSync[tuple[Frame, int]] = FrameSync(
        timeline, delay_ns=300_000_000, t_of=lambda f: f[0].t_ns
    )
    probe = SyncProbe()

    async def script() -> None:
        async for item in presenter_video.watch(track_id):
            frame = item.frame
            due = item.kind == "frame" and frame is not None and frame.index % 10 == 0
            if due and frame is not None and presenter_clock.now() - frame.t_ns < 500_000_000:
                pose = Pose((frame.index / 1000, 1.0, -0.5), (0.0, 0.0, 0.0, 1.0))
                await presenter.commit_anchor(model_id, pose, t_ns=frame.t_ns)
                commits[frame.index] = pose
            if time.monotonic() >= stop:
                return

    async def watch() -> None:
        async for item in video.watch(track_id):
            if item.kind == "header" and item.params is not None:
                probe.start(item.params)
            elif item.kind == "frame" and item.frame is not None:
                sync.push((item.frame, probe.read(item.frame)))
            for (frame, number), at in sync.ready(clock.now()):
                if at.exact:
                    probe.record(frame.index, number, at.anchor_pose(model_id))
            if time.monotonic() >= stop:
                return

    await asyncio.gather(script(), watch())
    errors = sync_errors(probe.rendered, commits, frames_per_loop=LOOP_FRAMES) if commits else []
    await observer.close()
    await video.close()
    return len(errors), errors


async def scenario(
    server: ServeProcess, viewers_n: int, seconds: float, with_sync: bool, media_file: str
) -> dict[str, Any]:
    case = f"bench-video-{viewers_n}"
    model_id = publish_model(server, case) if with_sync else ""
    presenter = SessionClient(server.address, token=server.token("presenter", case), insecure=True)
    info = await presenter.create_session()
    session_id = info.session_id.value
    await presenter.join(session_id)
    if model_id:
        await presenter.load_model(model_id)
    video = VideoClient(server.address, token=server.token("presenter", case), insecure=True)
    clock = video.clock()
    await clock.sync_many(16)
    track = await video.open_track(session_id, "endoscope", "endoscope", file=media_file, loop=True)
    viewers = [Viewer(server, case) for _ in range(viewers_n)]
    start = time.monotonic()
    measure_from = start + 2.0  # after every viewer has joined and caught up
    stop = measure_from + seconds
    tasks = [
        asyncio.create_task(v.watch(track.track_id.value, clock, measure_from, stop))
        for v in viewers
    ]
    sync_task = None
    if with_sync:
        sync_task = asyncio.create_task(
            _sync_probe(
                server,
                case,
                session_id,
                track.track_id.value,
                model_id,
                stop,
                presenter,
                video,
                clock,
            )
        )
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0, _ = process_usage(server.pid)
    own0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    cpu1, rss = process_usage(server.pid)
    own = time.process_time() - own0
    await video.close_track(track.track_id.value)
    for v in viewers:
        await v.video.close()
    await video.close()
    await presenter.close()
    latencies = [ms for v in viewers for ms in v.latencies_ms]
    report: dict[str, Any] = {
        "viewers": viewers_n,
        "frames": sum(v.frames for v in viewers),
        "latency_ms": percentiles(latencies, (50, 99, 100)),
        "lost": sum(v.lost for v in viewers),
        "skips": sum(v.skipped for v in viewers),
        "server_cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
        "server_cpu_ms_per_viewer_s": 1000 * (cpu1 - cpu0) / elapsed / viewers_n,
        "viewers_cpu_percent": 100 * own / elapsed,
        "server_rss_mb": rss / 2**20,
    }
    if sync_task is not None:
        checked, errors = await sync_task
        report["sync_checked"] = checked
        report["sync_error_frames_max"] = max((abs(e) for e in errors if e is not None), default=0)
        report["sync_unknown"] = sum(e is None for e in errors)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="50,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--quick", action="store_true", help="640x360, 10 and 50 viewers, 4 s")
    args = parser.parse_args()
    sizes = [int(n) for n in args.viewers.split(",") if n]
    if args.quick:
        sizes, args.seconds, args.size = [10, 50], 4.0, "640x360"
    width, height = (int(x) for x in args.size.split("x"))
    print(
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"PyAV {av.__version__}; {width}x{height} {FPS} fps H.264 (libx264 veryfast crf 23, GOP "
        f"1 s), looped file paced in real time; {args.seconds:g} s measured per run; viewers "
        "and server on this machine"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="holo-bench-video-") as tmp:
        root = Path(tmp)
        media = root / "media"
        media.mkdir()
        started = time.perf_counter()
        size = make_clip(media / "operative.mp4", width, height)
        print(
            f"  source: {size / 1e6:.1f} MB for {LOOP_FRAMES} frames "
            f"({size * 8 / (LOOP_FRAMES / FPS) / 1e6:.1f} Mbit/s), made in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        server = ServeProcess(root / "data", media=media)
        try:
            for k, n in enumerate(sizes):
                rows.append(asyncio.run(scenario(server, n, args.seconds, k == 0, "operative.mp4")))
                print(f"  ran {n} viewers", flush=True)
        finally:
            server.stop()
    print()
    header = [
        "viewers",
        "frames",
        "p50 ms",
        "p99 ms",
        "max ms",
        "lost",
        "skips",
        "server CPU %",
        "CPU ms/viewer-s",
        "viewers CPU %",
        "server RSS MB",
    ]
    table = [header]
    for r in rows:
        lat = r["latency_ms"]
        table.append(
            [
                str(r["viewers"]),
                str(r["frames"]),
                f"{lat['p50']:.1f}",
                f"{lat['p99']:.1f}",
                f"{lat['p100']:.1f}",
                str(r["lost"]),
                str(r["skips"]),
                f"{r['server_cpu_percent']:.0f}",
                f"{r['server_cpu_ms_per_viewer_s']:.2f}",
                f"{r['viewers_cpu_percent']:.0f}",
                f"{r['server_rss_mb']:.0f}",
            ]
        )
    print_table("", table[0], table[1:])
    print(
        "added latency = viewer receipt on the session clock - frame t_ns (ingest); "
        "CPU % of one core"
    )
    print()
    biggest = max(rows, key=lambda r: r["viewers"])
    ok = biggest["latency_ms"]["p99"] < 30
    print(
        f"target p99 added latency < 30 ms at {biggest['viewers']} viewers: "
        f"{biggest['latency_ms']['p99']:.1f} ms, {'met' if ok else 'MISSED'}"
    )
    lost = sum(r["lost"] for r in rows)
    print(
        f"target 0 frames lost for healthy viewers: {lost} lost, "
        f"{sum(r['skips'] for r in rows)} skips, {'met' if lost == 0 else 'MISSED'}"
    )
    synced = [r for r in rows if "sync_checked" in r]
    if synced:
        r = synced[0]
        good = r["sync_error_frames_max"] == 0 and r["sync_unknown"] == 0 and r["sync_checked"] > 0
        print(
            f"target sync error 0 frames: max {r['sync_error_frames_max']} over "
            f"{r['sync_checked']} frames checked ({r['viewers']} viewers running), "
            f"{'met' if good else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
