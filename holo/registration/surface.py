"""Surface refinement: points collected on the exposed bone, matched to the model's mesh by
iterative closest points (ICP) with outlier rejection.

Starts from a paired-point registration (or a hand placement) and refines it. Each
iteration finds each collected point's closest point on the mesh's triangles (trimesh's
``nearest.on_surface``: exact to the triangles, through an R-tree), drops the outliers,
and moves the points to minimise their distances to the tangent planes at those closest
points (point-to-plane ICP, Chen & Medioni 1992: one linear least-squares solve of a small
rotation and a translation). trimesh's own ``registration.icp`` is not used: it keeps every
point, so one touch on soft tissue or a retractor pulls the whole fit, and its
point-to-point steps slide slowly along smooth bone (on the sample knee, 200 to 400
iterations to settle to 0.1 mm, where point-to-plane takes under 10).

**Outliers.** Two stages. First the closest half of the points only (least trimmed
squares: robust up to half the points bad, but blind to which of the rest are good), until
it settles; then, from there, a point is kept when its distance to the surface is at most
``median + k * 1.4826 * MAD`` of this iteration's distances (1.4826 * MAD estimates a
standard deviation robustly; k = 3 by default), and never rejected when within
``min_cutoff_mm`` (1 mm: the scale of digitising noise and of a CT model's own surface
error, about one voxel, so a converged, clean fit does not shed good points by chance).
That cutoff is at least the median, so at most half the points are ever dropped (the MAD's
breakdown point): when more than half are bad, no robust rule can tell which half.

**Sliding.** A surface patch that is a plane, a cylinder or a sphere leaves some motion
unconstrained (along the shaft of a long bone, say). The step solve ignores directions
constrained less than 1e-6 of the best one (they keep the starting registration's value),
and :attr:`SurfaceRefinement.constraint` reports the weakest direction's share, so a caller
can tell a patch that pins the bone from one that lets it slide.

Frames: the mesh in patient LPS mm (the model's full-detail mesh as stored in its GLB,
:func:`holo.export.meshes.full_detail_meshes`; pass a 100k-triangle LOD to save time on a
large skull, at the cost of its decimation error), the points in room mm. Surface
refinement has no closed-form error prediction: report its residual, and keep the
paired-point TRE as the prediction.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "trimesh", "rtree", "scipy", feature="surface registration")

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import trimesh
from scipy.spatial.transform import Rotation

from holo.errors import RegistrationError
from holo.registration.points import as_points, spread_mm
from holo.registration.transform import RigidTransform

__all__ = ["MIN_SURFACE_POINTS", "SurfaceRefinement", "refine_on_surface"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Twice the 3 points a rigid fit needs, since up to half may be rejected as outliers.
MIN_SURFACE_POINTS = 6

#: 1.4826 * MAD is a consistent estimate of a Gaussian's standard deviation.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, eq=False)
class SurfaceRefinement:
    """The result of :func:`refine_on_surface`.

    Attributes
    ----------
    room_from_patient
        The refined transform, patient LPS mm -> room mm.
    residuals_mm
        Shape ``(P,)``: each collected point's distance to the mesh under the refined
        transform, mm, in the order given (outliers included).
    inliers
        Shape ``(P,)``, bool: the points within the outlier cutoff under the refined
        transform (at convergence, the points the last fit used).
    residual_rms_mm
        RMS of the inliers' residuals.
    cutoff_mm
        The outlier cutoff under the refined transform (mm).
    constraint
        How firmly the inliers pin each of the six rigid motions, the weakest against the
        strongest (singular values of the point-to-plane Jacobian, rotations scaled by the
        points' RMS radius so that both are in mm): near 1 the patch pins every motion,
        near 0 it lets the bone slide or turn in some direction and the refinement kept
        the starting registration's value there.
    iterations
        ICP iterations run.
    converged
        True when the last step moved the points less than the tolerance (False: the
        iteration limit was reached; the result is the last iterate).
    """

    room_from_patient: RigidTransform
    residuals_mm: FloatArray
    inliers: npt.NDArray[np.bool_]
    residual_rms_mm: float
    cutoff_mm: float
    constraint: float
    iterations: int
    converged: bool

    @property
    def n_used(self) -> int:
        return int(np.count_nonzero(self.inliers))

    @property
    def n_rejected(self) -> int:
        return int(len(self.inliers) - self.n_used)


def _inliers(
    distances: FloatArray, k: float, min_cutoff_mm: float
) -> tuple[npt.NDArray[np.bool_], float]:
    median = float(np.median(distances))
    mad = float(np.median(np.abs(distances - median)))
    cutoff = max(median + k * _MAD_TO_SIGMA * mad, min_cutoff_mm)
    return distances <= cutoff, cutoff


def _plane_step(
    moved: FloatArray, closest: FloatArray, normals: FloatArray
) -> tuple[RigidTransform, float]:
    """The small rigid motion (patient frame) that best moves ``moved`` onto the tangent
    planes at ``closest`` (linearised: rotation vector w, translation t, residual
    ``(p - q) . n + w . (p x n) + t . n``), and the constraint figure."""
    centre = moved.mean(axis=0)
    arm = moved - centre
    radius = max(float(np.sqrt(np.mean(np.sum(arm**2, axis=1)))), 1e-9)
    residual = np.einsum("ij,ij->i", moved - closest, normals)
    # Unknowns (w * radius, t): both halves then move the points by mm, so their singular
    # values compare.
    jacobian = np.hstack([np.cross(arm, normals) / radius, normals])
    solution, _, _, singular = np.linalg.lstsq(jacobian, -residual, rcond=1e-6)
    rotation = Rotation.from_rotvec(solution[:3] / radius).as_matrix()
    step = RigidTransform(rotation, centre - rotation @ centre + solution[3:])
    constraint = float(singular[-1] / singular[0]) if len(singular) == 6 else 0.0
    return step, constraint


@dataclass(frozen=True, eq=False)
class _Run:
    patient_from_room: RigidTransform
    iterations: int
    converged: bool
    constraint: float


def _iterate(
    mesh: trimesh.Trimesh,
    points: FloatArray,
    patient_from_room: RigidTransform,
    select: Callable[[FloatArray], npt.NDArray[np.bool_]],
    max_iterations: int,
    tolerance_mm: float,
) -> _Run:
    """Point-to-plane ICP steps with the points ``select`` keeps, until they stop moving."""
    moved = patient_from_room.apply(points)
    constraint = 0.0
    last_rms = np.inf
    last_keep: npt.NDArray[np.bool_] | None = None
    for iteration in range(1, max_iterations + 1):
        closest, distances, faces = mesh.nearest.on_surface(moved)
        distances = np.asarray(distances, dtype=np.float64)
        keep = select(distances)
        rms = float(np.sqrt(np.mean(distances[keep] ** 2)))
        # The same points kept and no progress: done. (A point whose closest point sits on
        # an edge between two faces can make the linearised steps cycle by micrometres, so
        # the step size alone may never fall below the tolerance.)
        if (
            last_keep is not None
            and np.array_equal(keep, last_keep)
            and last_rms - rms < tolerance_mm
        ):
            return _Run(patient_from_room, iteration, True, constraint)
        last_rms, last_keep = rms, keep
        step, constraint = _plane_step(
            moved[keep], np.asarray(closest)[keep], np.asarray(mesh.face_normals)[faces[keep]]
        )
        patient_from_room = step @ patient_from_room
        stepped = patient_from_room.apply(points)
        moved_by = float(np.sqrt(np.mean(np.sum((stepped - moved) ** 2, axis=1))))
        moved = stepped
        if moved_by < tolerance_mm:
            return _Run(patient_from_room, iteration, True, constraint)
    return _Run(patient_from_room, max_iterations, False, constraint)


def refine_on_surface(
    mesh: trimesh.Trimesh,
    surface_room_mm: npt.ArrayLike,
    initial: RigidTransform,
    *,
    outlier_k: float = 3.0,
    min_cutoff_mm: float = 1.0,
    max_iterations: int = 50,
    tolerance_mm: float = 1e-4,
) -> SurfaceRefinement:
    """Refine ``room_from_patient`` by ICP of surface points to the model's mesh.

    Parameters
    ----------
    mesh
        The model's bone surface, vertices in patient LPS mm.
    surface_room_mm
        Shape ``(P, 3)``, P >= :data:`MIN_SURFACE_POINTS`: points touched on the bone
        surface, room frame mm.
    initial
        ``room_from_patient`` to start from (a paired-point registration); ICP finds the
        nearest local optimum, so it must be within a few mm and degrees.
    outlier_k
        Outlier cutoff in robust standard deviations above the median distance.
    min_cutoff_mm
        Distances at or below this are never outliers.
    max_iterations
        Iteration limit of each of the two stages (the closest half, then the MAD rule).
    tolerance_mm
        Converged when an iteration moves the points by less than this (RMS, mm).

    Raises
    ------
    RegistrationError
        Too few points, non-finite ones, points (nearly) in a row, or an empty mesh.
    """
    points = as_points("surface_room_mm", surface_room_mm, min_count=MIN_SURFACE_POINTS)
    spread = spread_mm(points)
    if spread < 1.0:
        raise RegistrationError(
            f"surface_room_mm: the {len(points)} surface points lie within {spread:.3g} mm "
            "(RMS) of one line; collect points over an area of the bone (in mm, not metres)",
            input_name="surface_room_mm",
        )
    if len(mesh.faces) == 0 or not np.all(np.isfinite(mesh.vertices)):
        raise RegistrationError(
            "mesh: the model's surface has no triangles or non-finite vertices; pass the "
            "bone's mesh in patient LPS mm",
            input_name="mesh",
        )
    # Stage 1, the closest half of the points only (least trimmed squares): from a start
    # some mm off, inliers are that far from the surface too and the MAD rule, judging
    # from the same spread, lets outliers in; on the sample knee with 30 % of points lifted
    # 3-15 mm, 1 fit in 40 settled 5-7 mm off that way. Stage 2, from there, the MAD rule:
    # every point that fits, for the final fit.
    half = _iterate(
        mesh, points, initial.inverse(), lambda d: d <= np.median(d), max_iterations, tolerance_mm
    )
    final = _iterate(
        mesh,
        points,
        half.patient_from_room,
        lambda d: _inliers(d, outlier_k, min_cutoff_mm)[0],
        max_iterations,
        tolerance_mm,
    )
    patient_from_room = final.patient_from_room
    moved = patient_from_room.apply(points)
    _, distances, _ = mesh.nearest.on_surface(moved)
    residuals = np.asarray(distances, dtype=np.float64)
    keep, cutoff = _inliers(residuals, outlier_k, min_cutoff_mm)
    if not final.converged:
        logger.info("surface ICP stopped after %d iterations without converging", final.iterations)
    return SurfaceRefinement(
        room_from_patient=patient_from_room.inverse(),
        residuals_mm=residuals,
        inliers=keep,
        residual_rms_mm=float(np.sqrt(np.mean(residuals[keep] ** 2))),
        cutoff_mm=cutoff,
        constraint=final.constraint,
        iterations=half.iterations + final.iterations,
        converged=final.converged,
    )
