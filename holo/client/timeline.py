"""The session as of any recent moment, to show a video frame with the holograms of its time.

A viewer renders frame ``t`` with the session state as of ``t``: the anchor poses committed,
annotations and telestrations made at or before ``t``, and each participant's newest
ephemeral value (live drag, pointer, head pose) at or before ``t``. Events reach a viewer a
little after they happen, so :class:`FrameSync` holds each frame back by a jitter buffer of
``delay_ns`` on the session clock before it pairs it with the state: an event stamped at or
before ``t`` has then arrived. The server refuses intents stamped more than 1 s in the past
(:data:`holo.session.clock.MAX_BACKDATE_NS`), so a buffer a little above the delivery latency
suffices for events the server stamps or a client stamps as it acts, and one above 1 s for
any event. The timeline folds events in time order (a later seq may carry an earlier time).

Ephemeral values (live drag, head pose, pointer) come to observers at a capped rate
(``HubConfig.observer_ephemeral_interval_s``, 15 Hz), fewer than the video's frames:
between two values that bracket a frame's moment the timeline interpolates (positions and
ray directions linearly, rotations by normalised lerp), so the hologram moves on every
frame instead of in steps; the jitter buffer has then received the later value. Values
further apart than ``max_gap_ns`` (a pause, a lost link) are held, and
``interpolate=False`` holds the newest value always. The Unity package's timeline
(unity_bridge/Core/SessionTimeline.cs) and the page's (holo/web/src/timeline.js) do the
same, in the same floating-point operations: the three answer the shared vectors
(``tests/vectors/timeline.json``) alike, to the last bit.

Transport-neutral: fed by :class:`holo.client.session.SessionClient` callbacks and frames
from :class:`holo.client.video.VideoClient`.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from holo.session.records import EphemeralUpdate, EphemeralValue, Pose, Ray, SceneModel
from holo.session.state import Event, SessionState, apply

__all__ = ["FrameSync", "SessionTimeline", "StateAt", "fold_at_time", "interpolate"]

F = TypeVar("F")


@dataclass
class StateAt:
    """The session as of ``t_ns``: the durable state and the ephemeral values in effect."""

    t_ns: int
    state: SessionState
    # (participant_id, channel) -> the newest update with t_ns <= this t_ns, its value
    # interpolated towards the next one when that brackets this moment closely
    ephemeral: dict[tuple[str, str], EphemeralUpdate] = field(default_factory=dict)
    # False for a moment before what the timeline knows (before the snapshot it started
    # from, or older than its horizon): ``state`` is then the oldest it holds.
    exact: bool = True

    def anchor_pose(self, model_id: str) -> Pose | None:
        """Where the model is shown at this moment: a live drag in progress (newer than
        the last commit) wins over the committed pose."""
        committed = self.state.models.get(model_id)
        drags = [
            u
            for (_pid, channel), u in self.ephemeral.items()
            if channel == "drag"
            and isinstance(u.value, SceneModel)
            and u.value.model_id == model_id
        ]
        drag = max(drags, key=lambda u: u.t_ns, default=None)
        committed_at = 0 if committed is None else committed.t_ns
        if drag is not None and isinstance(drag.value, SceneModel) and drag.t_ns > committed_at:
            return drag.value.anchor_pose
        return None if committed is None else committed.anchor_pose


def fold_at_time(state: SessionState, event: Event) -> None:
    """Fold ``event`` into ``state`` in time order rather than seq order (a client may
    stamp an intent up to 1 s in the past, so a later seq can carry an earlier ``t_ns``).
    The fold's rules tolerate it; the commit time of each model is kept with its pose."""
    state.seq = event.seq - 1
    apply(state, event)
    if isinstance(event.data, SceneModel):
        model_id = event.data.model_id
        state.models[model_id] = replace(state.models[model_id], t_ns=event.t_ns)


def _lerp(a: tuple[float, ...], b: tuple[float, ...], f: float) -> tuple[float, ...]:
    return tuple(x + (y - x) * f for x, y in zip(a, b, strict=True))


