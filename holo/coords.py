"""Every coordinate-frame conversion in holo lives here.

Frames (see ``ARCHITECTURE.md``):

* **Patient frame**: DICOM LPS (+x patient Left, +y Posterior, +z Superior), millimetres.
* **Index frame** of a :class:`~holo.volume.Volume`: ``(slice, row, col)`` integer indices.
* **Model frame (glTF)**: right-handed, +Y up, metres. Patient Left -> +X, Superior -> +Y,
  Anterior -> +Z, so ``(x, y, z)_gltf = (x_L, z_S, -y_P) / 1000``. This is a proper rotation
  (determinant +1), so no triangle winding flips between the two frames.
* **Navigation frame**: RAS (+x patient Right, +y Anterior, +z Superior), millimetres, as
  3D Slicer and OpenIGTLink use it: LPS with x and y negated, a half turn about Superior
  (determinant +1, so winding is kept here too). So ``(x, y, z)_gltf = (-x_R, z_S, y_A) / 1000``
  and back ``(x, y, z)_ras = 1000 * (-x, z, y)_gltf``. The room frame (glTF convention) meets
  RAS through the same rule, which is how the OpenIGTLink gateway (:mod:`holo.igtl`) shows
  anchors to 3D Slicer and takes tracker poses from it.

* **Room frame**: where a session places a model; glTF convention (right-handed, +Y up),
  metres. A model's ``anchor_pose`` maps its model frame into the room frame.
* **Registration** (:mod:`holo.registration`) works in millimetres: patient LPS mm (the
  frame of the CT, of the mesh vertices inside a GLB and of landmarks picked on the CT)
  against the room frame scaled to mm. Its result, ``room_from_patient`` (a rigid 4x4 in
  mm), becomes an anchor with :func:`anchor_from_registration`.

Poses are ``position`` plus a unit quaternion ``(x, y, z, w)`` (glTF's order);
:func:`matrix_from_pose` and :func:`pose_from_matrix` are the one translation to 4x4 matrices.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "GLTF_FROM_LPS",
    "GLTF_FROM_RAS",
    "LPS_FROM_GLTF",
    "MM_PER_M",
    "RAS_FROM_GLTF",
    "RAS_FROM_LPS",
    "affine_from_geometry",
    "anchor_from_registration",
    "gltf_from_lps",
    "gltf_from_ras",
    "gltf_transform_from_ras",
    "lps_from_gltf",
    "lps_from_index",
    "matrix_from_pose",
    "pose_from_matrix",
    "ras_from_gltf",
    "ras_from_lps",
    "ras_transform_from_gltf",
    "registration_from_anchor",
    "room_m_from_mm",
    "room_mm_from_m",
]

#: Millimetres per metre: the room and glTF frames are in metres, registration in mm.
MM_PER_M = 1000.0

#: 4x4 homogeneous transform from patient LPS millimetres to glTF metres.
GLTF_FROM_LPS: npt.NDArray[np.float64] = np.array(
    [
        [1e-3, 0.0, 0.0, 0.0],  # glTF +X = patient Left
        [0.0, 0.0, 1e-3, 0.0],  # glTF +Y (up) = patient Superior
        [0.0, -1e-3, 0.0, 0.0],  # glTF +Z = patient Anterior = -Posterior
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: 4x4 homogeneous transform from glTF metres back to patient LPS millimetres.
LPS_FROM_GLTF: npt.NDArray[np.float64] = np.linalg.inv(GLTF_FROM_LPS).astype(np.float64)


def _apply(matrix: npt.NDArray[np.float64], points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 3)
    out = flat @ matrix[:3, :3].T + matrix[:3, 3]
    return out.reshape(pts.shape)


def gltf_from_lps(points_lps_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Map points from patient LPS millimetres to the glTF model frame (metres).

    Parameters
    ----------
    points_lps_mm
        Shape ``(3,)`` or ``(N, 3)``: x (Left), y (Posterior), z (Superior), in mm.

    Returns
    -------
    numpy.ndarray
        Same shape, glTF ``(x, y, z)`` in metres.
    """
    return _apply(GLTF_FROM_LPS, points_lps_mm)


