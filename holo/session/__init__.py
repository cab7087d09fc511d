"""Shared viewing sessions: the event-sourced state, the per-node hub and the buses.

Transport-neutral: nothing here imports grpc or generated code; the servicer in
:mod:`holo.server.session_servicer` converts messages.
"""

from holo.session.bus import Bus, MemoryBus, SeqConflictError
from holo.session.hub import HubConfig, SessionClock, SessionHub, Subscription
from holo.session.state import Event, SessionState, apply, check_intent

__all__ = [
    "Bus",
    "Event",
    "HubConfig",
    "MemoryBus",
    "SeqConflictError",
    "SessionClock",
    "SessionHub",
    "SessionState",
    "Subscription",
    "apply",
    "check_intent",
]
