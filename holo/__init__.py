"""holo: holographic imaging overlay service for mixed-reality orthopaedic surgery."""

from holo.errors import HoloError, PipelineError, SeriesGeometryError, SessionError, StudyError

__all__ = [
    "HoloError",
    "PipelineError",
    "SeriesGeometryError",
    "SessionError",
    "StudyError",
]
__version__ = "0.1.0"
