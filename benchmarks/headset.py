"""The page in a headset, measured (issue 17's benchmark).

Motion to remote display: how long after the wearer's head moves a remote participant has
the new head pose. The wearer is the page in immersive AR on an emulated Quest 3 (npm
``iwer``, in Debian's Chromium with WebGL in software), its head moved at 72 Hz (Quest's
frame rate) for ``--seconds``; the page sends at most 30 Hz. The baseline, in the same run
against the same ``holo serve`` process: a Python SDK participant sending head poses at
the same 30 Hz for the same time. A Python observer receives both (observers get
ephemeral values at 15 Hz: holo/session/live.py). Each pose carries its move's number in
its x coordinate, so each received pose is matched to the moment of its move.

Also: the headset's frame rate here (software WebGL on 2 cores: a floor, not a headset's
figure) and the server's CPU per head pose received.

Everything shares this machine's 2 cores. Asserts nothing; prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tables import print_table
from web import DIST, HOME, SAMPLE, Loop, convert, percentile, proc_cpu_seconds

from holo.client.session import SessionClient
from holo.session.records import EphemeralUpdate, Pose
from holo.testing import ServeProcess
from holo.testing.browser import Browser

# Metres of x per move (move k is at x = k * STEP): 2 mm at 72 Hz is 14 cm/s, a slow turn of
# the head, and clear of the 1 mm under which the page sends nothing (tracking noise).
STEP = 2e-3
SEND_HZ = 30  # the page's head pose pace (holo/web/src/immersive.js HEAD_MS)
MOVE_HZ = 72  # Quest 3's display rate: how often the emulated head moves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each run's length")
    args = parser.parse_args()
    if not (DIST / "index.html").is_file():
        raise SystemExit("the page is not built: run `make setup`")
    print(f"holo headset benchmark: {os.cpu_count()} cores; server, browser and clients share them")
    with tempfile.TemporaryDirectory() as folder:
        node = ServeProcess(Path(folder) / "node", options=("--web", "127.0.0.1:0"))
        try:
            with Browser() as browser:
                rows = measure(Loop(), node, browser, args.seconds)
        finally:
            node.stop()
    print_table(
        f"head pose, motion to a remote observer ({args.seconds:g} s a run; ms)",
        ["wearer", "moves", "poses received", "p50", "p99", "server CPU ms/pose", "frames/s"],
        rows,
    )


def measure(loop: Loop, node: ServeProcess, browser: Browser, seconds: float) -> list[list[Any]]:
    case = "bench-headset"
    model = convert(node, case, SAMPLE)
    presenter = SessionClient(node.address, token=node.token("presenter", case), insecure=True)
    received: list[tuple[str, float, float]] = []  # participant, x, ms since the epoch

    def record(update: EphemeralUpdate) -> None:
        if update.channel == "head_pose" and isinstance(update.value, Pose):
            received.append((update.participant_id, update.value.position[0], time.time() * 1000))

    observer = SessionClient(
        node.address, token=node.token("observer", case), insecure=True, on_ephemeral=record
    )

    async def start() -> None:
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        await presenter.load_model(model, HOME)
        await observer.join(info.session_id.value)

    loop.run(start())
    rows: list[list[Any]] = []

    def latencies(who: str, moved: dict[int, float]) -> list[float]:
        out = []
        for pid, x, at in received:
            k = round(x / STEP)
            if pid == who and k in moved:
                out.append(at - moved[k])
        return out

    def row(name: str, moves: int, lat: list[float], cpu: float, fps: str) -> list[Any]:
        per = 1000 * cpu / max(1, len(lat))
        p50, p99 = f"{percentile(lat, 50):.1f}", f"{percentile(lat, 99):.1f}"
        return [name, moves, len(lat), p50, p99, f"{per:.3f}", fps]

    # Baseline: an SDK participant sends a new head pose at 30 Hz.
    sdk = SessionClient(
        node.address, token=node.token("expert", case, subject="sdk-wearer"), insecure=True
    )
    loop.run(sdk.join(presenter.session_id))
    moved: dict[int, float] = {}
    cpu = proc_cpu_seconds(node.pid)

    async def send() -> None:
        k = 1
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            moved[k] = time.time() * 1000
            await sdk.head_pose(Pose((k * STEP, 1.6, 0.0), (0.0, 0.0, 0.0, 1.0)))
            k += 1
            await asyncio.sleep(1 / SEND_HZ)

    loop.run(send())
    time.sleep(1.0)  # the last poses arrive
    sdk_lat = latencies(sdk.participant_id, moved)
    rows.append(row("SDK client, 30 Hz", len(moved), sdk_lat, proc_cpu_seconds(node.pid) - cpu, ""))
    loop.run(sdk.close())

    # The page in the emulated headset, its head moved at 72 Hz.
    page = browser.page(
        "headset",
        f"{node.web_url}#token={node.token('expert', case, subject='page-wearer')}",
        xr=True,
    )
    page.wait_for("window.holo?.conn?.accepted", 60, "joined")
    page.wait_for(f"window.holo.modelsShown.has({model!r})", 120, "the model")
    page.wait_for("!document.querySelector('#enter-xr').hidden", 30, "Enter AR")
    page.click("#enter-xr")
    page.wait_for("window.holo.xr.frames > 3", 30, "headset frames")
    me = page.eval("window.holo.conn.participantId")
    cpu = proc_cpu_seconds(node.pid)
    result = page.call(
        """async ([seconds, hz, step]) => {
            const device = window.__xrDevice, xr = window.holo.xr;
            const moved = {}, frames = xr.frames, started = performance.now();
            let k = 0;
            const timer = setInterval(() => {
                k += 1;
                device.position.set(k * step, 1.6, 0);
                moved[k] = performance.timeOrigin + performance.now();
            }, 1000 / hz);
            await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
            clearInterval(timer);
            const fps = (xr.frames - frames) / ((performance.now() - started) / 1000);
            return { moved, fps };
        }""",
        [seconds, MOVE_HZ, STEP],
    )
    time.sleep(1.0)
    page_moved = {int(k): v for k, v in result["moved"].items()}
    page_lat = latencies(me, page_moved)
    cpu = proc_cpu_seconds(node.pid) - cpu
    rows.append(
        row(
            f"page in AR, moved at {MOVE_HZ} Hz",
            len(page_moved),
            page_lat,
            cpu,
            f"{result['fps']:.1f}",
        )
    )
    ratio = percentile(page_lat, 50) / max(percentile(sdk_lat, 50), 1e-9)
    rows.append(["page / SDK (p50)", "", "", f"{ratio:.2f}", "", "", ""])
    page.close()
    loop.run(observer.close())
    loop.run(presenter.close())
    return rows


if __name__ == "__main__":
    main()
