"""Registration: a model placed on the patient with a measured error.

Paired fiducials (landmarks picked on the model, touched in the room) are registered in
closed form; points collected on the exposed bone optionally refine the result by ICP on
the model's mesh; Fitzpatrick's formula predicts the target registration error at the
model's points of interest; a result over its limits is flagged, not silently accepted.
Everything is in millimetres: patient LPS mm on the model's side (the frame of the CT and
of the mesh vertices in the GLB), room-frame mm on the other (:mod:`holo.coords` converts
headset metres and turns the result into an anchor pose). Needs the ``convert`` extra
(SciPy; trimesh and rtree for the surface refinement). Nothing here knows of sessions or
gRPC::

    from holo.registration import register

    report = register(
        landmarks_lps_mm,                       # (N, 3), picked on the CT / model
        room_mm_from_m(touched_room_m),         # (N, 3), same order, from the headset
        targets_lps_mm=planned_entry_points,    # (M, 3), where the error matters
        mesh=femur_mesh, surface_room_mm=room_mm_from_m(painted_room_m),  # optional
    )
    report.check.accepted, report.check.reasons   # flagged when over AccuracyLimits
    position_m, quat_xyzw = report.room_from_patient.to_anchor_pose()

======================  ==============================================================
:mod:`.points`          what is accepted; degenerate input refused (RegistrationError)
:mod:`.transform`       RigidTransform (mm) and its anchor pose
:mod:`.paired`          closed-form paired-point registration, FRE
:mod:`.accuracy`        FRE, FLE, expected TRE and its 95 % bound (Fitzpatrick's formulas)
:mod:`.surface`         ICP of surface points to the mesh, with outlier rejection
:mod:`.check`           the limits and the threshold check
:mod:`.report`          ``register``: all of the above in one call
======================  ==============================================================
"""

from holo.registration.accuracy import (
    estimate_fle,
    expected_fre,
    expected_tre,
    fiducial_errors,
    tre_percentile,
)
from holo.registration.check import AccuracyCheck, AccuracyLimits, check_accuracy
from holo.registration.paired import PairedPointRegistration, register_paired_points
from holo.registration.points import MIN_PAIRS, MIN_SPREAD_MM
from holo.registration.report import RegistrationReport, register
from holo.registration.transform import RigidTransform

__all__ = [
    "MIN_PAIRS",
    "MIN_SPREAD_MM",
    "AccuracyCheck",
    "AccuracyLimits",
    "PairedPointRegistration",
    "RegistrationReport",
    "RigidTransform",
    "check_accuracy",
    "estimate_fle",
    "expected_fre",
    "expected_tre",
    "fiducial_errors",
    "refine_on_surface",
    "register",
    "register_paired_points",
    "tre_percentile",
]


def __getattr__(name: str) -> object:
    # The surface refinement needs trimesh and rtree: loaded when first used, so paired-point
    # registration works with SciPy alone.
    if name in ("refine_on_surface", "SurfaceRefinement"):
        from holo.registration import surface

        return getattr(surface, name)
    raise AttributeError(f"module 'holo.registration' has no attribute {name!r}")
