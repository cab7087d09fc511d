"""The error measures of a point-based rigid registration, in mm (Fitzpatrick's terms).

- **FLE**, fiducial localisation error: the error in finding a fiducial, the RMS length of
  its 3-D error vector (so an isotropic Gaussian error of sigma per axis has
  ``FLE = sqrt(3) * sigma``). With errors on both sides (landmarks picked on the CT,
  touched in the room), ``FLE**2 = FLE_patient**2 + FLE_room**2``.
- **FRE**, fiducial registration error: the distance between a fiducial's room position and
  its registered patient position, per fiducial and as RMS over the fiducials.
- **TRE**, target registration error: the same distance at a point that was *not* used to
  register, e.g. the planned screw entry, which is what the surgeon cares about.

The relations (Fitzpatrick, West & Maurer, "Predicting error in rigid-body point-based
registration", IEEE TMI 17(5), 1998; first order in FLE, isotropic, independent,
identically distributed FLE, equal weights):

- ``E[FRE_rms**2] = (1 - 2/N) * FLE**2``, so ``FLE**2 ~= FRE_rms**2 * N / (N - 2)``
  (:func:`estimate_fle`; it has only ``3N - 6`` degrees of freedom: from 3 fiducials the
  estimate is a chi-square with 3, and is often off by a factor of two);
- ``E[TRE**2(r)] = FLE**2 / N * (1 + 1/3 * sum_k d_k**2 / f_k**2)``, with ``d_k`` the
  distance of the target ``r`` from the k-th principal axis of the fiducial configuration
  and ``f_k`` the RMS distance of the fiducials from that axis (:func:`expected_tre`).

The expected TRE is an RMS over registrations; a bound that one registration stays within
95 % of the time is what a limit should be checked against (:func:`tre_percentile`). To
first order the TRE vector is Gaussian, so its length is close to Maxwell-distributed
(Fitzpatrick & West, "The distribution of target registration error in rigid-body
point-based registration", IEEE TMI 20(9), 2001): the 95th percentile is
``sqrt(chi2_0.95(3) / 3) = 1.61`` times the RMS. With the FLE estimated from the FRE the
estimate's own spread widens that, and since TRE and FRE are independent to first order
(Fitzpatrick 2009) the ratio follows Fisher's F: ``sqrt(F_0.95(3, 3N - 6))``, 3.05 times the
RMS for 3 fiducials, 2.18 for 4, 1.87 for 6, 1.73 for 10.

FRE says little about TRE for one registration (Fitzpatrick 2009: they are uncorrelated);
it detects gross mistakes (a swapped or mistouched landmark). The expected TRE is the
figure to judge a registration by.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "scipy", feature="registration")

import numpy as np
import numpy.typing as npt
from scipy import stats

from holo.registration.points import as_points, check_fiducials

__all__ = ["estimate_fle", "expected_fre", "expected_tre", "fiducial_errors", "tre_percentile"]

FloatArray = npt.NDArray[np.float64]


def fiducial_errors(
    room_from_patient: FloatArray, patient_lps_mm: npt.ArrayLike, room_mm: npt.ArrayLike
) -> FloatArray:
    """FRE per fiducial: ``|room_from_patient(x_i) - y_i|``.

    Parameters
    ----------
    room_from_patient
        Shape ``(4, 4)``, rigid, patient LPS mm -> room mm.
    patient_lps_mm, room_mm
        Shape ``(N, 3)``: the fiducials in the patient frame and in the room frame (mm).

    Returns
    -------
    numpy.ndarray
        Shape ``(N,)``, mm.
    """
    a = as_points("patient_lps_mm", patient_lps_mm)
    b = as_points("room_mm", room_mm)
    m = np.asarray(room_from_patient, dtype=np.float64)
    return np.asarray(np.linalg.norm(a @ m[:3, :3].T + m[:3, 3] - b, axis=1))


def estimate_fle(fre_rms_mm: float, n_fiducials: int) -> float:
    """FLE (mm) estimated from an observed RMS FRE: ``FRE * sqrt(N / (N - 2))``."""
    if n_fiducials < 3:
        raise ValueError(f"FLE needs at least 3 fiducials to estimate, got {n_fiducials}")
    return float(fre_rms_mm * np.sqrt(n_fiducials / (n_fiducials - 2)))


def expected_fre(fle_mm: float, n_fiducials: int) -> float:
    """RMS FRE (mm) to expect for a given FLE: ``sqrt(E[FRE**2]) = FLE * sqrt(1 - 2/N)``."""
    return float(fle_mm * np.sqrt(1.0 - 2.0 / n_fiducials))


def expected_tre(
    fiducials_lps_mm: npt.ArrayLike, targets_lps_mm: npt.ArrayLike, fle_mm: float
) -> FloatArray:
    """Expected (RMS) TRE at each target, by Fitzpatrick's formula.

    Parameters
    ----------
    fiducials_lps_mm
        Shape ``(N, 3)``, the fiducial configuration (patient LPS mm; any one frame works,
        as long as the targets are in the same).
    targets_lps_mm
        Shape ``(M, 3)`` or ``(3,)``, the points of interest, same frame.
    fle_mm
        FLE (mm): given (a tracker's and a pointer's specification) or from
        :func:`estimate_fle`.

    Returns
    -------
    numpy.ndarray
        Shape ``(M,)`` (or a 0-d array for one target): ``sqrt(E[TRE**2])`` in mm.
    """
    fiducials = check_fiducials("fiducials_lps_mm", fiducials_lps_mm)
    single = np.ndim(targets_lps_mm) == 1
    targets = as_points("targets_lps_mm", np.atleast_2d(np.asarray(targets_lps_mm)))
    if not np.isfinite(fle_mm) or fle_mm < 0:
        raise ValueError(f"fle_mm must be a finite length >= 0 in mm, got {fle_mm}")
    n = len(fiducials)
    centre = fiducials.mean(axis=0)
    centred = fiducials - centre
    _, s, axes = np.linalg.svd(centred, full_matrices=False)  # rows of axes: principal axes
    # f_k**2: mean squared distance of the fiducials from axis k = (sum of the others' s**2)/N.
    f2 = (np.sum(s**2) - s**2) / n
    rel = targets - centre
    along = rel @ axes.T  # (M, 3): components along each axis
    d2 = np.maximum(np.sum(rel**2, axis=1, keepdims=True) - along**2, 0.0)  # from each axis
    tre2 = fle_mm**2 / n * (1.0 + np.sum(d2 / f2, axis=1) / 3.0)
    out = np.sqrt(tre2)
    return np.asarray(out[0]) if single else np.asarray(out)


def tre_percentile(
    expected_tre_mm: npt.ArrayLike,
    n_fiducials: int,
    *,
    fle_estimated: bool,
    quantile: float = 0.95,
) -> FloatArray:
    """The TRE (mm) one registration stays within with probability ``quantile``.

    Parameters
    ----------
    expected_tre_mm
        RMS expected TRE at each target (:func:`expected_tre`), any shape.
    n_fiducials
        N, the number of fiducials registered.
    fle_estimated
        True when the FLE behind ``expected_tre_mm`` was estimated from the same
        registration's FRE (then the bound follows F(3, 3N - 6)); False when it was given
        (Maxwell: chi-square with 3 degrees of freedom).
    quantile
        The probability, in (0, 1).

    Returns
    -------
    numpy.ndarray
        ``expected_tre_mm`` times the factor, same shape. First order and isotropic: where
        the configuration makes the TRE strongly anisotropic (few fiducials, far targets)
        the true exceedance can be up to about twice ``1 - quantile``.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if fle_estimated:
        factor = np.sqrt(stats.f.ppf(quantile, 3, 3 * n_fiducials - 6))
    else:
        factor = np.sqrt(stats.chi2.ppf(quantile, 3) / 3.0)
    return np.asarray(np.asarray(expected_tre_mm, dtype=np.float64) * factor)
