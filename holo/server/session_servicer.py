# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""SessionService: the thin layer between holo.v1 session messages and the session hub.

The interceptors have checked the token and the role matrix; here each call checks that
the session is the token's case, converts messages (:mod:`holo.wire`) and calls the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from grpc import aio

from holo import __version__
from holo.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
)
from holo.server.encoded import add_servicer
from holo.server.interceptors import current_claims
from holo.session import SessionHub
from holo.session.hub import EphemeralFrame, LiveSession
from holo.session.state import Event, SessionState
from holo.store import Store
from holo.v1 import common_pb2, session_pb2, session_pb2_grpc
from holo.video.hub import VideoHub
from holo.video.replay import is_replay
from holo.wire import (
    IDENTITY_POSE,
    annotation_from_message,
    ephemeral_message,
    event_message,
    pose_from_message,
    snapshot_message,
    telestration_from_message,
)

__all__ = ["AuditLog", "SessionServicer", "add_session_servicer", "server_capabilities"]

logger = logging.getLogger(__name__)

PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 0
_BEHIND = "you fell too far behind; start again from this snapshot"
FEATURES = ("annotations", "control", "presence", "resync")


def server_capabilities() -> common_pb2.Capabilities:
    return common_pb2.Capabilities(
        protocol_major=PROTOCOL_MAJOR,
        protocol_minor=PROTOCOL_MINOR,
        software_name="holo-server",
        software_version=__version__,
        features=list(FEATURES),
        max_receive_message_bytes=(1 << 20) + (64 << 10),
        mesh_compressions=["KHR_draco_mesh_compression"],
    )


