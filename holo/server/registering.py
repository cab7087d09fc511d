"""A Register intent's work: a session model placed on the patient by registration.

The request's points come in the session's frames (landmarks and targets in the model
frame, glTF metres, as annotations are; touched and surface points in the room frame,
metres); :mod:`holo.registration` works in millimetres, patient LPS on the model's side.
This module converts (:mod:`holo.coords`), reads the model's mesh from its GLB when the
registration needs it (a surface refinement, or no targets given: the corners of the
mesh's bounds then bound the error anywhere on the bone), registers, and returns the
anchor pose with the figures every participant is shown (:class:`Registration`).

Blocking (NumPy, SciPy, an ICP of up to 10,000 points: ~0.2 ms paired, ~50-300 ms refined
on the sample knee's full mesh): run it in a thread. Needs the ``convert`` extra (SciPy,
trimesh, rtree); a server installed without it refuses Register in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from holo.coords import lps_from_gltf, room_mm_from_m
from holo.errors import InvalidRequestError
from holo.session.records import Pose, Registration

__all__ = [
    "MAX_FIDUCIALS",
    "MAX_SURFACE_POINTS",
    "MAX_TARGETS",
    "RegistrationRequest",
    "register_model",
]

#: Bounds of a request: far beyond any plan (4-10 fiducials, a few hundred surface points
#: painted with a pointer), small enough that one request costs the node under a second.
MAX_FIDUCIALS = 64
MAX_SURFACE_POINTS = 10_000
MAX_TARGETS = 64


@dataclass(frozen=True)
class RegistrationRequest:
    """What a Register intent asks, in the session's frames (metres)."""

    model_points_m: npt.NDArray[np.float64]  # (N, 3) model frame
    room_points_m: npt.NDArray[np.float64]  # (N, 3) room frame
    surface_points_m: npt.NDArray[np.float64]  # (P, 3) room frame; P = 0: no refinement
    targets_m: npt.NDArray[np.float64]  # (M, 3) model frame; M = 0: the mesh's bounds
    fle_mm: float | None  # None: estimated from the FRE

    def check(self) -> None:
        """Refuse what is out of bounds, naming the field (the geometry itself is checked
        by :mod:`holo.registration`)."""
        for name, points, most in (
            ("model_points", self.model_points_m, MAX_FIDUCIALS),
            ("room_points", self.room_points_m, MAX_FIDUCIALS),
            ("surface_points", self.surface_points_m, MAX_SURFACE_POINTS),
            ("targets", self.targets_m, MAX_TARGETS),
        ):
            if len(points) > most:
                raise InvalidRequestError(
                    f"{name} has {len(points)} points; at most {most} are taken"
                )
        if self.fle_mm is not None and not (np.isfinite(self.fle_mm) and self.fle_mm > 0):
            raise InvalidRequestError(
                f"fle_mm {self.fle_mm} is not a localisation error; give mm > 0, or 0 to "
                "estimate it"
            )

    @property
    def needs_mesh(self) -> bool:
        return len(self.surface_points_m) > 0 or len(self.targets_m) == 0


def register_model(request: RegistrationRequest, glb: bytes | None) -> tuple[Pose, Registration]:
    """Register the model (its GLB given when :attr:`RegistrationRequest.needs_mesh`); the
    anchor pose and its figures. Raises :class:`~holo.errors.RegistrationError` (an
    InvalidRequestError) for degenerate points."""
    from holo.extras import need

    need("convert", "scipy", "trimesh", "rtree", feature="registration")
    import trimesh

    from holo.export.meshes import joined, level_meshes
    from holo.registration import register

    request.check()
    mesh = None
    if request.needs_mesh:
        assert glb is not None, "the model's GLB is needed"
        # Every structure at full detail, patient LPS mm.
        vertices, faces, _ = joined(list(level_meshes(glb, -1).values()))
        mesh = trimesh.Trimesh(vertices=vertices.astype(np.float64), faces=faces, process=False)
    if len(request.targets_m):
        targets = lps_from_gltf(request.targets_m)
    else:
        assert mesh is not None
        lo, hi = mesh.bounds
        targets = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
    surface = len(request.surface_points_m) > 0
    report = register(
        lps_from_gltf(request.model_points_m),
        room_mm_from_m(request.room_points_m),
        targets_lps_mm=targets,
        fle_mm=request.fle_mm,
        mesh=mesh if surface else None,
        surface_room_mm=room_mm_from_m(request.surface_points_m) if surface else None,
    )
    position, rotation = report.room_from_patient.to_anchor_pose()
    refined = report.surface
    figures = Registration(
        fiducial_errors_mm=tuple(float(e) for e in report.fiducial_errors_mm),
        fre_rms_mm=float(report.fre_rms_mm),
        fle_mm=float(report.fle_mm),
        fle_estimated=bool(report.fle_estimated),
        expected_tre_mm=tuple(float(e) for e in report.expected_tre_mm),
        tre95_mm=tuple(float(e) for e in report.tre95_mm),
        surface_rms_mm=float(refined.residual_rms_mm) if refined else 0.0,
        surface_points_used=int(refined.n_used) if refined else 0,
        surface_points_rejected=int(refined.n_rejected) if refined else 0,
        accepted=bool(report.check.accepted),
        reasons=tuple(report.check.reasons),
    )
    return Pose(position, rotation), figures