def _pose_between(a: Pose, b: Pose, f: float) -> Pose:
    qb = b.rotation
    if sum(x * y for x, y in zip(a.rotation, qb, strict=True)) < 0:
        qb = (-qb[0], -qb[1], -qb[2], -qb[3])  # the same rotation, the short way round
    q = _lerp(a.rotation, qb, f)
    norm = math.sqrt(sum(x * x for x in q))
    x, y, z = _lerp(a.position, b.position, f)
    qx, qy, qz, qw = (v / norm for v in q)
    return Pose((x, y, z), (qx, qy, qz, qw))


def interpolate(older: EphemeralValue, newer: EphemeralValue, f: float) -> EphemeralValue:
    """The value a fraction ``f`` (0..1) of the way from ``older`` to ``newer``.

    Poses: position linearly, rotation by normalised lerp of the quaternions (within 0.5
    % of a slerp's angle for the under-20 degree turns between a headset's values 66 ms
    apart). A drag (:class:`SceneModel`) interpolates its anchor pose when both are of the
    same model. A ray: origin and direction linearly. Anything else (different kinds or
    models, heartbeats, directions that would cancel out): ``older``, held.
    """
    if isinstance(older, Pose) and isinstance(newer, Pose):
        return _pose_between(older, newer, f)
    if (
        isinstance(older, SceneModel)
        and isinstance(newer, SceneModel)
        and older.model_id == newer.model_id
    ):
        return replace(older, anchor_pose=_pose_between(older.anchor_pose, newer.anchor_pose, f))
    if isinstance(older, Ray) and isinstance(newer, Ray):
        direction = _lerp(older.direction, newer.direction, f)
        if max(abs(v) for v in direction) < 1e-9:
            return older
        ox, oy, oz = _lerp(older.origin, newer.origin, f)
        dx, dy, dz = direction
        return Ray((ox, oy, oz), (dx, dy, dz))
    return older


