"""Projection X-ray (CR, DX, XA, RF, MG): a 2-D image with a physical size.

A radiograph becomes a flat image panel in the hologram scene, so it must know its true
size in millimetres and how to display it (bone bright). Display follows the DICOM
grayscale pipeline (PS3.4 N.2.1 / PS3.3 C.11): stored values -> Modality LUT (rescale or
LUT) -> VOI (VOI LUT, or window centre/width with its VOI LUT Function) -> MONOCHROME1
inversion. A multi-frame XA/RF cine stays a time sequence of 2-D frames (:class:`Cine`):
it is never stacked into a volume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi

from holo.errors import StudyError
from holo.imaging.index import STUDY_KEYWORDS, Instance, header_values
from holo.imaging.pixels import decode_frames

__all__ = ["DEFAULT_FALLBACK_SPACING_MM", "Cine", "Radiograph", "radiograph_from_instance"]

logger = logging.getLogger(__name__)

#: Pixel size assumed when a radiograph states none (or zero). 0.2 mm is the pitch of
#: common CR plates and DX detectors (0.1-0.2 mm); it makes a 1760-pixel image 352 mm,
#: the usual 14-inch cassette. Always reported as ``spacing_source == "assumed"``.
DEFAULT_FALLBACK_SPACING_MM = 0.2

_METADATA_KEYWORDS = (
    *STUDY_KEYWORDS,
    "SOPInstanceUID",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "PatientOrientation",
    "PixelSpacingCalibrationType",
)


@dataclass(frozen=True, eq=False, kw_only=True)
class _Projection:
    """What every projection X-ray carries besides its pixels.

    Parameters
    ----------
    pixel_spacing
        ``(between rows, between columns)`` in mm, where the image is measured (see
        ``spacing_source``).
    spacing_source
        Which attribute gave ``pixel_spacing``: ``"PixelSpacing"``,
        ``"ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"``,
        ``"ImagerPixelSpacing"``, ``"NominalScannedPixelSpacing"`` or ``"assumed"``.
    window
        ``(centre, width)`` in Modality LUT units used for ``display``.
    window_source
        ``"WindowCenter/WindowWidth"``, ``"VOILUTSequence"`` or ``"percentiles"``.
    photometric
        (0028,0004) of the source: ``"MONOCHROME1"`` images were inverted for display.
    metadata
        Header attributes for the server side (may identify the patient: public views go
        through :func:`holo.imaging.deid.public_metadata`).
    """

    pixel_spacing: tuple[float, float]
    spacing_source: str
    window: tuple[float, float]
    window_source: str
    photometric: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False, kw_only=True)
class Radiograph(_Projection):
    """One 2-D X-ray image.

    ``pixels``: shape ``(rows, cols)``, float32, values after the Modality LUT (row 0 is the
    top of the image as stored). ``display``: same shape, float32 in ``[0, 1]`` after VOI
    and MONOCHROME1 inversion, so 1 is white and bone is bright. The other fields are
    described on the base class.
    """

    pixels: npt.NDArray[np.float32]
    display: npt.NDArray[np.float32]

    @property
    def size_mm(self) -> tuple[float, float]:
        """Physical ``(height, width)`` of the image in mm."""
        rows, cols = self.pixels.shape
        return (rows * self.pixel_spacing[0], cols * self.pixel_spacing[1])

    def to_uint8(self) -> npt.NDArray[np.uint8]:
        """The display image as 8-bit greyscale, shape ``(rows, cols)``, bone bright."""
        return np.asarray(np.rint(self.display * 255.0), dtype=np.uint8)


@dataclass(frozen=True, eq=False, kw_only=True)
class Cine(_Projection):
    """A multi-frame X-ray run (XA/RF): frames in time, never a volume.

    ``frames`` and ``display`` have shape ``(frames, rows, cols)``; ``frame_time_ms`` is the
    nominal time between frames ((0018,1063) Frame Time) or None.
    """

    frames: npt.NDArray[np.float32]
    display: npt.NDArray[np.float32]
    frame_time_ms: float | None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def frame(self, index: int) -> Radiograph:
        """Frame ``index`` (0-based) as a :class:`Radiograph`."""
        common = {f.name: getattr(self, f.name) for f in fields(_Projection)}
        common["metadata"] = {**self.metadata, "FrameIndex": index}
        return Radiograph(pixels=self.frames[index], display=self.display[index], **common)


def _positive_pair(value: Any) -> tuple[float, float] | None:
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        return None
    return (pair[0], pair[1])


def physical_spacing(ds: Dataset, fallback_mm: float) -> tuple[tuple[float, float], str]:
    """Pixel spacing in mm and the attribute it came from (PS3.3 10.7.1.3).

    (0028,0030) Pixel Spacing, when present and positive, is calibrated to the patient;
    (0018,1164) Imager Pixel Spacing is at the detector, so it is divided by (0018,1114)
    Estimated Radiographic Magnification Factor when that is known.
    """
    pixel = _positive_pair(ds.get("PixelSpacing"))
    if pixel:
        return pixel, "PixelSpacing"
    imager = _positive_pair(ds.get("ImagerPixelSpacing"))
    if imager:
        try:
            magnification = float(ds.get("EstimatedRadiographicMagnificationFactor") or 0)
        except (TypeError, ValueError):
            magnification = 0.0
        if magnification > 0:
            return (
                (imager[0] / magnification, imager[1] / magnification),
                "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
            )
        return imager, "ImagerPixelSpacing"
    nominal = _positive_pair(ds.get("NominalScannedPixelSpacing"))
    if nominal:
        return nominal, "NominalScannedPixelSpacing"
    return (fallback_mm, fallback_mm), "assumed"


def _first_number(value: Any) -> float | None:
    """First value of a DS/IS element that may be multi-valued (e.g. several windows)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if len(value) else None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _window(
    ds: Dataset, values: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], tuple[float, float], str]:
    """Apply the VOI transform; returns display values in [0, 1] before inversion."""
    if "VOILUTSequence" in ds and "WindowCenter" not in ds:
        item = ds.VOILUTSequence[0]
        out = apply_voi(values, ds, index=0).astype(np.float32)
        # Normalise by the LUT's own output range: files often declare 16 bits and use 12.
        lut = np.asarray(item.LUTData, dtype=np.float32).ravel()
        lut_lo, lut_hi = float(lut.min()), float(lut.max())
        first = float(item.LUTDescriptor[1])
        window = (first + len(lut) / 2, float(len(lut)))  # the input range the LUT covers
        scaled = (out - lut_lo) / max(lut_hi - lut_lo, 1.0)
        return np.clip(scaled, 0, 1), window, "VOILUTSequence"
    centre, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if centre is not None and width is not None and width >= 1:
        source = "WindowCenter/WindowWidth"
    else:
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
        centre, width = (lo + hi) / 2, max(hi - lo, 1.0)
        source = "percentiles"
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
    x = values.astype(np.float32)
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    elif function == "LINEAR_EXACT":
        out = (x - centre) / width + 0.5
    else:  # LINEAR, PS3.3 C.11.2.1.2.1
        out = (x - (centre - 0.5)) / max(width - 1, 1) + 0.5
    return np.clip(out, 0, 1).astype(np.float32), (centre, width), source


