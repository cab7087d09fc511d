"""Registration against analytic truth: fiducials and surface points simulated with a known
rigid transform and localisation noise of known size, in mm.

Used by tests/test_registration.py (the statistical bounds) and benchmarks/registration.py
(the accuracy tables). The noise model is Fitzpatrick's: every localised point is off by
an isotropic Gaussian vector with ``sigma = FLE / sqrt(3)`` per axis, so the RMS length of
the error vector is the FLE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trimesh
from scipy.spatial.transform import Rotation

from holo.imaging import read_series
from holo.pipeline import structure_mesh
from holo.registration import RigidTransform, expected_tre, register_paired_points
from holo.testing.accuracy import Capsule
from segmentation import segment

__all__ = [
    "PairedTrials",
    "bone_meshes",
    "capsule_patch",
    "localise",
    "mesh_patch",
    "paired_trials",
    "random_transform",
    "spread_points",
    "touch_surface",
]

FloatArray = npt.NDArray[np.float64]


def bone_meshes(folder: str | Path) -> list[trimesh.Trimesh]:
    """The bone preset's full-detail meshes of a CT series (patient LPS mm), as the mesh
    stage of ``holo convert`` makes them, largest first."""
    volume = read_series(folder)
    labels = segment(volume, "bone")
    meshes = [structure_mesh(volume, labels, label) for label in labels.names]
    return sorted(meshes, key=lambda m: -len(m.faces))


def spread_points(vertices: FloatArray, n: int, rng: np.random.Generator) -> FloatArray:
    """``n`` of ``vertices`` (``(V, 3)``) spread out as a surgeon spreads fiducials: each the
    farthest from those already chosen, from a random first one."""
    chosen = [int(rng.integers(len(vertices)))]
    nearest = np.linalg.norm(vertices - vertices[chosen[0]], axis=1)
    for _ in range(n - 1):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.linalg.norm(vertices - vertices[chosen[-1]], axis=1))
    return np.asarray(vertices[chosen], dtype=np.float64)


def random_transform(rng: np.random.Generator, translation_mm: float = 1000.0) -> RigidTransform:
    """A uniformly random rotation and a translation uniform in +-``translation_mm``."""
    rotation = Rotation.random(None, rng).as_matrix()  # positional: random_state before 1.15
    return RigidTransform(rotation, rng.uniform(-translation_mm, translation_mm, 3))


def localise(points: FloatArray, fle_mm: float, rng: np.random.Generator) -> FloatArray:
    """``points`` as localised with an FLE of ``fle_mm`` (isotropic Gaussian, RMS length)."""
    return points + rng.normal(scale=fle_mm / np.sqrt(3.0), size=points.shape)


@dataclass(frozen=True, eq=False)
class PairedTrials:
    """Paired-point registrations of one fiducial configuration, repeated.

    Attributes
    ----------
    fre_rms_mm
        Shape ``(T,)``: RMS FRE of each trial.
    fle_estimate_mm
        Shape ``(T,)``: FLE estimated from each trial's FRE.
    tre_mm
        Shape ``(T, M)``: each trial's true TRE at each target (against the known transform).
    expected_tre_mm
        Shape ``(M,)``: Fitzpatrick's prediction with the true FLE.
    predicted_tre_mm
        Shape ``(T, M)``: the prediction each trial reports (FLE estimated from its FRE).
    predicted_tre95_mm
        Shape ``(T, M)``: the 95 % bound each trial reports (same FLE).
    flagged
        Shape ``(T,)``: whether the default threshold check flagged the trial (FLE
        estimated from its FRE, as when none is given).
    flagged_given_fle
        Shape ``(T,)``: the same with the true FLE given (``fle_mm=``).
    """

    fre_rms_mm: FloatArray
    fle_estimate_mm: FloatArray
    tre_mm: FloatArray
    expected_tre_mm: FloatArray
    predicted_tre_mm: FloatArray
    predicted_tre95_mm: FloatArray
    flagged: npt.NDArray[np.bool_]
    flagged_given_fle: npt.NDArray[np.bool_]


def paired_trials(
    fiducials_lps_mm: FloatArray,
    targets_lps_mm: FloatArray,
    fle_mm: float,
    trials: int,
    rng: np.random.Generator,
) -> PairedTrials:
    """``trials`` registrations of the fiducials: each with a new random transform and new
    localisation noise (FLE ``fle_mm``) on the room side."""
    from holo.registration import check_accuracy, tre_percentile

    n = len(fiducials_lps_mm)
    fre, fle, tre, predicted, bound, flagged, flagged_given = [], [], [], [], [], [], []
    expected = expected_tre(fiducials_lps_mm, targets_lps_mm, fle_mm)
    given_bound = tre_percentile(expected, n, fle_estimated=False)
    for _ in range(trials):
        truth = random_transform(rng)
        room = localise(truth.apply(fiducials_lps_mm), fle_mm, rng)
        result = register_paired_points(fiducials_lps_mm, room)
        fre.append(result.fre_rms_mm)
        fle.append(result.fle_estimate_mm)
        tre.append(result.room_from_patient.distances_mm(truth, targets_lps_mm))
        predicted.append(result.expected_tre_mm(targets_lps_mm))
        bound.append(tre_percentile(predicted[-1], n, fle_estimated=True))
        check = check_accuracy(
            fiducial_errors_mm=result.fiducial_errors_mm,
            tre95_mm=bound[-1],
            fle_estimated=True,
        )
        flagged.append(not check.accepted)
        given = check_accuracy(
            fiducial_errors_mm=result.fiducial_errors_mm,
            tre95_mm=given_bound,
            fle_estimated=False,
        )
        flagged_given.append(not given.accepted)
    return PairedTrials(
        fre_rms_mm=np.asarray(fre),
        fle_estimate_mm=np.asarray(fle),
        tre_mm=np.asarray(tre),
        expected_tre_mm=expected,
        predicted_tre_mm=np.asarray(predicted),
        predicted_tre95_mm=np.asarray(bound),
        flagged=np.asarray(flagged),
        flagged_given_fle=np.asarray(flagged_given),
    )


def mesh_patch(
    mesh: trimesh.Trimesh,
    n: int,
    rng: np.random.Generator,
    facing: npt.ArrayLike,
    min_cos: float = 0.3,
) -> tuple[FloatArray, FloatArray]:
    """``n`` points spread by area over the part of ``mesh`` facing ``facing`` (a unit
    vector, LPS: the exposed side), and their outward normals, both ``(n, 3)``."""
    direction = np.asarray(facing, dtype=np.float64)
    exposed = np.flatnonzero(mesh.face_normals @ direction >= min_cos)
    area = mesh.area_faces[exposed]
    faces = rng.choice(exposed, size=n, p=area / area.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    corners = mesh.triangles[faces]
    points = corners[:, 0] + u[:, None] * (corners[:, 1] - corners[:, 0])
    points += v[:, None] * (corners[:, 2] - corners[:, 0])
    return points, np.asarray(mesh.face_normals[faces], dtype=np.float64)


def capsule_patch(
    capsule: Capsule,
    n: int,
    rng: np.random.Generator,
    facing: npt.ArrayLike,
    min_cos: float = 0.3,
) -> tuple[FloatArray, FloatArray]:
    """As :func:`mesh_patch`, on an analytic capsule's exact surface."""
    direction = np.asarray(facing, dtype=np.float64)
    a = np.asarray(capsule.start, dtype=np.float64)
    d = np.asarray(capsule.end, dtype=np.float64) - a
    points: list[FloatArray] = []
    normals: list[FloatArray] = []
    while sum(len(p) for p in points) < n:
        p = capsule.surface_points(4 * n, rng)
        s = np.clip(((p - a) @ d) / float(d @ d), 0.0, 1.0)
        normal = (p - (a + s[:, None] * d)) / capsule.radius
        keep = normal @ direction >= min_cos
        points.append(p[keep])
        normals.append(normal[keep])
    return np.concatenate(points)[:n], np.concatenate(normals)[:n]


def touch_surface(
    points: FloatArray,
    normals: FloatArray,
    rng: np.random.Generator,
    *,
    noise_mm: float,
    outlier_fraction: float,
    outlier_mm: tuple[float, float] = (3.0, 15.0),
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Surface points as collected: localisation noise (``noise_mm`` RMS, isotropic) on
    all, and a random ``outlier_fraction`` of them lifted off the surface along the normal
    by ``outlier_mm`` (uniform; soft tissue, a retractor). Returns the points and which are
    outliers."""
    touched = localise(points, noise_mm, rng)
    outliers = rng.random(len(points)) < outlier_fraction
    lift = rng.uniform(*outlier_mm, size=int(outliers.sum()))
    touched[outliers] += normals[outliers] * lift[:, None]
    return touched, outliers