def lps_from_gltf(points_gltf_m: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Inverse of :func:`gltf_from_lps`: glTF metres to patient LPS millimetres."""
    return _apply(LPS_FROM_GLTF, points_gltf_m)


#: 4x4 from patient LPS to RAS (both millimetres): x and y negated. Its own inverse.
RAS_FROM_LPS: npt.NDArray[np.float64] = np.diag([-1.0, -1.0, 1.0, 1.0])
#: 4x4 from RAS millimetres to glTF metres (through LPS: one rule, not a second one).
GLTF_FROM_RAS: npt.NDArray[np.float64] = GLTF_FROM_LPS @ RAS_FROM_LPS
#: 4x4 from glTF metres to RAS millimetres.
RAS_FROM_GLTF: npt.NDArray[np.float64] = RAS_FROM_LPS @ LPS_FROM_GLTF


def ras_from_lps(points_lps_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Map points (or directions: the map is linear) from LPS to RAS, shape ``(3,)`` or
    ``(N, 3)``, millimetres; x and y change sign. Its own inverse."""
    return _apply(RAS_FROM_LPS, points_lps_mm)


def ras_from_gltf(points_gltf_m: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Map points, shape ``(3,)`` or ``(N, 3)``, from the glTF frame (metres; a model's or
    the room's) to RAS millimetres."""
    return _apply(RAS_FROM_GLTF, points_gltf_m)


def gltf_from_ras(points_ras_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Inverse of :func:`ras_from_gltf`: RAS millimetres to glTF metres."""
    return _apply(GLTF_FROM_RAS, points_ras_mm)


def ras_transform_from_gltf(matrix_gltf: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A rigid transform between two glTF frames (4x4, metres; e.g. an anchor pose, model ->
    room) as the same transform between their RAS counterparts (4x4, millimetres):
    ``RAS_FROM_GLTF @ matrix @ GLTF_FROM_RAS``. Its rotation block is the glTF rotation seen
    in RAS axes; its translation is in mm."""
    return RAS_FROM_GLTF @ np.asarray(matrix_gltf, dtype=np.float64) @ GLTF_FROM_RAS


def gltf_transform_from_ras(matrix_ras: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Inverse of :func:`ras_transform_from_gltf`: a 4x4 in RAS mm (e.g. an OpenIGTLink
    TRANSFORM, tool -> RAS world) as the same transform between glTF frames, in metres."""
    return GLTF_FROM_RAS @ np.asarray(matrix_ras, dtype=np.float64) @ RAS_FROM_GLTF


def matrix_from_pose(
    position: npt.ArrayLike, rotation_xyzw: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """The 4x4 of a pose: ``position`` (3,) and quaternion ``(x, y, z, w)`` (normalised here;
    it must be non-zero). The matrix acts on column vectors: ``M @ [p, 1]``."""
    x, y, z, w = np.asarray(rotation_xyzw, dtype=np.float64) / np.linalg.norm(rotation_xyzw)
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    matrix[:3, 3] = np.asarray(position, dtype=np.float64)
    return matrix


def pose_from_matrix(
    matrix: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(position, rotation_xyzw)`` of a rigid 4x4 (inverse of :func:`matrix_from_pose`).

    The rotation block is first made orthonormal (its nearest rotation, by SVD), so a
    matrix sent as float32, or with a little scale, still gives a unit quaternion; the
    quaternion has ``w >= 0``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    u, _, vt = np.linalg.svd(m[:3, :3])
    r = u @ vt
    if np.linalg.det(r) < 0:  # a mirror is no rotation: take the nearest proper one
        u[:, -1] *= -1
        r = u @ vt
    # Shepperd's method: divide by the largest of the four candidates (stable everywhere).
    trace = np.trace(r)
    candidates = [trace, r[0, 0], r[1, 1], r[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif k == 1:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif k == 2:
        s = 2.0 * np.sqrt(1.0 - r[0, 0] + r[1, 1] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 - r[0, 0] - r[1, 1] + r[2, 2])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    if quat[3] < 0:
        quat = -quat
    return m[:3, 3].copy(), quat


def affine_from_geometry(
    origin: npt.ArrayLike,
    row_direction: npt.ArrayLike,
    col_direction: npt.ArrayLike,
    slice_direction: npt.ArrayLike,
    spacing: tuple[float, float, float],
) -> npt.NDArray[np.float64]:
    """Build the 4x4 index -> LPS affine of a volume.

    Parameters
    ----------
    origin
        LPS mm position of the centre of voxel ``(0, 0, 0)`` (ImagePositionPatient of the
        first slice).
    row_direction
        Unit LPS vector along a row, i.e. the direction of increasing column index
        (first triplet of ImageOrientationPatient).
    col_direction
        Unit LPS vector down a column, i.e. the direction of increasing row index
        (second triplet of ImageOrientationPatient).
    slice_direction
        Unit LPS vector of increasing slice index.
    spacing
        ``(slice, row, col)`` spacing in mm: distance between slices, between rows
        (PixelSpacing[0]) and between columns (PixelSpacing[1]).

    Returns
    -------
    numpy.ndarray
        Shape ``(4, 4)``; ``affine @ [slice, row, col, 1]`` is the LPS mm position.
    """
    dz, dy, dx = spacing
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(slice_direction, dtype=np.float64) * dz
    affine[:3, 1] = np.asarray(col_direction, dtype=np.float64) * dy
    affine[:3, 2] = np.asarray(row_direction, dtype=np.float64) * dx
    affine[:3, 3] = np.asarray(origin, dtype=np.float64)
    return affine


def lps_from_index(
    affine: npt.NDArray[np.float64], index: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Map ``(slice, row, col)`` indices (shape ``(3,)`` or ``(N, 3)``) to LPS mm."""
    return _apply(affine, index)


def room_mm_from_m(points_room_m: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Room-frame points from metres (as headsets and poses give them) to millimetres (as
    :mod:`holo.registration` takes them); shape ``(3,)`` or ``(N, 3)``, axes unchanged."""
    return np.asarray(points_room_m, dtype=np.float64) * MM_PER_M


def room_m_from_mm(points_room_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Inverse of :func:`room_mm_from_m`."""
    return np.asarray(points_room_mm, dtype=np.float64) / MM_PER_M


def _rigid(matrix: npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"{what} must be a finite 4x4 matrix, got shape {m.shape}")
    r = m[:3, :3]
    # 1e-6: a rotation read from float32 (a GLB, a message) is orthonormal to ~1e-7.
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise ValueError(f"{what} must be rigid (a proper rotation and a translation, no scale)")
    return m


def anchor_from_registration(room_mm_from_lps_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A model's anchor (model frame -> room frame, metres) from a registration.

    Parameters
    ----------
    room_mm_from_lps_mm
        Shape ``(4, 4)``, rigid: patient LPS mm -> room frame mm (what
        :mod:`holo.registration` returns as ``room_from_patient``).

    Returns
    -------
    numpy.ndarray
        Shape ``(4, 4)``, rigid: glTF model frame (metres) -> room frame (metres), the
        matrix of ``anchor_pose``. A model-frame point ``p`` lands at
        ``room_mm_from_lps_mm @ lps_from_gltf(p) / 1000``.
    """
    registration = _rigid(room_mm_from_lps_mm, "room_mm_from_lps_mm")
    to_m = np.diag([1 / MM_PER_M, 1 / MM_PER_M, 1 / MM_PER_M, 1.0])
    # glTF m -> LPS mm (x1000 and the axis swap) -> room mm -> room m (/1000): the scales
    # cancel in the rotation, so the anchor is rigid again.
    return np.asarray(to_m @ registration @ LPS_FROM_GLTF, dtype=np.float64)


def registration_from_anchor(anchor: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Inverse of :func:`anchor_from_registration`: a model's anchor matrix (glTF m ->
    room m) as patient LPS mm -> room mm, e.g. a hand placement as the start of a
    surface registration."""
    placed = _rigid(anchor, "anchor")
    to_mm = np.diag([MM_PER_M, MM_PER_M, MM_PER_M, 1.0])
    return np.asarray(to_mm @ placed @ GLTF_FROM_LPS, dtype=np.float64)
