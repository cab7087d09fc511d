"""Shared test vectors for a participant's session stream: what a real server sent on Join
streams (with two resumes) and what the Python SDK's :class:`holo.client.SessionClient`
decided at each message, for the Unity bridge's SessionLink
(unity_bridge/Core/SessionLink.cs).

``python tests/vectors/session_stream.py`` starts a real in-process server
(:class:`holo.testing.TestServer`, port 0; a backlog of :data:`MAX_BACKLOG` events per
subscriber) and plays a short case: a presenter and an expert (SDK clients) load a model,
place it, annotate (marker, label, stroke), draw on the video, ask for, grant and revoke
control, remove an annotation and leave; an observer's Join stream is recorded message by
message. Twice the observer's stream is dropped and it joins again as the SDK would (the
participant id the server gave, ``resume_from_seq`` = the last seq applied): once within
the backlog (the missed events follow the accept) and once past it (the accept carries a
snapshot instead).

So that the file is the same every run, the server's random ids are renamed in order of
appearance (``p-1``, ``p-2``...; the session ``s-1``; the model ``m-knee``) and every
session time is replaced by ``seq`` milliseconds (a snapshot's by its seq plus 0.5 ms),
in the messages themselves before they are written; nothing else is changed.

Each message is written as bytes (base64 ``SessionMessage``) and in the plain JSON form
of session_fold.py (the Unity core cannot parse protobuf), with what the SDK's
``SessionClient`` did on it (driven through its own message handler): the outcome
(accepted, applied, repeat, gap, resync), its seq, participant id, heartbeat interval and
resync count after it; before each join, the participant id and resume seq the SDK would
send. ``perturbed`` replays the recorded messages with faults a network or a failover
makes: an event sent twice, an event lost (the gap makes the client join again and the
server resends from its seq), a resync, a batch with a hole. ``retry``: the SDK's session
back-off (holo/client/session.py SESSION_RETRY). ``tests/test_unity_vectors.py`` checks the
file is current; the C# tests drive SessionLink through it (SessionLinkVectorTests.cs).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from grpc import aio

from holo.client.session import SESSION_RETRY, SessionClient, _GapError
from holo.export.container import pack_glb
from holo.session import HubConfig
from holo.session.fanout import Resync
from holo.session.records import Pose
from holo.session.state import apply
from holo.testing import TestServer
from holo.v1 import common_pb2, session_pb2, session_pb2_grpc
from holo.wire.common import capabilities
from holo.wire.session import event_from_message, resync_message, state_from_snapshot

OUT = Path(__file__).with_name("session_stream.json")
CASE = "case-vectors"
#: Events queued for a subscriber before it gets a snapshot instead (the server's 2048 is
#: lowered so that a short case passes it).
MAX_BACKLOG = 3


def _session_fold() -> ModuleType:
    path = Path(__file__).with_name("session_fold.py")
    spec = importlib.util.spec_from_file_location("holo_vectors_session_fold", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FOLD = _session_fold()


def _tiny_glb() -> bytes:
    """A one-triangle GLB: the session only needs a published model to load."""
    positions = b"".join(
        v.to_bytes(4, "little")
        for v in (0, 0, 0, 0x3F800000, 0, 0, 0, 0x3F800000, 0)  # 0.0 and 1.0 as float32
    )
    tree = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"name": "lod0", "nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            }
        ],
        "bufferViews": [{"buffer": 0, "byteLength": len(positions)}],
        "buffers": [{"byteLength": len(positions)}],
    }
    return pack_glb(tree, positions)


class _Names:
    """Stable names for the server's random ids, in order of appearance."""

    def __init__(self, fixed: dict[str, str]) -> None:
        self.names = dict(fixed)

    def participant(self, value: str) -> str:
        if value and value not in self.names:
            self.names[value] = f"p-{sum(n.startswith('p-') for n in self.names.values()) + 1}"
        return self.names.get(value, value)


