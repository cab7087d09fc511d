"""Paired-point rigid registration: landmarks on the model against the same landmarks
touched in the room, solved in closed form.

The least-squares rigid transform (Horn 1987, Arun et al. 1987, Umeyama 1991) is the
rotation that best aligns the centred point sets plus the translation between their
centroids. The rotation comes from SciPy's ``Rotation.align_vectors`` (Kabsch's SVD
solution), not written out here: it already carries the reflection guard (when the best
orthogonal fit would be a mirror, the smallest singular direction is flipped, so the result
is always a proper rotation). SciPy is in the ``convert`` extra with trimesh, which the
surface refinement needs anyway.

The fiducials a caller passes:

- ``patient_lps_mm``: landmarks on the model in patient LPS millimetres, the frame of the
  CT and of the mesh vertices inside the model's GLB (a point picked on the hologram, in
  the glTF model frame in metres, converts with :func:`holo.coords.lps_from_gltf`);
- ``room_mm``: the same landmarks, same order, touched in the room frame, in millimetres
  (:func:`holo.coords.room_mm_from_m` from a headset's metres).
"""

from __future__ import annotations

from holo.extras import need

need("convert", "scipy", feature="registration")

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from holo.registration.accuracy import estimate_fle, expected_tre, fiducial_errors
from holo.registration.points import check_pairs
from holo.registration.transform import RigidTransform

__all__ = ["PairedPointRegistration", "fit_rigid", "register_paired_points"]

FloatArray = npt.NDArray[np.float64]


def fit_rigid(source: FloatArray, target: FloatArray) -> RigidTransform:
    """The least-squares rigid transform taking ``source`` onto ``target`` (both ``(N, 3)``,
    mm, already checked): proper rotation, no scale. Also the step of the surface ICP."""
    source_centre = source.mean(axis=0)
    target_centre = target.mean(axis=0)
    # align_vectors(a, b) returns C minimising sum |a_i - C b_i|^2.
    rotation, _ = Rotation.align_vectors(target - target_centre, source - source_centre)
    r = rotation.as_matrix()
    return RigidTransform(r, target_centre - r @ source_centre)


@dataclass(frozen=True, eq=False)
class PairedPointRegistration:
    """The result of :func:`register_paired_points`.

    Attributes
    ----------
    room_from_patient
        Patient LPS mm -> room mm.
    patient_lps_mm, room_mm
        Shape ``(N, 3)``: the fiducials as given (checked copies).
    fiducial_errors_mm
        Shape ``(N,)``: FRE per fiducial, mm, in the order given.
    fre_rms_mm
        RMS of ``fiducial_errors_mm``.
    """

    room_from_patient: RigidTransform
    patient_lps_mm: FloatArray
    room_mm: FloatArray
    fiducial_errors_mm: FloatArray
    fre_rms_mm: float

    @property
    def n_fiducials(self) -> int:
        return len(self.patient_lps_mm)

    @property
    def fle_estimate_mm(self) -> float:
        """FLE estimated from this registration's FRE (``FRE * sqrt(N / (N - 2))``); see
        :mod:`holo.registration.accuracy` for how little 3 or 4 fiducials say."""
        return estimate_fle(self.fre_rms_mm, self.n_fiducials)

    def expected_tre_mm(
        self, targets_lps_mm: npt.ArrayLike, fle_mm: float | None = None
    ) -> FloatArray:
        """Expected TRE (mm) at targets (``(M, 3)``, patient LPS mm), Fitzpatrick's formula
        with ``fle_mm`` (default: :attr:`fle_estimate_mm`)."""
        fle = self.fle_estimate_mm if fle_mm is None else fle_mm
        return expected_tre(self.patient_lps_mm, targets_lps_mm, fle)


def register_paired_points(
    patient_lps_mm: npt.ArrayLike, room_mm: npt.ArrayLike
) -> PairedPointRegistration:
    """The closed-form least-squares rigid registration of paired fiducials.

    Parameters
    ----------
    patient_lps_mm
        Shape ``(N, 3)``, N >= 3: fiducials on the model, patient LPS mm.
    room_mm
        Shape ``(N, 3)``: the same fiducials in the same order, room frame mm.

    Returns
    -------
    PairedPointRegistration
        ``room_from_patient`` and the FRE per fiducial and RMS.

    Raises
    ------
    RegistrationError
        Fewer than 3 pairs, counts that differ, a non-finite coordinate, or fiducials
        within :data:`~holo.registration.points.MIN_SPREAD_MM` of a line (on either side).
    """
    patient, room = check_pairs("patient_lps_mm", patient_lps_mm, "room_mm", room_mm)
    transform = fit_rigid(patient, room)
    errors = fiducial_errors(transform.matrix, patient, room)
    return PairedPointRegistration(
        room_from_patient=transform,
        patient_lps_mm=patient,
        room_mm=room,
        fiducial_errors_mm=errors,
        fre_rms_mm=float(np.sqrt(np.mean(errors**2))),
    )
