"""The OpenIGTLink gateway, measured (issue 21's benchmark).

Tracker to session: how long after a tracker sends a TRANSFORM a session participant has
the gateway's pointer. The tracker is a Python OpenIGTLink peer (holo.igtl.messages,
pyigtl's framing) sending ``--sends`` TRANSFORMs at ``--hz`` to ``holo igtl`` (its own
process, an expert's token) in front of ``holo serve`` (its own process). The baseline,
in the same run against the same server: a Python SDK participant sending the same
pointer rays directly (``UpdatePointer``) at the same pace, i.e. the same path with the
gateway taken out. Two receivers each time: an observer (the server sends observers the
newest ephemeral values at most every 1/30 s) and an expert (every 1/60 s); a value sent
while an older one waits is coalesced, so a receiver gets fewer than were sent. Send k
carries k in its x coordinate, so each received pointer is matched to its send.

Also: the gateway process's CPU per tracker sample. Everything shares this machine's
cores. Asserts nothing; prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tables import print_table
from web import percentile, proc_cpu_seconds

from holo.client.session import SessionClient
from holo.coords import ras_from_gltf
from holo.igtl.messages import pack_transform
from holo.session.records import EphemeralUpdate, Ray
from holo.testing import ServeProcess

STEP_MM = 0.5  # RAS x of send k is k * STEP_MM: a hand moving 30 mm/s at 60 Hz
CASE = "bench-igtl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=1000, help="tracker poses per run")
    parser.add_argument("--hz", type=float, default=60.0, help="tracker rate")
    args = parser.parse_args()
    print(f"holo igtl benchmark: {os.cpu_count()} cores; server, gateway and clients share them")
    with tempfile.TemporaryDirectory() as folder:
        # Pointer rays at tracker rates: the per-user intent limit (20/s) is off here.
        limits = ("--rate-limit", "intent_per_s=0", "--rate-limit", "intent_burst=0")
        node = ServeProcess(Path(folder) / "node", options=limits)
        try:
            rows = asyncio.run(measure(node, args.sends, args.hz))
        finally:
            node.stop()
    print_table(
        f"tracker pose to a session participant ({args.sends} sends at {args.hz:g} Hz; ms)",
        ["path", "receiver", "received", "p50", "p99", "gateway CPU ms/sample"],
        rows,
    )


async def measure(node: ServeProcess, sends: int, hz: float) -> list[list[Any]]:
    received: list[tuple[str, str, float, float]] = []  # receiver, participant, x, t (s)

    def recorder(name: str) -> Any:
        def record(update: EphemeralUpdate) -> None:
            if update.channel == "pointer" and isinstance(update.value, Ray):
                x_ras = ras_from_gltf(update.value.origin)[0]
                received.append((name, update.participant_id, x_ras, time.monotonic()))

        return record

    presenter = SessionClient(node.address, token=node.token("presenter", CASE), insecure=True)
    info = await presenter.create_session()
    session_id = info.session_id.value
    await presenter.join(session_id)
    receivers = {}
    for role in ("observer", "expert"):
        receivers[role] = SessionClient(
            node.address,
            token=node.token(role, CASE, subject=f"receiver-{role}"),
            insecure=True,
            on_ephemeral=recorder(role),
        )
        await receivers[role].join(session_id)

    def rows_for(path: str, sender: str, sent: dict[int, float], cpu: str) -> list[list[Any]]:
        out = []
        for role in receivers:
            lat = [
                1000 * (at - sent[k])
                for who, pid, x, at in received
                if who == role and pid == sender and (k := round(x / STEP_MM)) in sent
            ]
            if not lat:
                out.append([path, role, 0, "-", "-", cpu])
                continue
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            out.append([path, role, len(lat), f"{p50:.1f}", f"{p99:.1f}", cpu])
        return out

    rows: list[list[Any]] = []

    # Baseline: the same rays sent directly with the SDK.
    direct = SessionClient(
        node.address, token=node.token("expert", CASE, subject="sdk-pointer"), insecure=True
    )
    await direct.join(session_id)
    sent: dict[int, float] = {}
    for k in range(1, sends + 1):
        origin = (-k * STEP_MM / 1000, 0.0, 0.0)  # RAS x = k * STEP_MM
        sent[k] = time.monotonic()
        await direct.pointer(Ray(origin, (0.0, 0.0, -1.0)))
        await asyncio.sleep(max(0.0, sent[k] + 1 / hz - time.monotonic()))
    await asyncio.sleep(1.0)  # the last rays arrive
    rows += rows_for("SDK UpdatePointer (baseline)", direct.participant_id, sent, "")
    await direct.close()

    # The gateway: holo igtl in its own process, a tracker on its OpenIGTLink port.
    command = [sys.executable, "-m", "holo.cli", "igtl", "--server", node.address, "--insecure"]
    command += ["--token", node.token("expert", CASE, subject="igtl"), "--session", session_id]
    command += ["--listen", "127.0.0.1:0"]
    gateway = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    assert gateway.stderr is not None
    line = (await asyncio.wait_for(gateway.stderr.readline(), 60)).decode()
    found = re.search(r"on 127\.0\.0\.1:(\d+)", line)
    if found is None:
        raise SystemExit(f"holo igtl did not start: {line}")
    await presenter.wait_for(
        lambda c: any(
            p.display_name == "OpenIGTLink gateway" for p in c.state.participants.values()
        )
    )
    gateway_id = next(
        p.participant_id
        for p in presenter.state.participants.values()
        if p.display_name == "OpenIGTLink gateway"
    )
    _, writer = await asyncio.open_connection("127.0.0.1", int(found.group(1)))
    cpu = proc_cpu_seconds(gateway.pid)
    sent = {}
    for k in range(1, sends + 1):
        matrix = [[1, 0, 0, k * STEP_MM], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
        data = pack_transform("Stylus", matrix)
        sent[k] = time.monotonic()
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(max(0.0, sent[k] + 1 / hz - time.monotonic()))
    await asyncio.sleep(1.0)
    cpu = proc_cpu_seconds(gateway.pid) - cpu
    rows += rows_for("tracker -> holo igtl", gateway_id, sent, f"{1000 * cpu / sends:.3f}")
    base = {r[1]: r for r in rows if "baseline" in r[0]}
    for row in [r for r in rows if "igtl" in r[0]]:
        if row[3] != "-" and base[row[1]][3] != "-":
            ratio = float(row[3]) / max(float(base[row[1]][3]), 1e-9)
            rows.append([f"gateway / baseline (p50, {row[1]})", "", "", f"{ratio:.2f}", "", ""])
    writer.close()
    gateway.terminate()
    await gateway.wait()
    for client in (*receivers.values(), presenter):
        await client.close()
    return rows


if __name__ == "__main__":
    main()
