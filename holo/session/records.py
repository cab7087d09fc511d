"""The typed records of a shared session: who is in it, where models stand, what was drawn.

Transport-neutral (no grpc, no generated code), frozen, and the same on the server and in
every client; :mod:`holo.wire.session` converts them to and from holo.v1 messages, and each
has a JSON form (``to_json`` / ``from_json``) for the session bus and recordings, which is
the layout recordings have always had on disk.

Frames and units. Poses are glTF convention: right-handed, +Y up, metres; ``rotation`` a
unit quaternion (x, y, z, w). An anchor pose maps the model frame to the room frame (the
presenter's tracking space); a head pose and a pointer ray are in the room frame;
annotation points are in the model frame of the model they are anchored to; telestration
points are normalised image coordinates (u, v) in [0, 1], (0, 0) top left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "EPHEMERAL_CHANNELS",
    "Annotation",
    "EphemeralUpdate",
    "EphemeralValue",
    "Participant",
    "Pose",
    "Ray",
    "Registration",
    "SceneModel",
    "SessionInfo",
    "Telestration",
    "Vec3",
]

Vec3 = tuple[float, float, float]

#: Ephemeral channels: latest value per participant; ``heartbeat`` carries no value.
EPHEMERAL_CHANNELS = ("head_pose", "pointer", "drag", "heartbeat")


def _vec3(values: Any) -> Vec3:
    x, y, z = values
    return (float(x), float(y), float(z))


@dataclass(frozen=True, slots=True)
class Pose:
    """A rigid transform: ``position`` (metres) and unit quaternion ``rotation`` (x, y, z, w)."""

    position: Vec3
    rotation: tuple[float, float, float, float]

    IDENTITY: ClassVar[Pose]

    def to_json(self) -> dict[str, Any]:
        return {"position": list(self.position), "rotation": list(self.rotation)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Pose:
        x, y, z, w = raw["rotation"]
        return cls(_vec3(raw["position"]), (float(x), float(y), float(z), float(w)))


Pose.IDENTITY = Pose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What identifies a session: its id, its case and when it was created (session ns)."""

    session_id: str
    case_id: str
    created_t_ns: int


