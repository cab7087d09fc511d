"""The bare grpc.aio baseline of ``session.py``: the same fan-out with no holo code.

A server of two generic bytes methods (``grpc.method_handlers_generic_handler``, no proto):

- ``/bare.Fanout/Publish`` (unary): an ephemeral value (``E``, a slot number, its ``t_ns``,
  filler to the size of holo's message for that value) is kept as the slot's newest; a
  durable event (``D``, ``t_ns``, filler) gets the next seq and is queued for every
  subscriber at once; the reply is the seq (8 bytes, 0 for an ephemeral value).
- ``/bare.Fanout/Subscribe`` (server streaming): durable events one per message; the
  newest ephemeral values gathered into one frame per pacing interval (observers 1/15 s,
  the others 1/60 s, as holo's defaults), a subscriber that has not taken the last frame
  getting it merged with the next. That is holo's delivery contract done as plainly as
  grpc.aio allows: no tokens, no state fold, no checks, no protobuf, no bus.

The crowd (:func:`run_crowd`) is ``holo simulate``'s, rebuilt on these two methods: one
presenter sending a drag and a head pose at ``rate`` Hz, a commit every second and a marker
every 3 s; experts pointing at ``rate`` / 2 Hz with a stroke every 5 s; observers in
worker processes of ``per_process``; message sizes those of holo's own messages for the
same values (:func:`holo_sizes`). It reports what ``holo simulate --json`` reports (the
keys ``session.py`` reads): per-role latency from the value's ``t_ns`` to its receipt,
events lost (gaps in the seqs each client saw), messages received, the server's CPU.

Run as ``python benchmarks/bare_fanout.py serve`` it is the server (prints its port).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import struct
import sys
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

SERVICE = "bare.Fanout"
OBSERVER_INTERVAL_S = 1 / 15  # holo's HubConfig defaults
OTHERS_INTERVAL_S = 1 / 60
BACKLOG = 2048  # durable events queued per subscriber (holo's max_backlog); beyond: dropped


def _identity(b: bytes) -> bytes:
    return b


# the server ---------------------------------------------------------------------------------


class _Subscriber:
    __slots__ = ("events", "frame", "wake")

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.frame: dict[int, bytes] | None = None
        self.wake = asyncio.Event()


class _Pacer:
    """The newest value per slot, sent to a group once per interval (first at once)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.subscribers: set[_Subscriber] = set()
        self.pending: dict[int, bytes] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.flushed = 0.0

    def add(self, slot: int, value: bytes) -> None:
        self.pending[slot] = value
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_at(max(self.flushed + self.interval_s, loop.time()), self.flush)

    def flush(self) -> None:
        self.timer = None
        self.flushed = asyncio.get_running_loop().time()
        frame, self.pending = self.pending, {}
        for sub in self.subscribers:
            sub.frame = frame if sub.frame is None else {**sub.frame, **frame}
            sub.wake.set()


class _Fanout:
    def __init__(self) -> None:
        self.seq = 0
        self.subscribers: set[_Subscriber] = set()
        self.pacers = {b"o": _Pacer(OBSERVER_INTERVAL_S), b"p": _Pacer(OTHERS_INTERVAL_S)}

    async def publish(self, request: bytes, context: aio.ServicerContext) -> bytes:
        if request[:1] == b"E":
            for pacer in self.pacers.values():
                pacer.add(request[1], request[2:])
            return bytes(8)
        self.seq += 1
        message = b"D" + self.seq.to_bytes(8, "little") + request[1:]
        for sub in self.subscribers:
            if len(sub.events) < BACKLOG:
                sub.events.append(message)
                sub.wake.set()
        return self.seq.to_bytes(8, "little")

    async def subscribe(self, request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        sub = _Subscriber()
        pacer = self.pacers[request[:1] or b"o"]
        self.subscribers.add(sub)
        pacer.subscribers.add(sub)
        try:
            yield b"A" + self.seq.to_bytes(8, "little")  # accepted, at this seq
            while True:
                if sub.events:
                    events, sub.events = sub.events, []
                    for message in events:
                        yield message
                elif sub.frame is not None:
                    frame, sub.frame = sub.frame, None
                    yield b"F" + b"".join(
                        struct.pack("<BH", slot, len(v)) + v for slot, v in frame.items()
                    )
                else:
                    sub.wake.clear()
                    await sub.wake.wait()
        finally:
            self.subscribers.discard(sub)
            pacer.subscribers.discard(sub)


async def serve(port: int = 0) -> None:
    fanout = _Fanout()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Publish": grpc.unary_unary_rpc_method_handler(
                fanout.publish, request_deserializer=_identity, response_serializer=_identity
            ),
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                fanout.subscribe, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"serving on 127.0.0.1:{bound}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


# the crowd ----------------------------------------------------------------------------------


