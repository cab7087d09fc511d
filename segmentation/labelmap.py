"""The label map: what segmentation hands to meshing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from holo.volume import Volume

__all__ = ["LabelMap"]


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Integer labels on the grid of the volume they were computed from.

    Parameters
    ----------
    labels
        Shape ``(slice, row, col)``, uint8 or uint16; 0 is background.
    affine
        The source volume's 4x4 index -> LPS mm affine (same grid, same geometry).
    names
        Label value -> structure name (``{1: "bone_1", ...}``), ordered by label.
    source
        What made it: preset name and parameters, or the external command.
    """

    labels: npt.NDArray[np.integer[Any]]
    affine: npt.NDArray[np.float64]
    names: dict[int, str]
    source: dict[str, Any] = field(default_factory=dict)

    def as_volume(self) -> Volume:
        """The labels as a Volume (units ``"label"``), e.g. to write NIfTI for a viewer."""
        return Volume(array=self.labels, affine=self.affine, units="label", metadata={})

    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def counts(self) -> dict[int, int]:
        """Voxels per label (labels in ``names`` only)."""
        values, n = np.unique(self.labels, return_counts=True)
        found = dict(zip(values.tolist(), n.tolist(), strict=True))
        return {label: int(found.get(label, 0)) for label in self.names}