def _rename_ids(message: Any, names: _Names) -> None:
    """Every ParticipantId, ModelId and SessionId in ``message`` renamed, in place."""
    for field, value in message.ListFields():
        items = value if field.is_repeated else [value]
        if field.message_type is None:
            continue
        for item in items:
            kind = field.message_type.full_name
            if kind == "holo.v1.ParticipantId":
                item.value = names.participant(item.value)
            elif kind in ("holo.v1.ModelId", "holo.v1.SessionId"):
                item.value = names.names.get(item.value, item.value)
            else:
                _rename_ids(item, names)


def normalise(message: session_pb2.SessionMessage, names: _Names) -> session_pb2.SessionMessage:
    """The message with stable ids and times (see the module docstring)."""
    out = session_pb2.SessionMessage()
    out.CopyFrom(message)
    _rename_ids(out, names)
    kind = out.WhichOneof("kind")
    events = {"event": [out.event], "events": list(out.events.events)}.get(kind or "", [])
    for event in events:
        event.t_ns = 1_000_000 * event.seq
    snapshot = None
    if kind == "accepted":
        out.accepted.session.created_t_ns = 0
        out.accepted.session.case_id = CASE
        if out.accepted.HasField("snapshot"):
            snapshot = out.accepted.snapshot
    elif kind == "resync":
        snapshot = out.resync.snapshot
    if snapshot is not None:
        snapshot.t_ns = 1_000_000 * snapshot.seq + 500_000
    return out


def plain_message(message: session_pb2.SessionMessage) -> dict[str, Any]:
    """A stream message in plain JSON (what the Python client decodes from it)."""
    kind = message.WhichOneof("kind")
    if kind == "accepted":
        a = message.accepted
        snapshot = FOLD.plain_snapshot(a.snapshot) if a.HasField("snapshot") else None
        return {
            "accepted": {
                "participant_id": a.participant_id.value,
                "heartbeat_interval_ms": a.heartbeat_interval_ms,
                "snapshot": snapshot,
            }
        }
    if kind == "event":
        return {"event": FOLD.plain_event(event_from_message(message.event))}
    if kind == "events":
        return {"events": [FOLD.plain_event(event_from_message(e)) for e in message.events.events]}
    if kind == "resync":
        return {
            "resync": {
                "snapshot": FOLD.plain_snapshot(message.resync.snapshot),
                "reason": message.resync.reason,
            }
        }
    raise AssertionError(f"no {kind} messages in these vectors")


class _Mirror:
    """The SDK's SessionClient, fed the recorded messages through its own handler (it
    never connects): what it decides is what the vectors expect."""

    def __init__(self) -> None:
        self.client = SessionClient("127.0.0.1:1", insecure=True)
        self.steps: list[dict[str, Any]] = []

    def join(self) -> dict[str, Any]:
        client = self.client
        params = {
            "participant_id": client.participant_id,
            "resume_from_seq": client.state.seq if client._accepted.is_set() else 0,
        }
        self.steps.append({"join": params})
        return params

    async def take(self, message: session_pb2.SessionMessage) -> str:
        client = self.client
        before, resyncs = client.state.seq, client.resyncs
        kind = message.WhichOneof("kind")
        try:
            await client._handle(message)
            if kind == "accepted":
                outcome = "accepted"
            elif client.resyncs != resyncs:
                outcome = "resync"
            else:
                outcome = "applied" if client.state.seq > before else "repeat"
        except _GapError:
            outcome = "gap"
        self.steps.append(
            {
                "message": base64.b64encode(message.SerializeToString()).decode(),
                "plain": plain_message(message),
                "expect": {
                    "outcome": outcome,
                    "seq": client.state.seq,
                    "participant_id": client.participant_id,
                    "heartbeat_interval_s": client.heartbeat_interval_s,
                    "resyncs": client.resyncs,
                },
            }
        )
        return outcome

    def broke(self, why: str) -> None:
        self.steps.append({"break": why})

    def result(self) -> dict[str, Any]:
        state = self.client.state
        return {
            "steps": self.steps,
            "expected": state.public_dict(),
            "expected_order": FOLD.state_order(state),
        }