def holo_sizes() -> dict[str, int]:
    """Bytes of holo's wire messages for the values the simulator sends: each ephemeral
    value as it sits in an observer's frame, each durable event as a stream message."""
    from holo.session.records import Annotation, EphemeralUpdate, Pose, Ray, SceneModel
    from holo.session.state import Event
    from holo.v1 import session_pb2
    from holo.wire.session import ephemeral_message, event_message

    pid, model = "p_" + "x" * 20, "mdl_" + "x" * 28  # ids as long as holo's
    pose = Pose((0.123456, 1.1, -0.456789), (0.0, 0.247404, 0.0, 0.968912))
    ray = Ray((0.0, 1.6, 0.0), (0.123456, -0.3, -1.0))
    t = time.time_ns()

    def eph(channel: str, value: Any) -> int:
        return int(ephemeral_message(EphemeralUpdate(pid, channel, t, value)).ByteSize()) + 2

    def event(kind: str, data: Any) -> int:
        m = session_pb2.SessionMessage(event=event_message(Event(1234, t, pid, kind, data)))
        return int(m.ByteSize())

    marker = Annotation(f"sim-{pid}-12", model, pid, "marker", ((0.0, 0.12, 0.0),))
    points = tuple((0.001 * i, 0.002 * i, 0.0) for i in range(20))
    stroke = Annotation(f"sim-{pid}-3", model, pid, "stroke", points)
    return {
        "drag": eph("drag", SceneModel(model, pose)),
        "head_pose": eph("head_pose", pose),
        "pointer": eph("pointer", ray),
        "commit": event("anchor_committed", SceneModel(model, pose)),
        "marker": event("annotation_added", marker),
        "stroke": event("annotation_added", stroke),
    }


def _ephemeral(slot: int, size: int) -> bytes:
    head = b"E" + bytes([slot]) + time.time_ns().to_bytes(8, "little")
    return head + bytes(max(0, size - 8))


def _durable(size: int) -> bytes:
    return b"D" + time.time_ns().to_bytes(8, "little") + bytes(max(0, size - 17))


