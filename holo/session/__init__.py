"""Shared viewing sessions: the event-sourced state, live sessions, the node's hub and buses.

Transport-neutral: nothing here imports grpc or generated code; :mod:`holo.wire.session`
converts the records to and from messages and :mod:`holo.server.session_service` serves them.

======================  ==============================================================
:mod:`.records`         typed records: Pose, Participant, SceneModel, Annotation, ...
:mod:`.state`           durable events, the fold and the intent rules
:mod:`.limits`          the bounds of every field and collection of the state
:mod:`.clock`           the session clock
:mod:`.fanout`          subscribers and paced ephemeral frames
:mod:`.served`          the interface of a session as served (live or replayed)
:mod:`.live`            one live session on a node: intents, presence, subscribers
:mod:`.hub`             the live sessions of a node
:mod:`.bus`             where logs and ephemeral channels live (memory; Redis in
                        :mod:`.redis_bus`)
======================  ==============================================================
"""

from holo.session.bus import Bus, MemoryBus, SeqConflictError
from holo.session.clock import SessionClock
from holo.session.hub import SessionHub
from holo.session.limits import SessionLimits
from holo.session.live import HubConfig, LiveSession
from holo.session.records import (
    Annotation,
    EphemeralUpdate,
    Participant,
    Pose,
    Ray,
    SceneModel,
    SessionInfo,
    Telestration,
)
from holo.session.state import Event, SessionState, apply, check_intent

__all__ = [
    "Annotation",
    "Bus",
    "EphemeralUpdate",
    "Event",
    "HubConfig",
    "LiveSession",
    "MemoryBus",
    "Participant",
    "Pose",
    "Ray",
    "SceneModel",
    "SeqConflictError",
    "SessionClock",
    "SessionHub",
    "SessionInfo",
    "SessionLimits",
    "SessionState",
    "Telestration",
    "apply",
    "check_intent",
]