async def _record(server: TestServer, model_id: str) -> tuple[list[Any], dict[str, str]]:
    """Play the case; the observer's stream messages (as received, in order), and the
    names of the ids the script itself knows."""
    presenter = SessionClient(
        server.address,
        token=server.token("presenter", CASE),
        insecure=True,
        display_name="Presenter",
    )
    expert = SessionClient(
        server.address,
        token=server.token("expert", CASE, subject="expert"),
        insecure=True,
        display_name="Expert",
    )
    info = await presenter.create_session()
    session_id = info.session_id.value
    await presenter.join(session_id)
    recorded: list[Any] = []  # messages, and ("break", why) markers
    seen = {"seq": 0}
    arrived = asyncio.Event()
    metadata = (("authorization", f"Bearer {server.token('observer', CASE, subject='observer')}"),)
    mirror = SessionClient("127.0.0.1:1", insecure=True)  # decides each join's fields

    async def read(channel: aio.Channel) -> None:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        accepted = mirror._accepted.is_set()
        request = session_pb2.JoinRequest(
            session_id=common_pb2.SessionId(value=session_id),
            participant_id=common_pb2.ParticipantId(value=mirror.participant_id),
            display_name="Observer",
            capabilities=capabilities("holo-vectors"),
            resume_from_seq=mirror.state.seq if accepted else 0,
        )
        async for message in stub.Join(request, metadata=metadata):
            recorded.append(message)
            await mirror._handle(message)
            seen["seq"] = mirror.state.seq
            arrived.set()

    async def until(seq: int) -> None:
        while seen["seq"] < seq:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 10)

    async def step(intent: Callable[[], Awaitable[int]]) -> None:
        await until(await intent())

    channel = aio.insecure_channel(server.address)
    reader = asyncio.create_task(read(channel))
    await until(presenter.state.seq + 1)  # the observer's own "joined"
    await expert.join(session_id)
    await until(expert.state.seq)
    pose = Pose((0.1, 1.2, -0.5), (0.0, 0.38268343236508984, 0.0, 0.9238795325112867))
    await step(lambda: presenter.load_model(model_id, pose))
    moved = Pose((0.15, 1.1, -0.45), (0.0, 0.0, 0.0, 1.0))
    await step(lambda: presenter.commit_anchor(model_id, moved))
    await step(lambda: expert.add_marker("a-marker", model_id, (0.01, 0.02, 0.03)))
    await step(lambda: expert.add_label("a-label", model_id, (0.0, 0.05, 0.0), "tibial plateau"))
    stroke = [(0.0, 0.0, 0.0), (0.01, 0.01, 0.0), (0.02, 0.015, 0.005)]
    await step(lambda: expert.add_stroke("a-stroke", model_id, stroke))
    await step(lambda: presenter.telestrate("t-1", "trk-1", 123_000_000, [(0.1, 0.2), (0.3, 0.4)]))
    await step(expert.request_control)
    await step(lambda: presenter.grant_control(expert.participant_id))
    await step(lambda: expert.commit_anchor(model_id, pose))
    # The observer's stream drops; two events happen; it resumes within the backlog.
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    recorded.append(("break", "the observer's stream dropped (resumed within the backlog)"))
    await presenter.wait_seq(await presenter.revoke_control(expert.participant_id))
    await presenter.wait_seq(await expert.remove_annotation("a-marker"))
    reader = asyncio.create_task(read(channel))
    await until(presenter.state.seq)
    # Dropped again; more events than the backlog keeps: the accept brings a snapshot.
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    recorded.append(("break", "the observer's stream dropped (resumed past the backlog)"))
    for k in range(MAX_BACKLOG + 1):
        placed = Pose((0.1 * k, 1.0, -0.5), (0.0, 0.0, 0.0, 1.0))
        await presenter.wait_seq(await presenter.commit_anchor(model_id, placed))
    reader = asyncio.create_task(read(channel))
    await until(presenter.state.seq)
    await step(expert.leave)
    await step(lambda: presenter.add_marker("a-last", model_id, (0.0, 0.0, 0.01)))
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await channel.close()
    await presenter.close()
    names = {session_id: "s-1", model_id: "m-knee"}
    return recorded, names


