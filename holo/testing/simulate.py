"""The headset simulator: a presenter, experts and observers as real gRPC clients (the SDK).

``holo simulate`` drives one session: the presenter drags the hologram and moves its head
at ``rate`` Hz, commits the anchor every second and adds an annotation every few seconds;
experts point at ``rate`` / 2 Hz and annotate now and then; observers only watch. Every
client measures the delay from an event's ``t_ns`` (session clock) to its receipt, and
checks its durable log: gap-free, no repeats, ending at the session's last seq.

The presenter and experts run in this process; the observers in worker processes of their
own (up to :data:`OBSERVERS_PER_PROCESS` each), as headsets are devices of their own: one
event loop reading hundreds of streams would otherwise delay the presenter's intents (whose
``t_ns`` is stamped before they are sent) and so every latency measured. On one machine the
clients' clock is the server's (both read the wall clock; the server anchors it once at
start); across machines, run ``holo simulate`` where the server runs, or add the clock
offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from holo.client import ClientError
from holo.errors import SessionError
from holo.quietgc import keep_collections_young
from holo.session.records import Pose, Ray
from holo.session.state import Event
from holo.testing.clients import InstrumentedSessionClient

__all__ = ["OBSERVERS_PER_PROCESS", "SimulationConfig", "percentiles", "process_usage", "simulate"]

#: Observers per worker process (one asyncio loop reads this many streams at the most).
OBSERVERS_PER_PROCESS = 250


@dataclass
class SimulationConfig:
    servers: list[str]
    tokens: dict[str, str]  # role -> token
    experts: int = 2
    observers: int = 100
    rate_hz: float = 60.0
    seconds: float = 10.0
    model_id: str = ""
    ca: bytes | None = None
    insecure: bool = False
    server_pids: list[int] = field(default_factory=list)
    join_concurrency: int = 50
    observers_per_process: int = OBSERVERS_PER_PROCESS


@dataclass
class _Probe:
    """What one client saw."""

    role: str
    client: InstrumentedSessionClient
    event_ms: list[float] = field(default_factory=list)
    ephemeral_ms: list[float] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def send(self, intent: Awaitable[Any]) -> None:
        """An intent; a refusal is counted, not fatal (under overload a presenter that
        missed heartbeats is marked away and loses control until it is back)."""
        try:
            await intent
        except ClientError as err:
            self.refused.append(str(err))

    def reset(self) -> None:
        """Forget what was seen so far (the joins are not the load measured)."""
        self.event_ms.clear()
        self.ephemeral_ms.clear()
        c = self.client
        c.messages = c.message_bytes = c.ephemeral_messages = c.ephemeral_bytes = 0

    def seen(self) -> _Seen:
        c = self.client
        return _Seen(
            self.role,
            self.event_ms,
            self.ephemeral_ms,
            self.refused,
            list(c.seqs),
            c.resyncs,
            c.state.seq,
            c.reconnects,
            list(c.errors),
            (c.messages, c.message_bytes, c.ephemeral_messages, c.ephemeral_bytes),
        )


@dataclass
class _Seen:
    """What one client saw, as a worker process sends it back (plain, picklable)."""

    role: str
    event_ms: list[float]
    ephemeral_ms: list[float]
    refused: list[str]
    seqs: list[int]
    resyncs: int
    last_seq: int
    reconnects: int
    errors: list[str]
    # stream messages and bytes received while measured: all, then the ephemeral ones
    received: tuple[int, int, int, int] = (0, 0, 0, 0)


def percentiles(
    values: Sequence[float], points: Sequence[float] = (50, 90, 99)
) -> dict[str, float]:
    """Nearest-rank percentiles (``p50``, ...), 0 for no values."""
    ordered = sorted(values)
    out = {}
    for q in points:
        if not ordered:
            out[f"p{q:g}"] = 0.0
            continue
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        out[f"p{q:g}"] = round(ordered[rank - 1], 3)
    return out


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, resident bytes) of a process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def _probe(role: str, config: SimulationConfig, name: str, index: int = 0) -> _Probe:
    """A client; client ``index`` starts on server ``index`` (round robin over the nodes)
    and fails over to the next."""
    probe: _Probe
    k = index % len(config.servers)
    servers = config.servers[k:] + config.servers[:k]

    def on_event(event: Event) -> None:
        probe.event_ms.append((time.time_ns() - event.t_ns) / 1e6)

    def on_ephemeral(t_ns: int) -> None:
        probe.ephemeral_ms.append((time.time_ns() - t_ns) / 1e6)

    client = InstrumentedSessionClient(
        servers,
        token=config.tokens[role],
        ca=config.ca,
        insecure=config.insecure,
        display_name=name,
        on_event=on_event,
        on_ephemeral_t_ns=on_ephemeral,
    )
    probe = _Probe(role, client)
    return probe


def _pose(t: float) -> Pose:
    angle = 0.5 * math.sin(t)
    return Pose(
        (0.2 * math.sin(t), 1.1, -0.5 + 0.1 * math.cos(t)),
        (0.0, math.sin(angle / 2), 0.0, math.cos(angle / 2)),
    )


async def _presenter(probe: _Probe, config: SimulationConfig, stop: float) -> None:
    client = probe.client
    period = 1.0 / config.rate_hz
    next_commit = next_note = time.monotonic()
    notes = 0
    while (now := time.monotonic()) < stop:
        t = now
        pose = _pose(t)
        if config.model_id:
            await probe.send(client.drag(config.model_id, pose, t_ns=time.time_ns()))
        await probe.send(client.head_pose(_pose(t + 1.0), t_ns=time.time_ns()))
        if config.model_id and now >= next_commit:
            await probe.send(client.commit_anchor(config.model_id, pose))
            next_commit = now + 1.0
        if config.model_id and now >= next_note:
            notes += 1
            marker = f"sim-{client.participant_id}-{notes}"
            await probe.send(client.add_marker(marker, config.model_id, [0.0, 0.01 * notes, 0.0]))
            next_note = now + 3.0
        await asyncio.sleep(max(0.0, period - (time.monotonic() - now)))


async def _expert(probe: _Probe, config: SimulationConfig, stop: float) -> None:
    client = probe.client
    period = 2.0 / config.rate_hz
    strokes = 0
    next_stroke = time.monotonic() + 2.0
    while (now := time.monotonic()) < stop:
        ray = Ray((0.0, 1.6, 0.0), (math.sin(now) * 0.2, -0.3, -1.0))
        await probe.send(client.pointer(ray, t_ns=time.time_ns()))
        if config.model_id and now >= next_stroke:
            strokes += 1
            points = [[0.001 * i, 0.002 * i, 0.0] for i in range(20)]
            stroke = f"sim-{client.participant_id}-{strokes}"
            await probe.send(client.add_stroke(stroke, config.model_id, points))
            next_stroke = now + 5.0
        await asyncio.sleep(max(0.0, period - (time.monotonic() - now)))


async def simulate(config: SimulationConfig) -> dict[str, Any]:
    """Run the crowd for ``config.seconds``; returns the report (what ``--json`` prints)."""
    presenter = _probe("presenter", config, "sim presenter")  # it opens the session
    session_id = (await presenter.client.create_session()).session_id.value
    await presenter.client.join(session_id)
    if config.model_id:
        await presenter.client.load_model(config.model_id, _pose(0.0))
    experts = [_probe("expert", config, f"sim expert {i}", i + 1) for i in range(config.experts)]
    local = [presenter, *experts]
    before_joins = {pid: process_usage(pid) for pid in config.server_pids}
    joined_at = time.perf_counter()
    crowd = _Crowd(config, session_id)  # the observers' processes; they join at once
    try:
        await asyncio.gather(
            *(p.client.join(session_id, timeout_s=60) for p in experts), crowd.joined()
        )
        join_seconds = time.perf_counter() - joined_at
        # Every join has been accepted; then a durable marker: once every client has
        # applied it, the join burst is over and the measurement starts.
        settle = 60 + 0.2 * (len(local) + config.observers)
        joined = presenter.client.state.seq
        if config.model_id:
            joined = await presenter.client.add_marker(
                f"sim-start-{time.time_ns()}", config.model_id, [0.0, 0.0, 0.0]
            )
        await asyncio.gather(
            *(p.client.wait_seq(joined, timeout_s=settle) for p in local),
            crowd.measure_from(joined, settle),
        )
        for p in local:  # joins are not the load being measured
            p.reset()
        usage0 = {pid: process_usage(pid) for pid in config.server_pids}
        window = [time.time_ns()]
        own0 = process_usage(os.getpid())[0]
        started = time.monotonic()
        stop = started + config.seconds
        await asyncio.gather(
            _presenter(presenter, config, stop), *(_expert(p, config, stop) for p in experts)
        )
        elapsed = time.monotonic() - started
        window.append(time.time_ns())
        usage1 = {pid: process_usage(pid) for pid in config.server_pids}
        own_cpu = process_usage(os.getpid())[0] - own0
        final = presenter.client.state.seq
        (observers, crowd_cpu), _ = await asyncio.gather(
            crowd.finish(final),
            asyncio.gather(
                *(p.client.wait_seq(final, timeout_s=30) for p in local), return_exceptions=True
            ),
        )
    finally:
        crowd.close()
        await asyncio.gather(*(p.client.close() for p in local), return_exceptions=True)
    seen = [p.seen() for p in local] + observers
    report = _report(seen, final, config, elapsed, join_seconds, usage0, usage1)
    # The clients' own load (this process and the observers'): on a shared machine it
    # competes with the servers.
    report["simulator_cpu_percent"] = round(100 * (own_cpu + crowd_cpu) / elapsed, 1)
    report["simulator_processes"] = 1 + crowd.processes
    report["window_unix_ns"] = window  # the measured interval, on the wall clock
    if before_joins:
        grown = sum(usage0[pid][1] - before_joins[pid][1] for pid in before_joins)
        report["server"]["rss_kb_per_client_joined"] = round(
            grown / 1024 / max(1, len(seen) - 1), 1
        )
    return report


class _Crowd:
    """The observers, in worker processes of :data:`OBSERVERS_PER_PROCESS` (or
    ``config.observers_per_process``) each; each step waits for every worker."""

    def __init__(self, config: SimulationConfig, session_id: str) -> None:
        per = max(1, config.observers_per_process)
        spawn = multiprocessing.get_context("spawn")  # no forked event loop or gRPC state
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for first in range(0, config.observers, per):
            ours, theirs = spawn.Pipe()
            count = min(per, config.observers - first)
            worker = spawn.Process(
                target=_observer_process,
                args=(theirs, config, session_id, first, count),
                name=f"holo-sim-observers-{first}",
                daemon=True,
            )
            worker.start()
            theirs.close()
            self._workers.append((worker, ours))
        self.processes = len(self._workers)

    async def _each(self, message: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
        def step(conn: Connection) -> tuple[Any, ...]:
            if message is not None:
                conn.send(message)
            try:
                reply: tuple[Any, ...] = conn.recv()
            except EOFError:
                raise SessionError("an observer process of the simulator ended early") from None
            if reply[0] == "failed":
                raise SessionError(f"simulated observers failed: {reply[1]}")
            return reply

        return await asyncio.gather(*(asyncio.to_thread(step, conn) for _, conn in self._workers))

    async def joined(self) -> None:
        await self._each(None)

    async def measure_from(self, seq: int, settle_s: float) -> None:
        """Once every observer has applied ``seq``, start measuring."""
        await self._each(("measure", seq, settle_s))

    async def finish(self, final: int) -> tuple[list[_Seen], float]:
        """Stop measuring; what the observers saw (once at ``final``) and their CPU seconds."""
        replies = await self._each(("finish", final))
        return [s for r in replies for s in r[1]], sum(r[2] for r in replies)

    def close(self) -> None:
        for worker, conn in self._workers:
            conn.close()
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join()


def _observer_process(
    conn: Connection, config: SimulationConfig, session_id: str, first: int, count: int
) -> None:
    """A worker: observers ``first`` .. ``first + count - 1``, driven by :class:`_Crowd`."""
    try:
        asyncio.run(_observers(conn, config, session_id, first, count))
    except Exception as err:  # the parent reports it in one line (unless it has gone)
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


async def _observers(
    conn: Connection, config: SimulationConfig, session_id: str, first: int, count: int
) -> None:
    probes = [
        _probe("observer", config, f"sim observer {i}", config.experts + i + 1)
        for i in range(first, first + count)
    ]
    gate = asyncio.Semaphore(config.join_concurrency)
    # A worker is a crowd of headsets: its collector's pauses would be in every latency.
    collector = asyncio.create_task(keep_collections_young())
    try:

        async def join(probe: _Probe) -> None:
            async with gate:
                await probe.client.join(session_id, timeout_s=60)

        await asyncio.gather(*(join(p) for p in probes))
        conn.send(("joined",))
        _, seq, settle_s = await asyncio.to_thread(conn.recv)
        await asyncio.gather(*(p.client.wait_seq(seq, timeout_s=settle_s) for p in probes))
        for p in probes:
            p.reset()
        cpu0 = process_usage(os.getpid())[0]
        conn.send(("measuring",))
        _, final = await asyncio.to_thread(conn.recv)
        cpu = process_usage(os.getpid())[0] - cpu0
        await asyncio.gather(
            *(p.client.wait_seq(final, timeout_s=30) for p in probes), return_exceptions=True
        )
        conn.send(("seen", [p.seen() for p in probes], cpu))
    finally:
        collector.cancel()
        await asyncio.gather(*(p.client.close() for p in probes), return_exceptions=True)


def _report(
    probes: list[_Seen],
    final: int,
    config: SimulationConfig,
    elapsed: float,
    join_seconds: float,
    usage0: dict[int, tuple[float, int]],
    usage1: dict[int, tuple[float, int]],
) -> dict[str, Any]:
    roles: dict[str, Any] = {}
    lost = repeats = resyncs = behind = 0
    for c in probes:
        first = c.seqs[0] if c.seqs else final + 1
        expected = set(range(first, final + 1))
        if c.resyncs == 0:
            lost += len(expected - set(c.seqs))
        repeats += len(c.seqs) - len(set(c.seqs))
        resyncs += c.resyncs
        behind += c.last_seq < final
    for role in ("presenter", "expert", "observer"):
        group = [p for p in probes if p.role == role]
        if not group:
            continue
        events = [v for p in group for v in p.event_ms]
        ephemeral = [v for p in group for v in p.ephemeral_ms]
        roles[role] = {
            "clients": len(group),
            "events": len(events),
            "event_latency_ms": percentiles(events),
            "ephemeral": len(ephemeral),
            "ephemeral_latency_ms": percentiles(ephemeral),
            "messages": sum(p.received[0] for p in group),
            "bytes": sum(p.received[1] for p in group),
            "ephemeral_messages": sum(p.received[2] for p in group),
            "ephemeral_bytes": sum(p.received[3] for p in group),
        }
    report: dict[str, Any] = {
        "clients": len(probes),
        "seconds": round(elapsed, 2),
        "join_seconds": round(join_seconds, 2),
        "rate_hz": config.rate_hz,
        "final_seq": final,
        "events_lost": lost,
        "events_repeated": repeats,
        "clients_behind": behind,
        "resyncs": resyncs,
        "reconnects": sum(p.reconnects for p in probes),
        "client_errors": sorted({e for p in probes for e in p.errors})[:10],
        "intents_refused": sum(len(p.refused) for p in probes),
        "refusals": sorted({r for p in probes for r in p.refused})[:5],
        "roles": roles,
    }
    if usage1:
        cpu = sum(usage1[pid][0] - usage0[pid][0] for pid in usage1)
        rss = sum(usage1[pid][1] for pid in usage1)
        report["server"] = {
            "cpu_percent": round(100 * cpu / elapsed, 1),
            "rss_mb": round(rss / 2**20, 1),
            "cpu_ms_per_observer_second": round(1000 * cpu / elapsed / max(1, config.observers), 3),
        }
    return report
