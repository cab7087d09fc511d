"""A rigid transform in millimetres, and its form as a model's anchor pose.

``x_to = rotation @ x_from + translation``: a proper rotation (determinant +1, never a
mirror) and a translation in mm. Registration results are ``room_from_patient``: patient
LPS mm -> room frame mm. The anchor pose a session stores (glTF model frame -> room frame,
metres, quaternion x, y, z, w) is derived through :mod:`holo.coords`, which owns the frame
conversions; this module only adds the quaternion.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "scipy", feature="registration")

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from holo.coords import anchor_from_registration, registration_from_anchor

__all__ = ["RigidTransform"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """``x_to = rotation @ x_from + translation``.

    Attributes
    ----------
    rotation
        Shape ``(3, 3)``, proper and orthonormal.
    translation
        Shape ``(3,)``, mm, in the ``to`` frame.
    """

    rotation: FloatArray
    translation: FloatArray

    @classmethod
    def identity(cls) -> RigidTransform:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix: npt.ArrayLike) -> RigidTransform:
        """From a ``(4, 4)`` homogeneous matrix (mm); ``ValueError`` unless it is rigid."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"expected a finite 4x4 matrix, got shape {m.shape}")
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
            raise ValueError("the matrix is not rigid (a proper rotation and a translation)")
        return cls(r.copy(), m[:3, 3].copy())

    @classmethod
    def from_rotvec(cls, rotvec_rad: npt.ArrayLike, translation: npt.ArrayLike) -> RigidTransform:
        """From a rotation vector (axis times angle, radians) and a translation (mm)."""
        rotation = Rotation.from_rotvec(np.asarray(rotvec_rad, dtype=np.float64)).as_matrix()
        return cls(rotation, np.asarray(translation, dtype=np.float64).reshape(3))

    @property
    def matrix(self) -> FloatArray:
        """Shape ``(4, 4)`` homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def apply(self, points: npt.ArrayLike) -> FloatArray:
        """Map points of shape ``(3,)`` or ``(N, 3)`` (mm); same shape back."""
        pts = np.asarray(points, dtype=np.float64)
        return np.asarray(pts @ self.rotation.T + self.translation)

    def inverse(self) -> RigidTransform:
        return RigidTransform(self.rotation.T.copy(), -self.rotation.T @ self.translation)

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        """``(a @ b).apply(x) == a.apply(b.apply(x))``."""
        return RigidTransform(
            self.rotation @ other.rotation, self.rotation @ other.translation + self.translation
        )

    @property
    def angle_deg(self) -> float:
        """The rotation's angle about its axis, degrees in [0, 180]."""
        return float(np.degrees(Rotation.from_matrix(self.rotation).magnitude()))

    def distances_mm(self, other: RigidTransform, points: npt.ArrayLike) -> FloatArray:
        """How far apart the two transforms put each point: ``(N,)`` mm (e.g. the TRE of
        an estimate against the truth at target points)."""
        return np.asarray(np.linalg.norm(self.apply(points) - other.apply(points), axis=-1))

    def to_anchor_pose(
        self,
    ) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
        """This transform, read as ``room_from_patient`` (mm), as a model's anchor pose:
        ``(position, rotation)``, glTF model frame -> room frame, position in metres,
        rotation a unit quaternion (x, y, z, w), as :class:`holo.session.Pose` holds it."""
        anchor = anchor_from_registration(self.matrix)
        x, y, z, w = Rotation.from_matrix(anchor[:3, :3]).as_quat()  # scalar last
        px, py, pz = anchor[:3, 3]
        return (float(px), float(py), float(pz)), (float(x), float(y), float(z), float(w))

    @classmethod
    def from_anchor_pose(cls, position: npt.ArrayLike, rotation: npt.ArrayLike) -> RigidTransform:
        """Inverse of :meth:`to_anchor_pose`: an anchor pose (metres, quaternion x, y, z, w)
        as ``room_from_patient`` in mm, e.g. a hand placement to start a surface
        registration from."""
        anchor = np.eye(4)
        anchor[:3, :3] = Rotation.from_quat(np.asarray(rotation, dtype=np.float64)).as_matrix()
        anchor[:3, 3] = np.asarray(position, dtype=np.float64)
        return cls.from_matrix(registration_from_anchor(anchor))