class SessionTimeline:
    """The durable states and ephemeral values of the last ``horizon_ns`` of session time.

    Feed it :meth:`reset` (a snapshot or resync), :meth:`on_event` (each event as applied)
    and :meth:`on_ephemeral`; ask :meth:`state_at`. Events are kept sorted by ``(t_ns,
    seq)``, and the state after each is computed when first asked for (and again from the
    point where a late-stamped event was inserted).
    """

    def __init__(
        self,
        horizon_ns: int = 10_000_000_000,
        *,
        interpolate: bool = True,
        max_gap_ns: int = 250_000_000,
    ) -> None:
        self.horizon_ns = horizon_ns
        #: Between two ephemeral values at most ``max_gap_ns`` apart, :meth:`state_at`
        #: interpolates (250 ms: nearly four intervals of the observers' 15 Hz values,
        #: far beyond those of a source that is moving; False: hold the older value).
        self.interpolate = interpolate
        self.max_gap_ns = max_gap_ns
        self._keys: list[tuple[int, int]] = []  # (t_ns, seq), sorted
        self._events: list[Event] = []  # in that order
        self._states: list[SessionState] = []  # the state after events[k], for k < len
        self._base = SessionState()  # the state before the first kept event
        self._base_t = 0  # the base is the state as of this time (and later, until events)
        self._ephemeral: dict[tuple[str, str], deque[EphemeralUpdate]] = {}

    def reset(self, state: SessionState, t_ns: int = 0) -> None:
        """Start again from ``state``, the state as of session time ``t_ns`` (a snapshot's)."""
        self._base_t = t_ns
        self._keys.clear()
        self._events.clear()
        self._states.clear()
        self._base = state.copy()
        self._ephemeral.clear()

    def on_event(self, event: Event) -> None:
        """An event as the client applied it (in seq order; the timeline re-orders)."""
        key = (event.t_ns, event.seq)
        k = bisect.bisect_right(self._keys, key)
        self._keys.insert(k, key)
        self._events.insert(k, event)
        del self._states[k:]  # computed again from here when asked
        self._prune(self._keys[-1][0])

    def on_ephemeral(self, update: EphemeralUpdate) -> None:
        key = (update.participant_id, update.channel)
        history = self._ephemeral.setdefault(key, deque())
        if history and update.t_ns < history[-1].t_ns:
            return  # an older value than one we hold: latest-value channels skip it
        history.append(update)
        while len(history) > 1 and history[1].t_ns <= update.t_ns - self.horizon_ns:
            history.popleft()

    def _state_after(self, k: int) -> SessionState:
        """The state after the first ``k`` kept events (time order)."""
        while len(self._states) < k:
            n = len(self._states)
            state = (self._states[-1] if self._states else self._base).copy()
            fold_at_time(state, self._events[n])
            self._states.append(state)
        return self._states[k - 1] if k else self._base

    def _prune(self, newest: int) -> None:
        keep_from = bisect.bisect_left(self._keys, (newest - self.horizon_ns, 0))
        if keep_from > 1:
            # Older than the horizon: folded into the base.
            self._base = self._state_after(keep_from)
            self._base_t = max(self._base_t, self._keys[keep_from - 1][0])
            del self._keys[:keep_from]
            del self._events[:keep_from]
            del self._states[:keep_from]

    def state_at(self, t_ns: int) -> StateAt:
        """The session as of ``t_ns`` (events and values stamped at or before it)."""
        k = bisect.bisect_right(self._keys, (t_ns, 2**63))
        state = self._state_after(k)
        ephemeral: dict[tuple[str, str], EphemeralUpdate] = {}
        for key, history in self._ephemeral.items():
            k = bisect.bisect_right(history, t_ns, key=lambda u: u.t_ns)
            if k:
                ephemeral[key] = self._value_at(history, k, t_ns)
        return StateAt(t_ns, state, ephemeral, exact=t_ns >= self._base_t)

    def _value_at(self, history: deque[EphemeralUpdate], k: int, t_ns: int) -> EphemeralUpdate:
        """The value in effect at ``t_ns``: ``history[k - 1]`` (the newest at or before
        it), interpolated towards ``history[k]`` when that one brackets ``t_ns`` closely.
        It keeps the older value's ``t_ns``, which decides whether a drag shows instead of
        a commit (:meth:`StateAt.anchor_pose`) exactly as without interpolation."""
        older = history[k - 1]
        if not self.interpolate or k == len(history) or older.t_ns == t_ns:
            return older
        newer = history[k]
        gap = newer.t_ns - older.t_ns
        if gap > self.max_gap_ns:
            return older
        value = interpolate(older.value, newer.value, (t_ns - older.t_ns) / gap)
        return older if value is older.value else replace(older, value=value)


class FrameSync(Generic[F]):
    """A jitter buffer pairing frames with the session state of their moment.

    ``push`` frames as they arrive (anything with a ``t_ns``); ``ready(now_ns)`` returns the
    frames whose ``t_ns + delay_ns`` has passed on the session clock, each with
    :meth:`SessionTimeline.state_at` of its ``t_ns``, in order.
    """

    def __init__(
        self,
        timeline: SessionTimeline,
        *,
        delay_ns: int = 250_000_000,
        t_of: Callable[[F], int] = lambda f: int(f.t_ns),  # type: ignore[attr-defined]
        max_frames: int = 300,
    ) -> None:
        self.timeline = timeline
        self.delay_ns = delay_ns
        self._t_of = t_of
        self._frames: deque[F] = deque()
        self._max = max_frames
        self.dropped = 0

    def push(self, frame: F) -> None:
        self._frames.append(frame)
        while len(self._frames) > self._max:  # a renderer that stopped asking
            self._frames.popleft()
            self.dropped += 1

    def ready(self, now_ns: int) -> list[tuple[F, StateAt]]:
        out: list[tuple[F, StateAt]] = []
        while self._frames and self._t_of(self._frames[0]) + self.delay_ns <= now_ns:
            frame = self._frames.popleft()
            out.append((frame, self.timeline.state_at(self._t_of(frame))))
        return out

    def drain(self) -> list[tuple[F, StateAt]]:
        """Every held frame now, whatever the clock says (end of a stream)."""
        return self.ready(2**63 - 1)

    def clear(self) -> None:
        self._frames.clear()