class _Client:
    """One subscriber with its probes (what :class:`holo.testing.simulate._Probe` records)."""

    def __init__(self, address: str, role: str) -> None:
        self.role = role
        self.channel = aio.insecure_channel(address)
        self.publish = self.channel.unary_unary(
            f"/{SERVICE}/Publish", request_serializer=_identity, response_deserializer=_identity
        )
        self._subscribe = self.channel.unary_stream(
            f"/{SERVICE}/Subscribe", request_serializer=_identity, response_deserializer=_identity
        )
        self.event_ms: list[float] = []
        self.ephemeral_ms: list[float] = []
        self.seqs: list[int] = []
        self.last_seq = 0
        self.messages = self.bytes = 0
        self.accepted = asyncio.Event()
        self.advanced = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        call = self._subscribe(b"o" if self.role == "observer" else b"p")
        async for m in call:
            now = time.time_ns()
            self.messages += 1
            self.bytes += len(m)
            kind = m[:1]
            if kind == b"D":
                self.last_seq = int.from_bytes(m[1:9], "little")
                self.seqs.append(self.last_seq)
                self.event_ms.append((now - int.from_bytes(m[9:17], "little")) / 1e6)
                self.advanced.set()
            elif kind == b"F":
                at = 1
                while at < len(m):
                    _slot, size = struct.unpack_from("<BH", m, at)
                    t_ns = int.from_bytes(m[at + 3 : at + 11], "little")
                    self.ephemeral_ms.append((now - t_ns) / 1e6)
                    at += 3 + size
            elif kind == b"A":
                self.last_seq = int.from_bytes(m[1:9], "little")
                self.accepted.set()

    async def wait_seq(self, seq: int, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.last_seq < seq:
                    self.advanced.clear()
                    await self.advanced.wait()

    def reset(self) -> None:
        self.event_ms.clear()
        self.ephemeral_ms.clear()
        self.seqs.clear()
        self.messages = self.bytes = 0

    def seen(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "event_ms": self.event_ms,
            "ephemeral_ms": self.ephemeral_ms,
            "seqs": self.seqs,
            "last_seq": self.last_seq,
            "received": (self.messages, self.bytes),
        }

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.channel.close()


async def _presenter(c: _Client, sizes: dict[str, int], rate: float, stop: float) -> None:
    period = 1.0 / rate
    next_commit = next_note = time.monotonic()
    while (now := time.monotonic()) < stop:
        await c.publish(_ephemeral(0, sizes["drag"]))
        await c.publish(_ephemeral(1, sizes["head_pose"]))
        if now >= next_commit:
            await c.publish(_durable(sizes["commit"]))
            next_commit = now + 1.0
        if now >= next_note:
            await c.publish(_durable(sizes["marker"]))
            next_note = now + 3.0
        await asyncio.sleep(max(0.0, period - (time.monotonic() - now)))


async def _expert(c: _Client, slot: int, sizes: dict[str, int], rate: float, stop: float) -> None:
    period = 2.0 / rate
    next_stroke = time.monotonic() + 2.0
    while (now := time.monotonic()) < stop:
        await c.publish(_ephemeral(slot, sizes["pointer"]))
        if now >= next_stroke:
            await c.publish(_durable(sizes["stroke"]))
            next_stroke = now + 5.0
        await asyncio.sleep(max(0.0, period - (time.monotonic() - now)))


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _observer_process(conn: Connection, address: str, count: int) -> None:
    async def main() -> None:
        clients = [_Client(address, "observer") for _ in range(count)]
        try:
            for c in clients:
                c.start()
            await asyncio.gather(*(c.accepted.wait() for c in clients))
            conn.send(("joined",))
            await asyncio.to_thread(conn.recv)  # measure
            for c in clients:
                c.reset()
            cpu0 = _cpu_seconds(os.getpid())
            conn.send(("measuring",))
            _, final = await asyncio.to_thread(conn.recv)
            cpu = _cpu_seconds(os.getpid()) - cpu0
            await asyncio.gather(*(c.wait_seq(final, 30) for c in clients))
            conn.send(("seen", [c.seen() for c in clients], cpu))
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        conn.close()


async def run_crowd(
    address: str,
    server_pid: int,
    *,
    experts: int,
    observers: int,
    rate: float,
    seconds: float,
    per_process: int = 250,
) -> dict[str, Any]:
    """The crowd against a bare server; the report has ``simulate``'s keys."""
    from holo.testing.simulate import percentiles  # the same nearest-rank percentiles

    sizes = holo_sizes()
    spawn = multiprocessing.get_context("spawn")
    workers = []
    for first in range(0, observers, per_process):
        ours, theirs = spawn.Pipe()
        w = spawn.Process(
            target=_observer_process,
            args=(theirs, address, min(per_process, observers - first)),
            daemon=True,
        )
        w.start()
        theirs.close()
        workers.append((w, ours))

    async def each(message: Any) -> list[Any]:
        def step(conn: Connection) -> Any:
            if message is not None:
                conn.send(message)
            return conn.recv()

        return await asyncio.gather(*(asyncio.to_thread(step, c) for _, c in workers))

    local = [_Client(address, "presenter")] + [_Client(address, "expert") for _ in range(experts)]
    try:
        for c in local:
            c.start()
        await asyncio.gather(each(None), *(c.accepted.wait() for c in local))
        await asyncio.sleep(1.0)  # the joins settle
        await each(("measure",))
        for c in local:
            c.reset()
        cpu0 = _cpu_seconds(server_pid)
        own0 = _cpu_seconds(os.getpid())
        started = time.monotonic()
        stop = started + seconds
        await asyncio.gather(
            _presenter(local[0], sizes, rate, stop),
            *(_expert(c, 2 + i, sizes, rate, stop) for i, c in enumerate(local[1:])),
        )
        elapsed = time.monotonic() - started
        cpu = _cpu_seconds(server_pid) - cpu0
        own = _cpu_seconds(os.getpid()) - own0
        # one more event after the window: every client has seen all once it has this one
        final = int.from_bytes(await local[0].publish(_durable(sizes["marker"])), "little")
        replies = await each(("finish", final))
        await asyncio.gather(*(c.wait_seq(final, 30) for c in local))
        seen = [c.seen() for c in local] + [s for r in replies for s in r[1]]
        crowd_cpu = sum(r[2] for r in replies)
    finally:
        for w, conn in workers:
            conn.close()
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
        await asyncio.gather(*(c.close() for c in local), return_exceptions=True)
    lost = 0
    for s in seen:
        if s["seqs"]:
            first = s["seqs"][0]
            lost += len(set(range(first, final + 1)) - set(s["seqs"]))
    roles = {}
    for role in ("presenter", "expert", "observer"):
        group = [s for s in seen if s["role"] == role]
        if group:
            roles[role] = {
                "clients": len(group),
                "event_latency_ms": percentiles([v for s in group for v in s["event_ms"]]),
                "ephemeral_latency_ms": percentiles([v for s in group for v in s["ephemeral_ms"]]),
                "messages": sum(s["received"][0] for s in group),
                "bytes": sum(s["received"][1] for s in group),
            }
    return {
        "clients": len(seen),
        "seconds": round(elapsed, 2),
        "final_seq": final,
        "events_lost": lost,
        "resyncs": 0,
        "roles": roles,
        "sizes": sizes,
        "server": {
            "cpu_percent": round(100 * cpu / elapsed, 1),
            "cpu_ms_per_observer_second": round(1000 * cpu / elapsed / max(1, observers), 3),
        },
        "simulator_cpu_percent": round(100 * (own + crowd_cpu) / elapsed, 1),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    else:
        sys.exit("usage: bare_fanout.py serve [PORT]  (session.py runs the crowd)")
