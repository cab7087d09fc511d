"""One call from fiducials (and optionally surface points) to a checked registration: what
a session intent or the OpenIGTLink gateway runs, and what the session shows everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from holo.errors import RegistrationError
from holo.registration.accuracy import expected_tre, fiducial_errors, tre_percentile
from holo.registration.check import AccuracyCheck, AccuracyLimits, check_accuracy
from holo.registration.paired import PairedPointRegistration, register_paired_points
from holo.registration.points import as_points
from holo.registration.transform import RigidTransform

if TYPE_CHECKING:
    import trimesh

    from holo.registration.surface import SurfaceRefinement

__all__ = ["RegistrationReport", "register"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class RegistrationReport:
    """A registration and its errors, checked.

    Attributes
    ----------
    room_from_patient
        The result, patient LPS mm -> room mm: the surface refinement's when there was one,
        else the paired-point one. :meth:`RigidTransform.to_anchor_pose` makes it an anchor.
    paired
        The paired-point registration (FRE per fiducial, the fiducials).
    surface
        The surface refinement, or None.
    fiducial_errors_mm
        Shape ``(N,)``: FRE per fiducial under ``room_from_patient`` (equal to
        ``paired.fiducial_errors_mm`` without refinement; a refinement that slid away
        from the landmarks shows here).
    fle_mm
        The FLE the TRE was predicted with; ``fle_estimated`` says whether it was given or
        estimated from the paired FRE.
    targets_lps_mm
        Shape ``(M, 3)``: the targets, patient LPS mm.
    expected_tre_mm
        Shape ``(M,)``: expected TRE of the paired-point registration at each target
        (Fitzpatrick's formula; a surface refinement usually does better, but has no
        closed-form prediction, so this stays the conservative figure).
    tre95_mm
        Shape ``(M,)``: the TRE one registration stays within 95 % of the time at each
        target (:func:`~holo.registration.accuracy.tre_percentile`); what the check judges.
    check
        Accepted, or flagged with the reasons.
    """

    room_from_patient: RigidTransform
    paired: PairedPointRegistration
    surface: SurfaceRefinement | None
    fiducial_errors_mm: FloatArray
    fle_mm: float
    fle_estimated: bool
    targets_lps_mm: FloatArray
    expected_tre_mm: FloatArray
    tre95_mm: FloatArray
    check: AccuracyCheck

    @property
    def fre_rms_mm(self) -> float:
        """RMS FRE under :attr:`room_from_patient`."""
        return float(np.sqrt(np.mean(self.fiducial_errors_mm**2)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (mm; the transform as a row-major 4x4), for a session event,
        the CLI's ``--json`` or a log."""
        surface = None
        if self.surface is not None:
            surface = {
                "residual_rms_mm": self.surface.residual_rms_mm,
                "points_used": self.surface.n_used,
                "points_rejected": self.surface.n_rejected,
                "iterations": self.surface.iterations,
                "converged": self.surface.converged,
            }
        return {
            "room_from_patient_mm": self.room_from_patient.matrix.tolist(),
            "fiducial_errors_mm": self.fiducial_errors_mm.tolist(),
            "fre_rms_mm": self.fre_rms_mm,
            "paired_fre_rms_mm": self.paired.fre_rms_mm,
            "fle_mm": self.fle_mm,
            "fle_estimated": self.fle_estimated,
            "expected_tre_mm": self.expected_tre_mm.tolist(),
            "tre95_mm": self.tre95_mm.tolist(),
            "surface": surface,
            "accepted": self.check.accepted,
            "reasons": list(self.check.reasons),
        }


def register(
    patient_lps_mm: npt.ArrayLike,
    room_mm: npt.ArrayLike,
    *,
    targets_lps_mm: npt.ArrayLike,
    fle_mm: float | None = None,
    mesh: trimesh.Trimesh | None = None,
    surface_room_mm: npt.ArrayLike | None = None,
    limits: AccuracyLimits | None = None,
) -> RegistrationReport:
    """Register paired fiducials, optionally refine on the bone surface, predict the TRE at
    the targets and check the result against ``limits``.

    Parameters
    ----------
    patient_lps_mm
        Shape ``(N, 3)``, N >= 3: landmarks on the model, patient LPS mm.
    room_mm
        Shape ``(N, 3)``: the same landmarks in the same order, room frame mm.
    targets_lps_mm
        Shape ``(M, 3)``: the model's points of interest, patient LPS mm. With none
        planned, the corners of the model's bounding box bound the TRE anywhere on it.
    fle_mm
        The fiducial localisation error, when known (tracker and pointer specification,
        combined with the landmarks' picking error as a root sum of squares); default:
        estimated from the FRE.
    mesh, surface_room_mm
        Together or not at all: the bone's mesh (patient LPS mm) and points collected on
        that bone in the room (``(P, 3)``, mm) to refine the registration on.
    limits
        What to flag; default :class:`AccuracyLimits`.

    Raises
    ------
    RegistrationError
        Degenerate input (see :func:`register_paired_points`,
        :func:`~holo.registration.surface.refine_on_surface`).
    """
    paired = register_paired_points(patient_lps_mm, room_mm)
    targets = as_points("targets_lps_mm", targets_lps_mm)
    if fle_mm is not None and not (np.isfinite(fle_mm) and fle_mm >= 0):
        raise RegistrationError(
            f"fle_mm: {fle_mm} is not a length; give the localisation error in mm or None",
            input_name="fle_mm",
        )
    if (mesh is None) != (surface_room_mm is None):
        raise RegistrationError(
            "surface refinement needs both the model's mesh and the surface points; give "
            "both or neither",
            input_name="mesh" if mesh is None else "surface_room_mm",
        )
    fle = paired.fle_estimate_mm if fle_mm is None else float(fle_mm)
    tre = expected_tre(paired.patient_lps_mm, targets, fle)
    tre95 = tre_percentile(tre, paired.n_fiducials, fle_estimated=fle_mm is None)
    surface = None
    final = paired.room_from_patient
    if mesh is not None and surface_room_mm is not None:
        from holo.registration.surface import refine_on_surface  # trimesh: only when used

        surface = refine_on_surface(mesh, surface_room_mm, paired.room_from_patient)
        final = surface.room_from_patient
    errors = fiducial_errors(final.matrix, paired.patient_lps_mm, paired.room_mm)
    check = check_accuracy(
        fiducial_errors_mm=errors,
        tre95_mm=tre95,
        fle_estimated=fle_mm is None,
        surface_residual_rms_mm=None if surface is None else surface.residual_rms_mm,
        surface_rejected_fraction=(
            None if surface is None else surface.n_rejected / len(surface.inliers)
        ),
        limits=limits,
    )
    return RegistrationReport(
        room_from_patient=final,
        paired=paired,
        surface=surface,
        fiducial_errors_mm=errors,
        fle_mm=fle,
        fle_estimated=fle_mm is None,
        targets_lps_mm=targets,
        expected_tre_mm=tre,
        tre95_mm=tre95,
        check=check,
    )
