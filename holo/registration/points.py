"""What a registration accepts: finite ``(N, 3)`` arrays of millimetres, in pairs, spread
out enough to fix a rotation.

Every check raises :class:`~holo.errors.RegistrationError` with one line naming the argument
and what to do, so the error reaches a headset or the CLI as it is.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from holo.errors import RegistrationError

__all__ = ["MIN_PAIRS", "MIN_SPREAD_MM", "as_points", "check_fiducials", "check_pairs", "spread_mm"]

#: A rigid transform has 6 degrees of freedom; 3 non-collinear point pairs give 9 equations.
MIN_PAIRS = 3

#: The fiducials must lie at least this far (RMS, mm) from their best-fit line. Points
#: closer to a line than the localisation error leave the rotation about it to that error:
#: a tracked pointer's FLE is about 0.3-1 mm (optical trackers: 0.25-0.35 mm RMS;
#: anatomical landmarks touched by hand: 1-2 mm), so below 1 mm the solution is noise.
#: Configurations that pass but are still poor (a thin sliver, a small cluster) are caught
#: by the expected TRE (holo.registration.accuracy) and the threshold check, not here.
#: It also catches points given in metres (a 10 cm spread becomes 0.1).
MIN_SPREAD_MM = 1.0


def as_points(name: str, points: npt.ArrayLike, *, min_count: int = 1) -> npt.NDArray[np.float64]:
    """``points`` as a float64 ``(N, 3)`` array, checked: shape, count, finite values.

    Parameters
    ----------
    name
        The argument's name, for the message.
    points
        Shape ``(N, 3)``: x, y, z in mm, in whatever single frame the caller states.
    min_count
        Fewest points accepted.
    """
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RegistrationError(
            f"{name}: expected an (N, 3) array of numbers (mm), could not read it: {err}",
            input_name=name,
        ) from err
    if array.ndim != 2 or array.shape[1] != 3:
        raise RegistrationError(
            f"{name}: expected an (N, 3) array of points in mm, got shape {array.shape}",
            input_name=name,
        )
    if len(array) < min_count:
        raise RegistrationError(
            f"{name}: {len(array)} point(s) given; a rigid registration needs at least "
            f"{min_count} (4 or more, spread widely, for a useful error estimate)",
            input_name=name,
        )
    bad = np.flatnonzero(~np.all(np.isfinite(array), axis=1))
    if len(bad):
        raise RegistrationError(
            f"{name}: point {int(bad[0])} is not finite ({array[bad[0]].tolist()}); every "
            "coordinate must be a finite number in mm",
            input_name=name,
        )
    return array


def spread_mm(points: npt.NDArray[np.float64]) -> float:
    """RMS distance (mm) of ``points`` (``(N, 3)``) from their best-fit line.

    The best-fit line runs through the centroid along the first principal axis, so this is
    ``sqrt((s2**2 + s3**2) / N)`` with ``s`` the singular values of the centred points.
    """
    centred = points - points.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return float(np.sqrt(np.sum(s[1:] ** 2) / len(points)))


def check_fiducials(name: str, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``points`` checked as fiducials: at least :data:`MIN_PAIRS`, finite, not in a row."""
    array = as_points(name, points, min_count=MIN_PAIRS)
    spread = spread_mm(array)
    if spread < MIN_SPREAD_MM:
        raise RegistrationError(
            f"{name}: the {len(array)} fiducials lie within {spread:.3g} mm (RMS) of one line, "
            f"below {MIN_SPREAD_MM:g} mm, so the rotation about that line is undetermined; "
            "pick landmarks that are not in a row (and give them in mm, not metres)",
            input_name=name,
        )
    return array


def check_pairs(
    patient_name: str,
    patient: npt.ArrayLike,
    room_name: str,
    room: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Both sides of a paired-point registration, checked and of equal length."""
    a = as_points(patient_name, patient)
    b = as_points(room_name, room)
    if len(a) != len(b):
        raise RegistrationError(
            f"{patient_name} has {len(a)} points but {room_name} has {len(b)}: give each "
            "landmark once on both sides, in the same order",
            input_name=room_name,
        )
    return check_fiducials(patient_name, a), check_fiducials(room_name, b)