async def _replay(recorded: list[Any], names: _Names) -> dict[str, Any]:
    """The recorded stream through a fresh SDK mirror, normalised."""
    mirror = _Mirror()
    mirror.join()
    for item in recorded:
        if isinstance(item, tuple):
            mirror.broke(item[1])
            mirror.join()
        else:
            await mirror.take(normalise(item, names))
    return mirror.result()


def _event_message(message: session_pb2.SessionEvent) -> session_pb2.SessionMessage:
    return session_pb2.SessionMessage(event=message)


async def _perturbed(messages: list[session_pb2.SessionMessage]) -> list[dict[str, Any]]:
    """Faults replayed over the first stream's messages (accept, then single events)."""
    accepted, events = messages[0], [m.event for m in messages[1:] if m.HasField("event")]
    scenarios = []

    async def play(name: str, script: list[Any]) -> None:
        mirror = _Mirror()
        mirror.join()
        for item in script:
            if item == "join":
                mirror.broke("a gap: joined again from the last seq applied")
                mirror.join()
            else:
                await mirror.take(item)
        scenarios.append({"name": name, **mirror.result()})

    singles = [_event_message(e) for e in events]
    # An event sent twice (a node failing over resends from its own view of the log).
    await play("repeat", [accepted, *singles[:4], singles[2], singles[3], *singles[4:]])
    # An event lost: the next one is a gap; the client joins again, the server resends.
    await play("gap", [accepted, *singles[:3], singles[4], "join", *singles[3:]])
    # A resync (the server found the client too far behind): the state at a later seq.
    state = state_from_snapshot(accepted.accepted.snapshot)
    for event in events[:6]:
        apply(state, event_from_message(event))
    resync = resync_message(Resync(state.copy_public(), 1_000_000 * state.seq + 500_000, "behind"))
    await play("resync", [accepted, *singles[:2], resync, singles[5], *singles[6:]])
    # A batch with a hole in the middle: the events before it stay folded.
    hole = session_pb2.SessionMessage(events=session_pb2.EventBatch(events=[events[3], events[5]]))
    await play("batch-gap", [accepted, *singles[:3], hole, "join", *singles[4:]])
    return scenarios


async def _vectors() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        glb = Path(tmp) / "tiny.glb"
        glb.write_bytes(_tiny_glb())
        config = HubConfig(max_backlog=MAX_BACKLOG, away_after_s=120.0, remove_after_s=240.0)
        with TestServer(Path(tmp) / "data", session=config) as server:
            model_id = server.publish_model(CASE, glb)
            recorded, fixed = await _record(server, model_id)
    names = _Names(fixed)
    replayed = await _replay(recorded, names)
    until_break = recorded[: next(k for k, r in enumerate(recorded) if isinstance(r, tuple))]
    first = [normalise(m, _Names(fixed)) for m in until_break]
    outcomes = [s["expect"]["outcome"] for s in replayed["steps"] if "expect" in s]
    assert "gap" not in outcomes and "repeat" not in outcomes, outcomes
    return {
        "about": (
            "holo session stream vectors from a real server, for the Unity bridge; "
            "regenerate with python tests/vectors/session_stream.py"
        ),
        "recorded": replayed,
        "perturbed": await _perturbed(first),
        "retry": {
            "attempts": SESSION_RETRY.attempts,
            "delays_s": [
                [n, SESSION_RETRY.delay_s(n)] for n in range(1, SESSION_RETRY.attempts + 2)
            ],
        },
    }


def render() -> str:
    return json.dumps(asyncio.run(_vectors()), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
