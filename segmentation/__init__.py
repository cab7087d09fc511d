"""Segmentation: a CT Volume in, a label map on the same grid out.

Nothing here imports the server, grpc or generated code. Presets (``bone``, ``skin``,
``soft_tissue``) are described, with the sources of their numbers, in
:mod:`segmentation.presets`; an external model (e.g. TotalSegmentator) plugs in through
:func:`segmentation.external.segment_external` with the same label-map contract.

``PRESETS`` costs nothing to import; :func:`segment` and :class:`LabelMap` load SimpleITK
when first used (the ``convert`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segmentation.presets import PRESET_NAMES, PRESETS

if TYPE_CHECKING:
    from segmentation.labelmap import LabelMap
    from segmentation.segmenter import segment

__all__ = ["PRESETS", "PRESET_NAMES", "LabelMap", "segment"]


def __getattr__(name: str) -> Any:
    if name == "segment":
        from holo.extras import need

        need("convert", "SimpleITK")
        from segmentation.segmenter import segment

        return segment
    if name == "LabelMap":
        from segmentation.labelmap import LabelMap

        return LabelMap
    raise AttributeError(f"module 'segmentation' has no attribute {name!r}")
