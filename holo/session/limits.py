"""The bounds of a session's state: every field and every collection, checked in one place.

A session's state goes whole to every participant who joins or falls behind (a snapshot),
so what one participant may add is what every headset must be able to receive: gRPC
clients accept messages of at most 4 MiB by default, the surgeon's headset included. The
defaults below are chosen so that a session filled to every bound, with every field at its
longest, still makes a join snapshot well under that (about 3.3 MB;
:func:`holo.wire.session.worst_snapshot_bytes` computes it from the bounds, the server
refuses to start with bounds whose snapshot would not fit, and a test fills a session to
every bound and joins it).

Checked when an intent is applied (:func:`holo.session.state.check_intent`) and when a
participant joins (:meth:`SessionLimits.check_join`), against the latest state, so a bound
holds across nodes too. A field too long is INVALID_ARGUMENT, a full collection
RESOURCE_EXHAUSTED; both are one line naming the field and the bound, never echoing what
was sent (an id of a megabyte would not fit a client's error either).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from holo.errors import InvalidRequestError, LimitError
from holo.session.records import (
    Annotation,
    Participant,
    SceneModel,
    Telestration,
)

if TYPE_CHECKING:
    from holo.session.state import SessionState

__all__ = ["GUIDES", "SessionLimits", "check_id"]

#: Roles that guide the procedure: seats are kept for them (see ``guide_seats``).
GUIDES = frozenset({"presenter", "expert"})

# common.proto, ModelId: "All holo ids share one format: ... 1 to 128 characters of
# [A-Za-z0-9._-]". One byte per character, so an id's wire size is its length.
_ID = re.compile(r"[A-Za-z0-9._-]+")


def check_id(value: str, what: str, max_chars: int = 128) -> str:
    """``value`` if it is an id of 1 to ``max_chars`` characters of ``[A-Za-z0-9._-]``;
    INVALID_ARGUMENT naming ``what`` otherwise (the value is not echoed)."""
    if not value or len(value) > max_chars or _ID.fullmatch(value) is None:
        raise InvalidRequestError(
            f"{what}: an id of 1 to {max_chars} characters of A-Z a-z 0-9 . _ - is needed "
            f"(got {len(value)} characters)"
        )
    return value


def _check_text(value: str, what: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise InvalidRequestError(
            f"{what} has at most {max_chars} characters, not {len(value)}; shorten it"
        )


def _full(what: str, limit: int, todo: str) -> LimitError:
    return LimitError(f"this session holds {limit} {what}, the most it takes; {todo}")


@dataclass(frozen=True)
class SessionLimits:
    """The bounds of one session's state (``holo serve`` takes the defaults; a
    :class:`~holo.session.live.HubConfig` carries them).

    The worst-case snapshot of the defaults (every bound reached, ids 128 characters,
    display names and labels of 4-byte UTF-8 characters, every point non-zero): about
    0.55 MB of participants, 0.13 MB of control requests, 0.63 MB of annotations without
    their points, 0.21 MB of telestrations without theirs, 1.74 MB of points (29 bytes a
    3-D point on the wire): about 3.3 MB, 0.9 MB under the 4 MiB a client takes.
    """

    #: Ids (annotations, telestrations, tracks, models, participants, intents): common.proto
    #: gives every holo id 1 to 128 characters (the most this may be; requests with longer
    #: ones are refused when decoded, holo.server.decoding).
    max_id_chars: int = 128
    #: "Dr A, theatre 3": a name and a place; 100 is what the server always allowed.
    max_display_name_chars: int = 100
    #: A text label pinned to anatomy: a sentence or two (500 is the wire's documented bound).
    max_label_chars: int = 500
    #: Points of one stroke or telestration (session.proto: "at most 10,000"): 110 s of a
    #: pen sampled at 90 Hz; a hand-drawn stroke is typically 100-300.
    max_stroke_points: int = 10_000
    #: Points of every annotation and telestration of the session together: 60,000 points
    #: are 1.74 MB on the wire (29 bytes each), about 300 strokes of 200 points. Removing
    #: an annotation gives its points back.
    max_points: int = 60_000
    #: Annotations anchored to models: markers, strokes and labels of one procedure
    #: number in the tens; 256 leaves room (each up to ~2.4 kB without its points).
    max_annotations: int = 256
    #: Strokes drawn over video frames: a teaching case draws many short ones; 512
    #: (each up to ~0.4 kB without its points).
    max_telestrations: int = 512
    #: Models loaded in the session: a case has a few (bone, vessels, LODs); 32.
    max_models: int = 32
    #: Participants present or away (README: a node serves 500 observers; several nodes
    #: more). 1,000 participants are at most 0.55 MB of a snapshot.
    max_participants: int = 1_000
    #: Seats only presenters and experts may take: observers (and radiologists) fill at
    #: most ``max_participants - guide_seats``, so a crowd cannot lock the surgeon out.
    guide_seats: int = 16

    def __post_init__(self) -> None:
        for name in _names():
            if getattr(self, name) < (0 if name == "guide_seats" else 1):
                raise InvalidRequestError(f"session limit {name} must be at least 1")
        if self.max_id_chars > 128:
            raise InvalidRequestError("session limit max_id_chars is at most 128 (common.proto)")
        if self.guide_seats >= self.max_participants:
            raise InvalidRequestError("session limit guide_seats must be under max_participants")

    def replaced(self, settings: Iterable[str]) -> SessionLimits:
        """These limits with ``NAME=VALUE`` settings applied (``holo serve --session-limit``).

        Raises
        ------
        InvalidRequestError
            A name that is not a limit, or a value that is not a whole number in range.
        """
        changes: dict[str, int] = {}
        for setting in settings:
            name, _, value = setting.partition("=")
            if name not in _names():
                raise InvalidRequestError(
                    f"--session-limit {name[:40]!r} is not a session limit; use NAME=VALUE "
                    f"with NAME one of {', '.join(_names())}"
                )
            try:
                changes[name] = int(value)
            except ValueError:
                raise InvalidRequestError(
                    f"--session-limit {name}: {value[:40]!r} is not a whole number"
                ) from None
        return replace(self, **changes)

    def check_id(self, value: str, what: str) -> str:
        return check_id(value, what, self.max_id_chars)

    def _check_points(self, count: int, what: str) -> None:
        if not 1 <= count <= self.max_stroke_points:
            raise InvalidRequestError(
                f"{what} has 1 to {self.max_stroke_points} points, not {count}"
            )

    def check_record(self, data: object) -> None:
        """INVALID_ARGUMENT unless every field of ``data`` (a record or an id) is in bounds."""
        if isinstance(data, Participant):
            self.check_id(data.participant_id, "participant_id")
            _check_text(data.display_name, "display_name", self.max_display_name_chars)
        elif isinstance(data, SceneModel):
            self.check_id(data.model_id, "model_id")
        elif isinstance(data, Annotation):
            self.check_id(data.annotation_id, "annotation.annotation_id")
            self.check_id(data.model_id, "annotation.model_id")
            self.check_id(data.author, "annotation.author")
            self._check_points(len(data.points), f"annotation {data.annotation_id}")
            _check_text(data.text, "annotation.label.text", self.max_label_chars)
        elif isinstance(data, Telestration):
            self.check_id(data.telestration_id, "telestration.telestration_id")
            self.check_id(data.track_id, "telestration.track_id")
            self.check_id(data.author, "telestration.author")
            self._check_points(len(data.points), f"telestration {data.telestration_id}")
        elif isinstance(data, str):
            self.check_id(data, "the id the intent names")

    def check_room(self, state: SessionState, data: object) -> None:
        """RESOURCE_EXHAUSTED when adding ``data`` would take ``state`` past a bound."""
        if isinstance(data, SceneModel) and data.model_id not in state.models:
            if len(state.models) >= self.max_models:
                raise _full("models", self.max_models, "this many models is one case's worth")
        elif isinstance(data, Annotation | Telestration):
            if isinstance(data, Annotation) and len(state.annotations) >= self.max_annotations:
                raise _full("annotations", self.max_annotations, "remove some first")
            if (
                isinstance(data, Telestration)
                and len(state.telestrations) >= self.max_telestrations
            ):
                raise _full("telestrations", self.max_telestrations, "remove some first")
            held = sum(len(a.points) for a in state.annotations.values())
            held += sum(len(t.points) for t in state.telestrations.values())
            if held + len(data.points) > self.max_points:
                raise LimitError(
                    f"this session's annotations and telestrations hold {held} of at most "
                    f"{self.max_points} points; {len(data.points)} more do not fit: remove "
                    "some first or draw with fewer points"
                )

    def check_join(self, state: SessionState, participant: Participant) -> bool:
        """True when ``participant`` (new) may join ``state``; False when it is in already;
        RESOURCE_EXHAUSTED when a bound says no."""
        if participant.participant_id in state.participants:
            return False
        self.check_record(participant)
        seats = self.max_participants
        if participant.role not in GUIDES:
            seats -= self.guide_seats
        if len(state.participants) >= seats:
            raise LimitError(
                f"this session is full for a {participant.role}: {len(state.participants)} "
                f"participants of at most {self.max_participants} ({self.guide_seats} seats "
                "kept for presenters and experts); try again later"
            )
        return True


def _names() -> list[str]:
    return [f.name for f in fields(SessionLimits)]
