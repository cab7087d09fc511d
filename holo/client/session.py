"""The session side of the SDK: one participant in a shared viewing session (grpc.aio).

:class:`SessionClient` joins, keeps the folded state (the same fold as the server's), sends
intents, heartbeats on its own, and when its stream breaks reconnects (to the next of its
servers, for failover across nodes) and resumes from the last ``seq`` it applied, so it
misses nothing and applies nothing twice. The headset simulator, the tests and scripts
use it; hundreds run in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from holo.client.channel import ClientError, aio_channel_for, call_metadata, client_error, read_ca
from holo.client.retry import RetryPolicy, retry_after_s
from holo.client.timeline import SessionTimeline
from holo.session.records import EphemeralUpdate, Pose, Ray, Registration, Vec3
from holo.session.state import Event, SessionState, apply
from holo.v1 import common_pb2, session_pb2, session_pb2_grpc
from holo.wire.common import capabilities, pose_from_message, pose_message, vec_message
from holo.wire.session import (
    ephemeral_from_message,
    event_from_message,
    ray_message,
    registration_from_message,
    state_from_snapshot,
)

__all__ = ["SessionClient"]


def _intent_id() -> str:
    """A fresh id per intent; a retried call sends the same request, hence the same id."""
    return uuid.uuid4().hex


class _GapError(Exception):
    """An event arrived that does not follow the folded state (a hole in the stream)."""


logger = logging.getLogger(__name__)

#: A participant retries for longer than a download (a headset that loses its node fails
#: over to another), and more often (up to 1 s apart): a call cancelled because its channel
#: was closed under it is sent again too.
SESSION_RETRY = RetryPolicy(
    attempts=20,
    max_delay_s=1.0,
    codes=frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
    ),
)
_MAX_ERRORS = 100  # stream errors and anomalies kept for diagnosis (the newest)


class SessionClient:
    """One participant. ``servers`` are tried in turn (the first, then the others on
    failover); ``token`` names the case and the role.

    Attributes
    ----------
    state
        The session state folded from the snapshot and every event since.
    latest
        The newest ephemeral value per (participant, channel).
    resyncs, reconnects, errors
        How often the server resent the state, how often the stream was reopened, and the
        last stream errors and anomalies (for diagnosis).
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        token: str | None = None,
        ca: str | os.PathLike[str] | bytes | None = None,
        insecure: bool = False,
        display_name: str = "",
        on_event: Callable[[Event], None] | None = None,
        on_ephemeral: Callable[[EphemeralUpdate], None] | None = None,
        on_reset: Callable[[SessionState], None] | None = None,
        timeline: SessionTimeline | None = None,
        retry: RetryPolicy = SESSION_RETRY,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self._ca = read_ca(ca)
        self._insecure = insecure
        self._metadata = call_metadata(token)
        self.display_name = display_name
        self._on_event = on_event
        self._on_ephemeral = on_ephemeral
        # Called with the state from a snapshot (first join) or a resync (e.g. a replay seek).
        self._on_reset = on_reset
        # Given: fed every reset, event and ephemeral value (state as of any recent moment).
        self.timeline = timeline
        self._retry = retry
        self._extra_options = list(channel_options)
        self._server_index = 0
        self._retired: set[asyncio.Task[None]] = set()  # old channels closing with grace
        self._channel: aio.Channel | None = None
        self._stub: session_pb2_grpc.SessionServiceStub | None = None
        self.session_id = ""
        self.participant_id = ""
        self.state = SessionState()
        self.latest: dict[tuple[str, str], EphemeralUpdate] = {}
        self.resyncs = 0
        self.reconnects = 0
        self.errors: deque[str] = deque(maxlen=_MAX_ERRORS)
        self.heartbeat_interval_s = 2.0
        self._reader: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._accepted = asyncio.Event()
        self._changed = asyncio.Event()  # set on every message; waiters re-check
        self._closing = False
        self._last_message = 0.0  # time.monotonic() of the last stream message handled

    # connection ------------------------------------------------------------------------------

    def _connect(self) -> session_pb2_grpc.SessionServiceStub:
        if self._stub is None:
            target = self.servers[self._server_index % len(self.servers)]
            self._channel = aio_channel_for(
                target, ca=self._ca, insecure=self._insecure, extra_options=self._extra_options
            )
            self._stub = session_pb2_grpc.SessionServiceStub(self._channel)
        return self._stub

    async def _failover(self, channel: aio.Channel | None) -> None:
        """Move to the next server, once per broken ``channel`` (several calls may see the
        same break). The old channel is closed with a grace period, so calls still in
        flight on it finish or fail on their own rather than being cancelled."""
        if channel is None or channel is not self._channel:
            return  # another call has moved on already
        old: aio.Channel = channel
        self._channel = None
        self._stub = None
        self._server_index += 1
        self._retired.add(asyncio.create_task(old.close(grace=5.0)))

    async def _unary(self, method: str, request: Any, *, latest_value: bool = False) -> Any:
        """Call ``method``, sent again on the failures the retry policy names, and after a
        rate-limit refusal once its named wait has passed, except for a ``latest_value``
        (a pose, a pointer: the next one replaces it; waiting would only make it stale)."""
        attempts = self._retry.attempts
        for attempt in range(attempts):
            stub = self._connect()
            channel = self._channel
            try:
                return await getattr(stub, method)(request, metadata=self._metadata, timeout=10)
            except aio.UsageError:  # the channel was closed under us: open another
                if self._closing:
                    raise ClientError(
                        "the client is closed", code=grpc.StatusCode.CANCELLED
                    ) from None
                self._channel = self._stub = None
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    raise
                continue  # grpc cancelled it because its channel was closed: send again
            except aio.AioRpcError as err:
                last = attempt + 1 == attempts
                limited = retry_after_s(err) is not None
                wait = None if limited and latest_value else self._retry.wait_s(err, attempt)
                if wait is None or self._closing or last:
                    raise client_error(err) from None
                if err.code() == grpc.StatusCode.UNAVAILABLE:  # a slow server is not a dead one
                    await self._failover(channel)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def create_session(self) -> session_pb2.SessionInfo:
        info: session_pb2.SessionInfo = await self._unary(
            "CreateSession", session_pb2.CreateSessionRequest()
        )
        return info

    async def find_session(self) -> session_pb2.SessionInfo:
        """The open session of the token's case (any role); NOT_FOUND while there is none."""
        info: session_pb2.SessionInfo = await self._unary(
            "FindSession", session_pb2.FindSessionRequest()
        )
        return info

    # the stream ------------------------------------------------------------------------------

    async def join(self, session_id: str, *, timeout_s: float = 30.0) -> None:
        """Join and return once the snapshot is applied; the stream then runs in a task."""
        self.session_id = session_id
        self._reader = asyncio.create_task(self._read_forever(), name=f"join {session_id}")
        accepted = asyncio.ensure_future(self._accepted.wait())
        done, _ = await asyncio.wait(
            {accepted, self._reader}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._reader in done:
            accepted.cancel()
            self._reader.result()  # raises the join's error
        if accepted not in done:
            raise ClientError(
                f"session {session_id}: no JoinAccepted within {timeout_s} s",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        self._beater = asyncio.create_task(self._heartbeat_forever(), name="heartbeat")

    async def _read_forever(self) -> None:
        failures = 0
        while not self._closing:
            stub = self._connect()
            channel = self._channel
            request = session_pb2.JoinRequest(
                session_id=common_pb2.SessionId(value=self.session_id),
                participant_id=common_pb2.ParticipantId(value=self.participant_id),
                display_name=self.display_name,
                capabilities=capabilities("holo-python-client"),
                resume_from_seq=self.state.seq if self._accepted.is_set() else 0,
            )
            try:
                async for message in stub.Join(request, metadata=self._metadata):
                    failures = 0
                    await self._before_message()
                    self._last_message = time.monotonic()
                    await self._handle(message)
                if self._closing:
                    return
                raise ClientError(
                    "the server ended the session stream", code=grpc.StatusCode.UNAVAILABLE
                )
            except aio.AioRpcError as err:
                if self._closing:
                    return
                self.errors.append(f"stream: {err.code().name}: {err.details()}")
                limited = retry_after_s(err)  # too many joins or streams: wait as told
                if limited is not None and self._retry.wait_s(err, failures + 1) is not None:
                    failures += 1
                    await asyncio.sleep(limited)
                    continue
                if err.code() not in self._retry.codes:
                    raise client_error(err) from None
            except (ClientError, aio.UsageError, _GapError):
                if self._closing:
                    return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    raise  # close() cancelled us
                # else: grpc cancelled the call because its channel was closed: reconnect
            failures += 1
            if failures > self._retry.attempts:
                raise ClientError(
                    f"session {self.session_id}: gave up after {failures} reconnects",
                    code=grpc.StatusCode.UNAVAILABLE,
                )
            self.reconnects += 1
            await self._failover(channel)
            await asyncio.sleep(self._retry.delay_s(failures))

    async def _handle(self, message: session_pb2.SessionMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "accepted":
            accepted = message.accepted
            self.participant_id = accepted.participant_id.value
            self.heartbeat_interval_s = accepted.heartbeat_interval_ms / 1000 or 2.0
            if accepted.HasField("snapshot"):
                self.state = state_from_snapshot(accepted.snapshot)
                self._reset(accepted.snapshot.t_ns)
            self._accepted.set()
        elif kind in ("event", "events"):
            events = [message.event] if kind == "event" else message.events.events
            for one_event in events:
                self._apply(event_from_message(one_event))
        elif kind in ("ephemeral", "ephemerals"):
            updates = [message.ephemeral] if kind == "ephemeral" else message.ephemerals.updates
            self._take_ephemerals(updates)
        elif kind == "resync":
            self.resyncs += 1
            self.state = state_from_snapshot(message.resync.snapshot)
            self._reset(message.resync.snapshot.t_ns)
        self._changed.set()

    async def _before_message(self) -> None:
        """Called before each stream message is handled (a test client stalls here)."""

    def _take_ephemerals(self, updates: Sequence[session_pb2.EphemeralUpdate]) -> None:
        """The ephemeral values of one message, as received (a load generator that only
        reads their ``t_ns`` overrides this to skip the conversion)."""
        for one in updates:
            update = ephemeral_from_message(one)
            self.latest[(update.participant_id, update.channel)] = update
            if self.timeline is not None:
                self.timeline.on_ephemeral(update)
            if self._on_ephemeral is not None:
                self._on_ephemeral(update)

    def _reset(self, t_ns: int) -> None:
        if self.timeline is not None:
            self.timeline.reset(self.state, t_ns)
        if self._on_reset is not None:
            self._on_reset(self.state)

    def _apply(self, event: Event) -> None:
        if event.seq != self.state.seq + 1:
            self.errors.append(f"seq {event.seq} after {self.state.seq}")
            if event.seq <= self.state.seq:
                return  # a repeat: never apply twice
            raise _GapError(event.seq)  # never apply past a hole: reconnect and resume
        apply(self.state, event)
        if self.timeline is not None:
            self.timeline.on_event(event)
        if self._on_event is not None:
            self._on_event(event)

    async def wait_seq(self, seq: int, timeout_s: float = 10.0) -> None:
        """Until the folded state has reached ``seq``."""
        await self.wait_for(lambda c: c.state.seq >= seq, timeout_s)

    async def wait_for(
        self, predicate: Callable[[SessionClient], bool], timeout_s: float = 10.0
    ) -> None:
        """Until ``predicate(self)`` holds (checked after every message)."""

        async def until() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout_s)

    async def _heartbeat_forever(self) -> None:
        # Jittered: clients whose heartbeats a busy node answered together would otherwise
        # stay in step and hit it together every interval from then on. Skipped while the
        # stream flows: the server counts a stream it keeps writing to as a sign of life, and
        # a busy grpc.aio node accepts one new call per turn of its event loop, so hundreds
        # of redundant calls a second delay every intent. Sent when the stream is quiet, and
        # when this participant is marked away (a heartbeat brings it back).
        while not self._closing:
            await asyncio.sleep(self.heartbeat_interval_s * random.uniform(0.8, 1.0))
            flowing = time.monotonic() - self._last_message < self.heartbeat_interval_s
            me = self.state.participants.get(self.participant_id)
            if flowing and me is not None and me.present:
                continue
            with contextlib.suppress(ClientError):
                await self.heartbeat()

    # intents ---------------------------------------------------------------------------------

    def _ids(self) -> dict[str, Any]:
        return {
            "session_id": common_pb2.SessionId(value=self.session_id),
            "participant_id": common_pb2.ParticipantId(value=self.participant_id),
        }

    async def load_model(self, model_id: str, pose: Pose | None = None, t_ns: int = 0) -> int:
        request = session_pb2.LoadModelRequest(
            **self._ids(),
            intent_id=_intent_id(),
            model_id=common_pb2.ModelId(value=model_id),
            t_ns=t_ns,
        )
        if pose is not None:
            request.anchor_pose.CopyFrom(pose_message(pose))
        return int((await self._unary("LoadModel", request)).seq)

    async def commit_anchor(self, model_id: str, pose: Pose, t_ns: int = 0) -> int:
        """Commit the model's anchor pose. ``t_ns``: when, on the session clock (e.g. the
        ``t_ns`` of the video frame the presenter acted on); 0: when the server accepts it."""
        request = session_pb2.CommitAnchorRequest(
            **self._ids(),
            intent_id=_intent_id(),
            model_id=common_pb2.ModelId(value=model_id),
            anchor_pose=pose_message(pose),
            t_ns=t_ns,
        )
        return int((await self._unary("CommitAnchor", request)).seq)

    async def register(
        self,
        model_id: str,
        model_points: Sequence[Vec3],
        room_points: Sequence[Vec3],
        *,
        surface_points: Sequence[Vec3] = (),
        targets: Sequence[Vec3] = (),
        fle_mm: float = 0.0,
        apply_flagged: bool = False,
        t_ns: int = 0,
    ) -> tuple[int, Registration, Pose]:
        """Place the model on the patient by registration (the participant in control).

        ``model_points``: landmarks picked on the model (its frame, metres, as
        annotations); ``room_points``: the same landmarks touched in the room (room frame,
        metres), in the same order. ``surface_points`` (room frame) refine it on the bone;
        ``targets`` (model frame) are where the error matters (default: the model's
        bounds); ``fle_mm`` the localisation error when known (0: estimated).

        Returns ``(seq, registration, anchor_pose)``: ``seq`` 0 when it was over the
        server's limits and not applied (``registration.reasons`` say why; again with
        ``apply_flagged=True`` applies it, shown flagged to everyone).
        """
        request = session_pb2.RegisterRequest(
            **self._ids(),
            intent_id=_intent_id(),
            model_id=common_pb2.ModelId(value=model_id),
            model_points=[vec_message(p) for p in model_points],
            room_points=[vec_message(p) for p in room_points],
            surface_points=[vec_message(p) for p in surface_points],
            targets=[vec_message(p) for p in targets],
            fle_mm=fle_mm,
            apply_flagged=apply_flagged,
            t_ns=t_ns,
        )
        reply = await self._unary("Register", request)
        figures = registration_from_message(reply.registration)
        return int(reply.seq), figures, pose_from_message(reply.anchor_pose)

    async def drag(self, model_id: str, pose: Pose, t_ns: int = 0) -> None:
        request = session_pb2.DragRequest(
            **self._ids(),
            model_id=common_pb2.ModelId(value=model_id),
            anchor_pose=pose_message(pose),
            t_ns=t_ns,
        )
        await self._unary("Drag", request, latest_value=True)

    async def head_pose(self, pose: Pose, t_ns: int = 0) -> None:
        await self._unary(
            "UpdateHeadPose",
            session_pb2.HeadPoseRequest(**self._ids(), head_pose=pose_message(pose), t_ns=t_ns),
            latest_value=True,
        )

    async def pointer(self, ray: Ray, t_ns: int = 0) -> None:
        """Point along ``ray`` (room frame): experts and presenters."""
        request = session_pb2.PointerRequest(**self._ids(), pointer=ray_message(ray), t_ns=t_ns)
        await self._unary("UpdatePointer", request, latest_value=True)

    async def add_marker(self, annotation_id: str, model_id: str, position: Sequence[float]) -> int:
        a = session_pb2.Annotation(
            annotation_id=annotation_id, model_id=common_pb2.ModelId(value=model_id)
        )
        a.marker.position.CopyFrom(vec_message(position))
        return await self._add(a)

    async def add_stroke(
        self, annotation_id: str, model_id: str, points: Sequence[Sequence[float]]
    ) -> int:
        a = session_pb2.Annotation(
            annotation_id=annotation_id, model_id=common_pb2.ModelId(value=model_id)
        )
        a.stroke.points.extend(vec_message(p) for p in points)
        return await self._add(a)

    async def add_label(
        self, annotation_id: str, model_id: str, position: Sequence[float], text: str
    ) -> int:
        a = session_pb2.Annotation(
            annotation_id=annotation_id, model_id=common_pb2.ModelId(value=model_id)
        )
        a.label.position.CopyFrom(vec_message(position))
        a.label.text = text
        return await self._add(a)

    async def _add(self, annotation: session_pb2.Annotation) -> int:
        request = session_pb2.AddAnnotationRequest(
            **self._ids(), intent_id=_intent_id(), annotation=annotation
        )
        return int((await self._unary("AddAnnotation", request)).seq)

    async def telestrate(
        self,
        telestration_id: str,
        track_id: str,
        frame_t_ns: int,
        points: Sequence[Sequence[float]],
        rgb: int = 0,
    ) -> int:
        """Draw a stroke over the frame of ``track_id`` at ``frame_t_ns``; ``points`` are
        (u, v) in normalised image coordinates, (0, 0) top left."""
        telestration = session_pb2.Telestration(
            telestration_id=telestration_id,
            track_id=track_id,
            frame_t_ns=frame_t_ns,
            points=[session_pb2.Vec2(x=u, y=v) for u, v in points],
            rgb=rgb,
        )
        request = session_pb2.TelestrateRequest(
            **self._ids(), intent_id=_intent_id(), telestration=telestration
        )
        return int((await self._unary("Telestrate", request)).seq)

    async def remove_annotation(self, annotation_id: str) -> int:
        request = session_pb2.RemoveAnnotationRequest(
            **self._ids(), intent_id=_intent_id(), annotation_id=annotation_id
        )
        return int((await self._unary("RemoveAnnotation", request)).seq)

    async def _control(self, method: str, target: str = "") -> int:
        request = session_pb2.ControlRequest(
            **self._ids(), intent_id=_intent_id(), target=common_pb2.ParticipantId(value=target)
        )
        return int((await self._unary(method, request)).seq)

    async def request_control(self) -> int:
        return await self._control("RequestControl")

    async def grant_control(self, participant_id: str) -> int:
        return await self._control("GrantControl", participant_id)

    async def revoke_control(self, participant_id: str) -> int:
        return await self._control("RevokeControl", participant_id)

    async def heartbeat(self) -> int:
        reply = await self._unary("Heartbeat", session_pb2.HeartbeatRequest(**self._ids()))
        return int(reply.seq)

    async def leave(self) -> int:
        request = session_pb2.LeaveRequest(**self._ids(), intent_id=_intent_id())
        reply = await self._unary("Leave", request)
        await self.close()
        return int(reply.seq)

    async def close(self) -> None:
        """Stop the stream and heartbeats (without leaving: presence will time it out)."""
        self._closing = True
        for task in (self._beater, self._reader):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError, aio.AioRpcError):
                    await task
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
        await asyncio.gather(*self._retired, return_exceptions=True)