def radiograph_from_instance(
    inst: Instance, *, fallback_spacing_mm: float = DEFAULT_FALLBACK_SPACING_MM
) -> Radiograph | Cine:
    """Decode one X-ray instance: a :class:`Radiograph`, or a :class:`Cine` if multi-frame."""
    ds = inst.dataset
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise StudyError(
            f"{inst.name}: {photometric} X-ray images are not supported; holo reads greyscale "
            "(MONOCHROME1/2) radiographs, export the original rather than a screenshot",
            path=inst.path,
        )
    stored = decode_frames(inst)
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    display, window, window_source = _window(ds, values)
    if photometric == "MONOCHROME1":  # high values are dark: invert so bone is bright
        display = 1.0 - display
    spacing, spacing_source = physical_spacing(ds, fallback_spacing_mm)
    if spacing_source == "assumed":
        logger.warning(
            "%s: no usable PixelSpacing or ImagerPixelSpacing; assuming %.3g mm pixels, so "
            "the panel's size is approximate",
            inst.name,
            fallback_spacing_mm,
        )
    common: dict[str, Any] = {
        "pixel_spacing": spacing,
        "spacing_source": spacing_source,
        "window": window,
        "window_source": window_source,
        "photometric": photometric,
        "metadata": header_values(ds, _METADATA_KEYWORDS),
    }
    if inst.frames > 1:
        frame_time = _first_number(ds.get("FrameTime"))
        return Cine(frames=values, display=display, frame_time_ms=frame_time, **common)
    return Radiograph(pixels=values[0], display=display[0], **common)