@dataclass(frozen=True, slots=True)
class Participant:
    """One participant. ``subject`` is the token subject that joined with this id: it stays
    on the server (empty in clients); ``present`` is False while it is away."""

    participant_id: str
    role: str
    display_name: str
    subject: str = ""
    present: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "role": self.role,
            "display_name": self.display_name,
            "subject": self.subject,
            "present": self.present,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Participant:
        return cls(
            raw["participant_id"],
            raw["role"],
            raw["display_name"],
            raw.get("subject", ""),
            bool(raw.get("present", True)),
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """How far off a registered anchor may be, in millimetres (the figures of
    :class:`holo.registration.RegistrationReport`): the fiducial registration error per
    landmark and RMS, the localisation error used, the expected target registration error
    at each target and its 95 % bound, the surface refinement's residual (0 points: not
    refined), and whether it is within the server's limits (``reasons`` if not)."""

    fiducial_errors_mm: tuple[float, ...]
    fre_rms_mm: float
    fle_mm: float
    fle_estimated: bool
    expected_tre_mm: tuple[float, ...]
    tre95_mm: tuple[float, ...]
    surface_rms_mm: float = 0.0
    surface_points_used: int = 0
    surface_points_rejected: int = 0
    accepted: bool = True
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "fiducial_errors_mm": list(self.fiducial_errors_mm),
            "fre_rms_mm": self.fre_rms_mm,
            "fle_mm": self.fle_mm,
            "fle_estimated": self.fle_estimated,
            "expected_tre_mm": list(self.expected_tre_mm),
            "tre95_mm": list(self.tre95_mm),
            "surface_rms_mm": self.surface_rms_mm,
            "surface_points_used": self.surface_points_used,
            "surface_points_rejected": self.surface_points_rejected,
            "accepted": self.accepted,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Registration:
        return cls(
            tuple(float(v) for v in raw["fiducial_errors_mm"]),
            float(raw["fre_rms_mm"]),
            float(raw["fle_mm"]),
            bool(raw["fle_estimated"]),
            tuple(float(v) for v in raw["expected_tre_mm"]),
            tuple(float(v) for v in raw["tre95_mm"]),
            float(raw["surface_rms_mm"]),
            int(raw["surface_points_used"]),
            int(raw["surface_points_rejected"]),
            bool(raw["accepted"]),
            tuple(str(r) for r in raw["reasons"]),
        )


@dataclass(frozen=True, slots=True)
class SceneModel:
    """A model placed in the session at ``anchor_pose``. ``t_ns``: when that pose was
    committed, where a client's timeline knows it (0 otherwise; never on the wire).
    ``registration``: set when the pose came from a registration (its errors)."""

    model_id: str
    anchor_pose: Pose
    t_ns: int = 0
    registration: Registration | None = None

    def to_json(self) -> dict[str, Any]:
        raw = {"model_id": self.model_id, "anchor_pose": self.anchor_pose.to_json()}
        if self.registration is not None:
            raw["registration"] = self.registration.to_json()
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SceneModel:
        registration = raw.get("registration")
        return cls(
            raw["model_id"],
            Pose.from_json(raw["anchor_pose"]),
            registration=None if registration is None else Registration.from_json(registration),
        )


@dataclass(frozen=True, slots=True)
class Annotation:
    """A marker (one point), a stroke (2 or more points) or a text label (one point and
    ``text``), anchored to a loaded model; points in that model's frame (metres)."""

    annotation_id: str
    model_id: str
    author: str
    shape: str  # "marker", "stroke" or "label"
    points: tuple[Vec3, ...]
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "annotation_id": self.annotation_id,
            "model_id": self.model_id,
            "author": self.author,
            "shape": self.shape,
            "points": [list(p) for p in self.points],
            "text": self.text,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Annotation:
        return cls(
            raw["annotation_id"],
            raw["model_id"],
            raw["author"],
            raw["shape"],
            tuple(_vec3(p) for p in raw["points"]),
            raw.get("text", ""),
        )


@dataclass(frozen=True, slots=True)
class Telestration:
    """A stroke drawn over the video frame of ``track_id`` at session time ``frame_t_ns``;
    ``points`` normalised image coordinates (u, v), ``rgb`` 0xRRGGBB."""

    telestration_id: str
    track_id: str
    frame_t_ns: int
    author: str
    points: tuple[tuple[float, float], ...]
    rgb: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "telestration_id": self.telestration_id,
            "track_id": self.track_id,
            "frame_t_ns": self.frame_t_ns,
            "author": self.author,
            "points": [list(p) for p in self.points],
            "rgb": self.rgb,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Telestration:
        return cls(
            raw["telestration_id"],
            raw["track_id"],
            int(raw["frame_t_ns"]),
            raw["author"],
            tuple((float(u), float(v)) for u, v in raw["points"]),
            int(raw.get("rgb", 0)),
        )


@dataclass(frozen=True, slots=True)
class Ray:
    """A pointer ray in the room frame: ``origin`` (metres) and a non-zero ``direction``."""

    origin: Vec3
    direction: Vec3


EphemeralValue = Pose | Ray | SceneModel | None


@dataclass(frozen=True, slots=True)
class EphemeralUpdate:
    """The newest value of one participant's channel: a head pose (:class:`Pose`), a
    pointer (:class:`Ray`), a live drag (:class:`SceneModel`) or a heartbeat (None)."""

    participant_id: str
    channel: str
    t_ns: int
    value: EphemeralValue = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {}
        if isinstance(self.value, Pose):
            value = {"head_pose": self.value.to_json()}
        elif isinstance(self.value, Ray):
            value = {"origin": list(self.value.origin), "direction": list(self.value.direction)}
        elif isinstance(self.value, SceneModel):
            value = self.value.to_json()
        return {
            "participant_id": self.participant_id,
            "channel": self.channel,
            "t_ns": self.t_ns,
            "value": value,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EphemeralUpdate:
        channel, value = raw["channel"], raw["value"]
        parsed: EphemeralValue = None
        if channel == "head_pose":
            parsed = Pose.from_json(value["head_pose"])
        elif channel == "pointer":
            parsed = Ray(_vec3(value["origin"]), _vec3(value["direction"]))
        elif channel == "drag":
            parsed = SceneModel.from_json(value)
        elif channel != "heartbeat":
            raise ValueError(f"unknown ephemeral channel {channel!r}")
        return cls(raw["participant_id"], channel, int(raw["t_ns"]), parsed)
