"""The Volume: a 3-D image in the patient frame, the hand-off between imaging and meshing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from holo.extras import need

need("convert", "SimpleITK", feature="holo.volume")

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

__all__ = ["Volume"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image with its exact placement in the patient.

    Parameters
    ----------
    array
        Voxel values, shape ``(slice, row, col)``. For CT the values are Hounsfield units
        (``units == "HU"``); int16 when the data allow it, float32 otherwise.
    affine
        Shape ``(4, 4)``: maps ``[slice, row, col, 1]`` to patient LPS millimetres (the
        centre of that voxel). Columns 0..2 are the slice, row and column steps; they are
        orthogonal for every Volume that holo builds (gantry tilt and uneven slices are
        resampled away by :func:`holo.imaging.read_series`).
    units
        ``"HU"`` for CT, otherwise what the modality's rescale gives (``RescaleType``) or
        ``"unspecified"``.
    metadata
        Study and series attributes kept for the server side. It may hold patient identity:
        anything leaving the server goes through :func:`holo.imaging.deid.public_metadata`.
    history
        What reading did to the data beyond decoding (resampling, dropped duplicates), one
        line each, for reports.
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    units: str = "HU"
    metadata: dict[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D (slice, row, col), got {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)``."""
        s, r, c = self.array.shape
        return (int(s), int(r), int(c))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(slice, row, col)`` spacing in mm (lengths of the affine's columns)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def origin(self) -> npt.NDArray[np.float64]:
        """LPS mm position of the centre of voxel ``(0, 0, 0)``."""
        return self.affine[:3, 3].copy()

    @property
    def directions(self) -> npt.NDArray[np.float64]:
        """Shape ``(3, 3)``: unit LPS vectors of increasing slice, row and col index, as columns."""
        return self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def frame_of_reference_uid(self) -> str | None:
        """(0020,0052) FrameOfReferenceUID of the source series, if it had one."""
        value = self.metadata.get("FrameOfReferenceUID")
        return str(value) if value else None

    def index_to_lps(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(slice, row, col)`` indices, shape ``(3,)`` or ``(N, 3)``, to LPS mm."""
        idx = np.asarray(index, dtype=np.float64)
        flat = idx.reshape(-1, 3)
        out = flat @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out.reshape(idx.shape)

    def lps_to_index(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map LPS mm points, shape ``(3,)`` or ``(N, 3)``, to fractional ``(slice, row, col)``."""
        pts = np.asarray(points, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        flat = pts.reshape(-1, 3)
        out = flat @ inv[:3, :3].T + inv[:3, 3]
        return out.reshape(pts.shape)

    def to_sitk(self) -> sitk.Image:
        """Convert to a SimpleITK image in the same physical space.

        SimpleITK indexes ``(x, y, z)`` = ``(col, row, slice)``, so the numpy array is passed
        as is (``GetImageFromArray`` reverses the axes) and the direction matrix columns are
        reordered from holo's ``(slice, row, col)`` to ITK's ``(col, row, slice)``. ITK's
        physical space is LPS, like DICOM, so no sign flips are needed.
        """
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        sz, sy, sx = self.spacing
        image.SetSpacing((sx, sy, sz))
        image.SetOrigin(tuple(float(v) for v in self.origin))
        d = self.directions
        itk_direction = np.stack(
            [d[:, 2], d[:, 1], d[:, 0]], axis=1
        )  # columns: x(col), y(row), z(slice)
        image.SetDirection(tuple(float(v) for v in itk_direction.ravel()))
        return image

    @classmethod
    def from_sitk(
        cls, image: sitk.Image, *, units: str = "HU", metadata: dict[str, Any] | None = None
    ) -> Volume:
        """Build a Volume from a 3-D SimpleITK image (inverse of :meth:`to_sitk`)."""
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
        array = sitk.GetArrayFromImage(image)  # (z, y, x) = (slice, row, col)
        sx, sy, sz = image.GetSpacing()
        d = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)  # columns x, y, z
        affine = np.eye(4)
        affine[:3, 0] = d[:, 2] * sz
        affine[:3, 1] = d[:, 1] * sy
        affine[:3, 2] = d[:, 0] * sx
        affine[:3, 3] = image.GetOrigin()
        return cls(array=array, affine=affine, units=units, metadata=dict(metadata or {}))
