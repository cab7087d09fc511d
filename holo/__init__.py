"""holo: holographic imaging overlay service for mixed-reality orthopaedic surgery.

Reads DICOM CT and X-ray studies, turns them into hologram models and serves them to
mixed-reality headsets in shared, multi-site sessions. The names here are the public API.
"""

from holo.errors import HoloError, PipelineError, SeriesGeometryError, SessionError, StudyError
from holo.imaging import index_study, read_cine, read_radiograph, read_series, read_study
from holo.imaging.radiograph import Cine, Radiograph
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
    "index_study",
    "read_cine",
    "read_radiograph",
    "read_series",
    "read_study",
]
__version__ = "0.1.0"
