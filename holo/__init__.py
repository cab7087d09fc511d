"""holo: holographic imaging overlay service for mixed-reality orthopaedic surgery.

Reads DICOM CT and X-ray studies, turns them into hologram models and serves them to
mixed-reality headsets in shared, multi-site sessions. The names here are the public API;
importing :mod:`holo` costs nothing: each name loads its module when first used, so the
lean SDK (``pip install holo``) imports without the ``convert`` extra's libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holo.errors import (
        HoloError,
        PipelineError,
        SeriesGeometryError,
        SessionError,
        StudyError,
    )
    from holo.imaging import index_study, read_cine, read_radiograph, read_series, read_study
    from holo.imaging.radiograph import Cine, Radiograph
    from holo.pipeline import convert
    from holo.volume import Volume

__all__ = [
    "Cine",
    "HoloError",
    "PipelineError",
    "Radiograph",
    "SeriesGeometryError",
    "SessionError",
    "StudyError",
    "Volume",
    "convert",
    "index_study",
    "read_cine",
    "read_radiograph",
    "read_series",
    "read_study",
]
__version__ = "0.1.0"

#: Where each public name lives.
_HOMES = {
    "Cine": "holo.imaging.radiograph",
    "HoloError": "holo.errors",
    "PipelineError": "holo.errors",
    "Radiograph": "holo.imaging.radiograph",
    "SeriesGeometryError": "holo.errors",
    "SessionError": "holo.errors",
    "StudyError": "holo.errors",
    "Volume": "holo.volume",
    "convert": "holo.pipeline",
    "index_study": "holo.imaging",
    "read_cine": "holo.imaging",
    "read_radiograph": "holo.imaging",
    "read_series": "holo.imaging",
    "read_study": "holo.imaging",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'holo' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