class AuditLog:
    """Append-only JSON lines (``<data>/audit.jsonl``): joins, leaves, control changes and
    model loads, each with the token's subject. Each record is flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (held open)

    def __call__(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def add_session_servicer(servicer: SessionServicer, server: aio.Server) -> None:
    """Register SessionService; one event or ephemeral frame every subscriber is sent is
    serialised once (:mod:`holo.server.encoded`)."""
    add_servicer(servicer, server, session_pb2.DESCRIPTOR, "SessionService")


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, hub: SessionHub, store: Store, video: VideoHub | None = None) -> None:
        self._hub = hub
        self._store = store
        self._video = video  # its replays are sessions too
        # The same event goes to every subscriber: convert it (and, alone in a message,
        # serialise it) once. Keyed by id(), holding the event so the id cannot be reused
        # while cached. Ephemeral values are not cached: a frame is serialised once for all
        # its subscribers already, and values kept past their frame would only age into
        # the collector's oldest generation (whose collections pause the loop).
        self._converted: OrderedDict[int, tuple[Event, session_pb2.SessionEvent]] = OrderedDict()
        self._encoded: OrderedDict[int, tuple[Event, bytes]] = OrderedDict()

    def _wire(self, event: Event) -> session_pb2.SessionEvent:
        """The wire form of an event, converted once for all subscribers."""
        cached = self._converted.get(id(event))
        if cached is not None and cached[0] is event:
            return cached[1]
        message = event_message(event)
        self._converted[id(event)] = (event, message)
        if len(self._converted) > 4096:
            self._converted.popitem(last=False)
        return message

    async def _session(self, session_id: str) -> LiveSession:
        if is_replay(session_id):
            raise PreconditionError(
                f"session {session_id!r} is a replay: read-only (ControlReplay seeks it)"
            )
        live = await self._hub.get(session_id)
        claims = current_claims()
        if live.case_id != claims.case_id:
            raise PermissionDeniedError(
                f"session {session_id!r} belongs to another case; the token is for "
                f"{claims.case_id!r}"
            )
        return live

    async def CreateSession(
        self, request: session_pb2.CreateSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.SessionInfo:
        claims = current_claims()
        if request.case_id and request.case_id != claims.case_id:
            raise PermissionDeniedError(
                f"the token is for case {claims.case_id!r}, not {request.case_id!r}"
            )
        info = await self._hub.create_session(claims.case_id)
        return _info(info)

    async def Join(
        self, request: session_pb2.JoinRequest, context: aio.ServicerContext
    ) -> AsyncIterator[session_pb2.SessionMessage | bytes]:
        claims = current_claims()
        caps = request.capabilities
        if caps.protocol_major not in (0, PROTOCOL_MAJOR):
            raise PreconditionError(
                f"the client speaks holo.v{caps.protocol_major}, this server holo.v"
                f"{PROTOCOL_MAJOR}; update the client"
            )
        if is_replay(request.session_id.value):
            async for message in self._join_replay(request):
                yield message
            return
        live = await self._session(request.session_id.value)
        live, sub, snapshot = await self._hub.join(
            live.session_id,
            participant_id=request.participant_id.value,
            role=claims.role,
            subject=claims.subject,
            display_name=request.display_name,
            resume_from_seq=request.resume_from_seq,
        )
        try:
            yield self._accepted(sub.participant_id, live.info(), snapshot)
            alive_at = time.monotonic()
            while True:
                kind, item = await sub.next()
                if time.monotonic() - alive_at > self._hub.config.heartbeat_interval_s:
                    # A stream the client keeps reading is a sign of life as good as a
                    # heartbeat (an overloaded headset may send its heartbeats late).
                    alive_at = time.monotonic()
                    await self._hub.alive(live.session_id, sub.participant_id)
                yield self._message(kind, item, _BEHIND)
        finally:
            self._hub.leave_stream(live, sub)

    async def _join_replay(
        self, request: session_pb2.JoinRequest
    ) -> AsyncIterator[session_pb2.SessionMessage | bytes]:
        """A recording replayed as a read-only session: the recorded participants and
        events, no presence of its own; a seek arrives as a resync."""
        replay = self._replays_of().replay(request.session_id.value)
        if replay.case_id != current_claims().case_id:
            raise PermissionDeniedError("this replay belongs to another case")
        sub, snapshot = replay.subscribe()
        try:
            yield self._accepted(sub.participant_id, replay.info(), snapshot)
            while True:
                kind, item = await sub.next()
                yield self._message(kind, item, "the replay moved; start again from this state")
        finally:
            replay.unsubscribe(sub)

    def _replays_of(self) -> VideoHub:
        if self._video is None:
            raise NotFoundError("replay session", "")
        return self._video

    def _accepted(
        self,
        participant_id: str,
        info: dict[str, Any],
        snapshot: SessionState | tuple[SessionState, int] | None,
    ) -> session_pb2.SessionMessage:
        accepted = session_pb2.JoinAccepted(
            participant_id=common_pb2.ParticipantId(value=participant_id),
            capabilities=server_capabilities(),
            session=_info(info),
            heartbeat_interval_ms=int(self._hub.config.heartbeat_interval_s * 1000),
        )
        if snapshot is not None:
            state, t_ns = snapshot if isinstance(snapshot, tuple) else (snapshot, self._now())
            accepted.snapshot.CopyFrom(snapshot_message(state, t_ns))
        return session_pb2.SessionMessage(accepted=accepted)

    def _now(self) -> int:
        return self._hub.clock.now_ns()

    def _message(
        self, kind: str, item: Any, resync_reason: str
    ) -> bytes | session_pb2.SessionMessage:
        """The stream message for what a subscription's ``next()`` returned (a replay's
        resync carries its own time: ``(state, t_ns)``). What every subscriber is sent (one
        event, an ephemeral frame) is serialised once for all of them."""
        if kind == "events":
            if len(item) == 1:
                return self._single(item[0])
            events = session_pb2.EventBatch(events=[self._wire(e) for e in item])
            return session_pb2.SessionMessage(events=events)
        if kind == "ephemeral":
            frame: EphemeralFrame = item
            if frame.wire is None:
                frame.wire = self._ephemerals(frame.updates).SerializeToString()
            return frame.wire
        state, t_ns = item if isinstance(item, tuple) else (item, self._now())
        return session_pb2.SessionMessage(
            resync=session_pb2.Resync(snapshot=snapshot_message(state, t_ns), reason=resync_reason)
        )

    def _single(self, event: Event) -> bytes:
        """``SessionMessage(event=...)`` for ``event``, serialised once."""
        cached = self._encoded.get(id(event))
        if cached is not None and cached[0] is event:
            return cached[1]
        encoded = session_pb2.SessionMessage(event=self._wire(event)).SerializeToString()
        self._encoded[id(event)] = (event, encoded)
        if len(self._encoded) > 4096:
            self._encoded.popitem(last=False)
        return encoded

    def _ephemerals(self, updates: list[dict[str, Any]]) -> session_pb2.SessionMessage:
        if len(updates) == 1:
            return session_pb2.SessionMessage(ephemeral=ephemeral_message(updates[0]))
        values = session_pb2.EphemeralBatch(updates=[ephemeral_message(u) for u in updates])
        return session_pb2.SessionMessage(ephemerals=values)

    async def _intent(self, request: Any, kind: str, data: dict[str, Any]) -> session_pb2.IntentAck:
        live = await self._session(request.session_id.value)
        seq = await self._hub.intent(
            live.session_id,
            request.participant_id.value,
            current_claims().subject,
            kind,
            data,
            intent_id=request.intent_id,
            t_ns=getattr(request, "t_ns", 0),
        )
        return session_pb2.IntentAck(seq=seq)

    async def _ephemeral(
        self, session_id: str, actor: str, channel: str, value: dict[str, Any], t_ns: int
    ) -> session_pb2.IntentAck:
        live = await self._session(session_id)
        await self._hub.ephemeral(
            live.session_id, actor, current_claims().subject, channel, value, t_ns
        )
        return session_pb2.IntentAck(seq=0)

    async def LoadModel(
        self, request: session_pb2.LoadModelRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        model = await asyncio.to_thread(self._store.get_model, request.model_id.value)
        if model.case_id != current_claims().case_id:
            raise PermissionDeniedError(f"model {model.model_id!r} belongs to another case")
        pose = (
            pose_from_message(request.anchor_pose)
            if request.HasField("anchor_pose")
            else IDENTITY_POSE
        )
        return await self._intent(
            request,
            "model_loaded",
            {"model_id": model.model_id, "anchor_pose": pose},
        )

    async def CommitAnchor(
        self, request: session_pb2.CommitAnchorRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(
            request,
            "anchor_committed",
            {
                "model_id": request.model_id.value,
                "anchor_pose": pose_from_message(request.anchor_pose),
            },
        )

    async def Drag(
        self, request: session_pb2.DragRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        value = {
            "model_id": request.model_id.value,
            "anchor_pose": pose_from_message(request.anchor_pose),
        }
        return await self._ephemeral(
            request.session_id.value, request.participant_id.value, "drag", value, request.t_ns
        )

    async def UpdateHeadPose(
        self, request: session_pb2.HeadPoseRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        value = {"head_pose": pose_from_message(request.head_pose, "head pose")}
        return await self._ephemeral(
            request.session_id.value, request.participant_id.value, "head_pose", value, request.t_ns
        )

    async def UpdatePointer(
        self, request: session_pb2.PointerRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        ray = request.pointer
        values = [
            ray.origin.x,
            ray.origin.y,
            ray.origin.z,
            ray.direction.x,
            ray.direction.y,
            ray.direction.z,
        ]
        if not all(map(math.isfinite, values)) or not any(values[3:]):
            raise InvalidRequestError(
                "a pointer ray needs a finite origin and a non-zero direction"
            )
        value = {"origin": values[:3], "direction": values[3:]}
        return await self._ephemeral(
            request.session_id.value, request.participant_id.value, "pointer", value, request.t_ns
        )

    async def AddAnnotation(
        self, request: session_pb2.AddAnnotationRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        actor = request.participant_id.value
        annotation = annotation_from_message(request.annotation, actor)
        return await self._intent(request, "annotation_added", {"annotation": annotation})

    async def RemoveAnnotation(
        self, request: session_pb2.RemoveAnnotationRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(
            request,
            "annotation_removed",
            {"annotation_id": request.annotation_id},
        )

    async def Telestrate(
        self, request: session_pb2.TelestrateRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        actor = request.participant_id.value
        telestration = telestration_from_message(request.telestration, actor)
        return await self._intent(request, "telestration_added", {"telestration": telestration})

    async def RequestControl(
        self, request: session_pb2.ControlRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        actor = request.participant_id.value
        return await self._intent(request, "control_requested", {"participant_id": actor})

    async def GrantControl(
        self, request: session_pb2.ControlRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(
            request,
            "control_granted",
            {"participant_id": request.target.value},
        )

    async def RevokeControl(
        self, request: session_pb2.ControlRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(
            request,
            "control_revoked",
            {"participant_id": request.target.value},
        )

    async def Heartbeat(
        self, request: session_pb2.HeartbeatRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        if is_replay(request.session_id.value):  # a replay has no presence
            self._replays_of().replay(request.session_id.value)
            return session_pb2.IntentAck(seq=0)
        live = await self._session(request.session_id.value)
        seq = await self._hub.heartbeat(
            live.session_id, request.participant_id.value, current_claims().subject
        )
        return session_pb2.IntentAck(seq=seq)

    async def Leave(
        self, request: session_pb2.LeaveRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        if is_replay(request.session_id.value):
            self._replays_of().replay(request.session_id.value)
            return session_pb2.IntentAck(seq=0)
        live = await self._session(request.session_id.value)
        seq = await self._hub.leave(
            live.session_id,
            request.participant_id.value,
            current_claims().subject,
            intent_id=request.intent_id,
        )
        return session_pb2.IntentAck(seq=seq)


def _info(info: dict[str, Any]) -> session_pb2.SessionInfo:
    return session_pb2.SessionInfo(
        session_id=common_pb2.SessionId(value=info["session_id"]),
        case_id=info["case_id"],
        created_t_ns=info["created_t_ns"],
    )
