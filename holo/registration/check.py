"""The threshold check: a registration worse than its limits is flagged, never silently
accepted.

The check only judges; the caller decides (the session shows the flag and its reasons to
everyone and applies the anchor only on the controlling participant's confirmation).
Every limit records where its number comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AccuracyCheck", "AccuracyLimits", "check_accuracy"]


@dataclass(frozen=True)
class AccuracyLimits:
    """The limits a registration is checked against (mm unless stated).

    Attributes
    ----------
    tre_mm
        Largest 95th-percentile TRE at any target (the bound a registration stays within
        95 % of the time, :func:`~holo.registration.accuracy.tre_percentile`; 1.6 to 3
        times the RMS expected TRE). 2 mm: the accuracy orthopaedic navigation is specified
        and validated to (about 2 mm and 2 degrees), and the margin that counts as
        acceptable for a pedicle screw (a cortical breach under 2 mm, Gertzbein & Robbins
        grades A-B). A hologram off by more than that can mislead where the navigation
        beside it would not. Held against the RMS instead, a setup that just passes has a
        third or more of its registrations over 2 mm at a target. With ``fle_mm`` given
        the bound depends on the setup alone (fiducials, their layout, the targets, the
        FLE) and says whether it is good enough; with the FLE estimated from the FRE it
        also follows this registration's FRE, which says nothing about its TRE (the two
        are independent), so give the FLE when it is known.
    fre_rms_mm
        Largest RMS FRE. 3 mm: FRE does not predict TRE (Fitzpatrick 2009), so this limit
        only catches mistakes (a landmark mistouched or two swapped, which put the FRE at
        many mm). With hand-touched anatomical landmarks (FLE up to 2 mm) 99 % of correct
        registrations have an RMS FRE under about 2.4 mm for any N (``FLE**2 / 3 *
        chi2_0.99(3N - 6) / N``), so 3 mm leaves them alone; a poor but honest registration
        is the TRE limit's to flag.
    fiducial_mm
        Largest single fiducial's FRE. 4 mm: the 99th percentile of one fiducial's error
        at 2 mm FLE (``sqrt(FLE**2 / 3 * chi2_0.99(3))`` = 3.9 mm); the message names the
        fiducial, so it can be touched again.
    surface_rms_mm
        Largest RMS residual of the surface refinement's inliers. 1 mm: points touched on
        bone sit within digitising noise (0.3-0.6 mm) plus the model's surface error
        (under one voxel, about 0.5 mm) of the mesh; more means the points are not on this
        surface (cartilage is 2-3 mm thick over a knee's bone) or the fit is poor.
    surface_rejected_fraction
        Largest fraction of surface points rejected as outliers. 0.3: when a third of the
        points do not fit, the fit to the rest is on a guess about which are good.
    min_fiducials
        Fewest fiducials when the FLE is estimated from the FRE: from 3 the estimate has 3
        degrees of freedom (a 90 % range of 0.1 to 2.6 times the true FLE squared), so
        the expected TRE means little. Given a known FLE, 3 are judged by TRE alone.
    """

    tre_mm: float = 2.0
    fre_rms_mm: float = 3.0
    fiducial_mm: float = 4.0
    surface_rms_mm: float = 1.0
    surface_rejected_fraction: float = 0.3
    min_fiducials: int = 4


@dataclass(frozen=True)
class AccuracyCheck:
    """The outcome: ``accepted`` when no limit is exceeded, else ``reasons`` (one line each,
    what is over which limit and what to do)."""

    accepted: bool
    reasons: tuple[str, ...]


def check_accuracy(
    *,
    fiducial_errors_mm: npt.ArrayLike,
    tre95_mm: npt.ArrayLike,
    fle_estimated: bool,
    surface_residual_rms_mm: float | None = None,
    surface_rejected_fraction: float | None = None,
    limits: AccuracyLimits | None = None,
) -> AccuracyCheck:
    """Check a registration's error measures against ``limits`` (default
    :class:`AccuracyLimits`).

    Parameters
    ----------
    fiducial_errors_mm
        Shape ``(N,)``: FRE per fiducial (mm).
    tre95_mm
        Shape ``(M,)``: the 95th-percentile TRE at the targets (mm,
        :func:`~holo.registration.accuracy.tre_percentile`).
    fle_estimated
        Whether the TRE was predicted from an FLE estimated from the FRE.
    surface_residual_rms_mm, surface_rejected_fraction
        The surface refinement's figures, when there was one.
    """
    lim = limits or AccuracyLimits()
    fre = np.asarray(fiducial_errors_mm, dtype=np.float64).reshape(-1)
    tre = np.asarray(tre95_mm, dtype=np.float64).reshape(-1)
    reasons: list[str] = []
    fre_rms = float(np.sqrt(np.mean(fre**2)))
    if fre_rms > lim.fre_rms_mm:
        reasons.append(
            f"RMS FRE {fre_rms:.2f} mm is over {lim.fre_rms_mm:g} mm: check that every "
            "landmark was touched in the right place and order"
        )
    worst = int(np.argmax(fre))
    if fre[worst] > lim.fiducial_mm:
        reasons.append(
            f"fiducial {worst} is {fre[worst]:.2f} mm off (limit {lim.fiducial_mm:g} mm): "
            "touch it again"
        )
    if len(tre) and float(tre.max()) > lim.tre_mm:
        reasons.append(
            f"TRE up to {float(tre.max()):.2f} mm (95th percentile) at target "
            f"{int(np.argmax(tre))} is over {lim.tre_mm:g} mm: add fiducials spread around "
            "the targets"
        )
    if fle_estimated and len(fre) < lim.min_fiducials:
        reasons.append(
            f"only {len(fre)} fiducials: the error estimate is unreliable below "
            f"{lim.min_fiducials}; add a fiducial"
        )
    if surface_residual_rms_mm is not None and surface_residual_rms_mm > lim.surface_rms_mm:
        reasons.append(
            f"surface residual {surface_residual_rms_mm:.2f} mm RMS is over "
            f"{lim.surface_rms_mm:g} mm: the points do not lie on this model's surface"
        )
    if (
        surface_rejected_fraction is not None
        and surface_rejected_fraction > lim.surface_rejected_fraction
    ):
        reasons.append(
            f"{surface_rejected_fraction:.0%} of the surface points were rejected as outliers "
            f"(limit {lim.surface_rejected_fraction:.0%}): collect them again on exposed bone"
        )
    return AccuracyCheck(accepted=not reasons, reasons=tuple(reasons))
