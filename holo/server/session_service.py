# ruff: noqa: N802  (servicer method names are the RPC names the generated bases require)
"""SessionService: the thin layer between holo.v1 session messages and served sessions.

The interceptors have checked the token and the role matrix; here each call resolves its
session id once (:class:`holo.server.access.SessionAccess`: a live session or a replay, of
the token's case), converts messages (:mod:`holo.wire.session`) and calls the session.
What every subscriber is sent (one event, an ephemeral frame) is encoded once for all of
them (:class:`holo.server.encoded.EncodeOnce`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import numpy as np
from grpc import aio

from holo.errors import InvalidRequestError, PreconditionError
from holo.server.access import SessionAccess, check_case, request_case
from holo.server.encoded import EncodeOnce, add_servicer
from holo.server.interceptors import current_claims
from holo.server.registering import RegistrationRequest, register_model
from holo.session import HubConfig, SessionHub, fanout
from holo.session.fanout import EphemeralFrame, EventBatch, SubscriptionItem
from holo.session.limits import SessionLimits
from holo.session.records import EphemeralUpdate, EphemeralValue, Pose, SceneModel, SessionInfo
from holo.session.served import Intent, Joined, Joiner, ServedSession
from holo.session.state import Event, EventData
from holo.store import Store
from holo.v1 import session_pb2, session_pb2_grpc
from holo.wire.common import (
    PROTOCOL_MAJOR,
    capabilities,
    pose_from_message,
    pose_message,
    vec_from_message,
)
from holo.wire.session import (
    accepted_message,
    annotation_from_message,
    ephemerals_message,
    event_message,
    info_message,
    ray_from_message,
    registration_message,
    resync_message,
    telestration_from_message,
    worst_event_bytes,
    worst_snapshot_bytes,
)

__all__ = [
    "CLIENT_RECEIVE_BYTES",
    "MAX_RECEIVE_BYTES",
    "SessionServicer",
    "add_session_servicer",
    "check_limits",
    "session_config",
]

#: Largest message the server accepts: one 1 MiB chunk plus its envelope (told to clients
#: in their Capabilities).
MAX_RECEIVE_BYTES = (1 << 20) + (64 << 10)
#: Largest message a gRPC client accepts unless told otherwise (grpc's default
#: max_receive_message_length, 4 MiB): every message of a Join stream stays within it.
CLIENT_RECEIVE_BYTES = 4 << 20
#: Durable events waiting for a subscriber go in messages of at most this much (and
#: BATCH events): a quarter of what a client takes, so 64 strokes of 10,000 points
#: (18 MB) go in about 18 messages instead of one that no client could receive.
_BATCH_BYTES = 1 << 20


def add_session_servicer(servicer: SessionServicer, server: aio.Server) -> None:
    """Register SessionService with the encode-once serializer (:mod:`holo.server.encoded`)."""
    add_servicer(servicer, server, session_pb2.DESCRIPTOR, "SessionService")


def session_config(
    limit_settings: Sequence[str] = (), observer_ephemeral_hz: float | None = None
) -> HubConfig:
    """The hub's configuration with ``NAME=VALUE`` session limits applied (``holo serve
    --session-limit``), checked as the server checks them at start, and the observers'
    ephemeral rate (``--observer-ephemeral-hz``; None: the default, 15 Hz)."""
    config = HubConfig(limits=SessionLimits().replaced(limit_settings))
    check_limits(config.limits)
    if observer_ephemeral_hz is not None:
        if not 0 < observer_ephemeral_hz <= 1000:
            raise InvalidRequestError(
                f"--observer-ephemeral-hz {observer_ephemeral_hz:g}: give a rate in (0, 1000]"
            )
        config.observer_ephemeral_interval_s = 1 / observer_ephemeral_hz
    return config


def check_limits(limits: SessionLimits) -> None:
    """INVALID_ARGUMENT unless a session filled to ``limits`` can still be joined: its
    snapshot (with the rest of JoinAccepted) and its largest event fit what a client takes."""
    accepted = accepted_message("a" * limits.max_id_chars, _WORST_INFO, _capabilities(), 1, None, 0)
    snapshot = accepted.ByteSize() + 12 + worst_snapshot_bytes(limits)  # 2 fields' framing
    worst = max(snapshot, worst_event_bytes(limits))
    if worst > CLIENT_RECEIVE_BYTES:
        raise InvalidRequestError(
            f"session limits allow a Join message of {worst} bytes, more than the "
            f"{CLIENT_RECEIVE_BYTES} a client accepts; lower max_points, max_stroke_points "
            "or the collection bounds (holo.session.limits.SessionLimits)"
        )


_WORST_INFO = SessionInfo("a" * 128, "a" * 128, (1 << 63) - 1)


def _capabilities() -> Any:
    return capabilities(
        "holo-server",
        max_receive_message_bytes=MAX_RECEIVE_BYTES,
        mesh_compressions=["KHR_draco_mesh_compression"],
    )


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, hub: SessionHub, store: Store, access: SessionAccess) -> None:
        check_limits(hub.config.limits)  # refused at start, not when a session fills up
        self._hub = hub
        self._store = store
        self._access = access
        # The same event goes to every subscriber: converted once (for batches), and alone
        # in a message serialised once. An ephemeral frame is sent within its pacing
        # interval: 256 are ~2 s of one busy session's frames (all sessions share the
        # cache), and none is kept longer (see EncodeOnce on why not).
        self._events = EncodeOnce(event_message, max_items=4096)
        self._single: EncodeOnce[Event, bytes] = EncodeOnce(
            lambda e: session_pb2.SessionMessage(event=self._events(e)).SerializeToString(),
            max_items=4096,
        )
        self._frames: EncodeOnce[EphemeralFrame, bytes] = EncodeOnce(
            lambda f: ephemerals_message(f.updates).SerializeToString(), max_items=256
        )

    async def CreateSession(
        self, request: session_pb2.CreateSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.SessionInfo:
        return info_message(await self._hub.create_session(request_case(request.case_id)))

    async def FindSession(
        self, request: session_pb2.FindSessionRequest, context: aio.ServicerContext
    ) -> session_pb2.SessionInfo:
        return info_message(await self._hub.find_session(current_claims().case_id))

    async def Join(
        self, request: session_pb2.JoinRequest, context: aio.ServicerContext
    ) -> AsyncIterator[session_pb2.SessionMessage | bytes]:
        claims = current_claims()
        major = request.capabilities.protocol_major
        if major not in (0, PROTOCOL_MAJOR):
            raise PreconditionError(
                f"the client speaks holo.v{major}, this server holo.v{PROTOCOL_MAJOR}; "
                "update the client"
            )
        session = await self._access.session(request.session_id.value)
        joiner = Joiner(
            request.participant_id.value,
            claims.role,
            claims.subject,
            request.display_name,
            request.resume_from_seq,
        )
        joined = await session.join(joiner)
        try:
            yield self._accepted(session, joined)
            participant_id = joined.subscription.participant_id
            alive_at = time.monotonic()
            while True:
                item = await joined.subscription.next()
                if time.monotonic() - alive_at > session.heartbeat_interval_s:
                    # A stream the client keeps reading is a sign of life as good as a
                    # heartbeat (checked here, cheaply, for each of ~30 messages a second).
                    alive_at = time.monotonic()
                    await session.stream_alive(participant_id)
                for message in self._messages(item):
                    yield message
                if fanout.TIMES is not None:
                    fanout.TIMES.written(item)
        finally:
            session.leave_stream(joined)

    def _accepted(self, session: ServedSession, joined: Joined) -> session_pb2.SessionMessage:
        return accepted_message(
            joined.subscription.participant_id,
            session.info,
            _capabilities(),
            session.heartbeat_interval_s,
            joined.snapshot,
            joined.t_ns,
        )

    def _messages(self, item: SubscriptionItem) -> Iterator[bytes | session_pb2.SessionMessage]:
        """The stream messages for what a subscription yielded: events in batches of at
        most :data:`_BATCH_BYTES` (a live backlog or a replay's catch-up may hold many
        large strokes), a frame or a resync in one."""
        if isinstance(item, EphemeralFrame):
            yield self._frames(item)
        elif isinstance(item, EventBatch):
            chunk: list[Event] = []
            size = 0
            for event in item.events:
                grows = self._events(event).ByteSize() + 6  # its tag and length
                if chunk and size + grows > _BATCH_BYTES:
                    yield self._batch(chunk)
                    chunk, size = [], 0
                chunk.append(event)
                size += grows
            if chunk:
                yield self._batch(chunk)
        else:
            yield resync_message(item)

    def _batch(self, events: list[Event]) -> bytes | session_pb2.SessionMessage:
        if len(events) == 1:
            return self._single(events[0])
        batch = session_pb2.EventBatch(events=[self._events(e) for e in events])
        return session_pb2.SessionMessage(events=batch)

    async def _intent(self, request: Any, kind: str, data: EventData) -> session_pb2.IntentAck:
        session = await self._access.live(request.session_id.value)
        actor, subject = request.participant_id.value, current_claims().subject
        t_ns = getattr(request, "t_ns", 0)
        seq = await session.intent(Intent(actor, subject, kind, data, request.intent_id, t_ns))
        return session_pb2.IntentAck(seq=seq)

    async def _ephemeral(
        self, request: Any, channel: str, value: EphemeralValue
    ) -> session_pb2.IntentAck:
        session = await self._access.live(request.session_id.value)
        update = EphemeralUpdate(request.participant_id.value, channel, request.t_ns, value)
        await session.ephemeral(update, current_claims().subject)
        return session_pb2.IntentAck(seq=0)

    async def LoadModel(
        self, request: session_pb2.LoadModelRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        model = await asyncio.to_thread(self._store.get_model, request.model_id.value)
        check_case("model", model.model_id, model.case_id)
        pose = (
            pose_from_message(request.anchor_pose)
            if request.HasField("anchor_pose")
            else Pose.IDENTITY
        )
        return await self._intent(request, "model_loaded", SceneModel(model.model_id, pose))

    async def CommitAnchor(
        self, request: session_pb2.CommitAnchorRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        placed = SceneModel(request.model_id.value, pose_from_message(request.anchor_pose))
        return await self._intent(request, "anchor_committed", placed)

    async def Register(
        self, request: session_pb2.RegisterRequest, context: aio.ServicerContext
    ) -> session_pb2.RegisterReply:
        session = await self._access.live(request.session_id.value)
        actor, subject = request.participant_id.value, current_claims().subject
        model_id = request.model_id.value
        # Who may: as CommitAnchor, the participant in control, with the model loaded;
        # checked before the work (an ICP is not done for someone who may not place it)
        # and again when the anchor is appended.
        session.check_may(actor, subject, "anchor_committed", SceneModel(model_id, Pose.IDENTITY))
        wanted = RegistrationRequest(
            model_points_m=_points(request.model_points, "model_points"),
            room_points_m=_points(request.room_points, "room_points"),
            surface_points_m=_points(request.surface_points, "surface_points"),
            targets_m=_points(request.targets, "targets"),
            fle_mm=request.fle_mm or None,
        )
        glb = None
        if wanted.needs_mesh:
            model = await asyncio.to_thread(self._store.get_model, model_id)
            check_case("model", model_id, model.case_id)
            path = await asyncio.to_thread(self._store.blob_path, model.sha256)
            glb = await asyncio.to_thread(path.read_bytes)
        pose, figures = await asyncio.to_thread(register_model, wanted, glb)
        reply = session_pb2.RegisterReply(
            registration=registration_message(figures), anchor_pose=pose_message(pose)
        )
        if figures.accepted or request.apply_flagged:
            placed = SceneModel(model_id, pose, registration=figures)
            reply.seq = (await self._intent(request, "anchor_committed", placed)).seq
        return reply

    async def Drag(
        self, request: session_pb2.DragRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        placed = SceneModel(request.model_id.value, pose_from_message(request.anchor_pose))
        return await self._ephemeral(request, "drag", placed)

    async def UpdateHeadPose(
        self, request: session_pb2.HeadPoseRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        pose = pose_from_message(request.head_pose, "head pose")
        return await self._ephemeral(request, "head_pose", pose)

    async def UpdatePointer(
        self, request: session_pb2.PointerRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._ephemeral(request, "pointer", ray_from_message(request.pointer))

    async def AddAnnotation(
        self, request: session_pb2.AddAnnotationRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        author = request.participant_id.value
        annotation = annotation_from_message(request.annotation, author)
        return await self._intent(request, "annotation_added", annotation)

    async def RemoveAnnotation(
        self, request: session_pb2.RemoveAnnotationRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(request, "annotation_removed", request.annotation_id)

    async def Telestrate(
        self, request: session_pb2.TelestrateRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        author = request.participant_id.value
        telestration = telestration_from_message(request.telestration, author)
        return await self._intent(request, "telestration_added", telestration)

    async def RequestControl(
        self, request: session_pb2.ControlRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(request, "control_requested", request.participant_id.value)

    async def GrantControl(
        self, request: session_pb2.ControlRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(request, "control_granted", request.target.value)

    async def RevokeControl(
        self, request: session_pb2.ControlRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        return await self._intent(request, "control_revoked", request.target.value)

    async def Heartbeat(
        self, request: session_pb2.HeartbeatRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        session = await self._access.session(request.session_id.value)
        seq = await session.heartbeat(request.participant_id.value, current_claims().subject)
        return session_pb2.IntentAck(seq=seq)

    async def Leave(
        self, request: session_pb2.LeaveRequest, context: aio.ServicerContext
    ) -> session_pb2.IntentAck:
        session = await self._access.session(request.session_id.value)
        seq = await session.leave(
            request.participant_id.value, current_claims().subject, request.intent_id
        )
        return session_pb2.IntentAck(seq=seq)


def _points(vectors: Sequence[Any], what: str) -> Any:
    """Repeated Vec3 as an (N, 3) array; a non-finite coordinate refused, naming ``what``."""
    return np.array([vec_from_message(v, what) for v in vectors], dtype=np.float64).reshape(-1, 3)
