"""Read CT and X-ray studies: DICOM folders, zips, file lists, and NIfTI/NRRD/MetaImage.

The entry points:

* :func:`index_study` lists the studies and series in the input without decoding pixels;
* :func:`read_series` returns a :class:`~holo.volume.Volume` (CT by default);
* :func:`read_radiograph` / :func:`read_cine` return a 2-D X-ray or a multi-frame run.

All raise :class:`~holo.errors.StudyError` (or its :class:`~holo.errors.SeriesGeometryError`)
with a one-line message naming the input and what to do.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "pydicom", "SimpleITK", feature="reading DICOM")

import logging
import os
from pathlib import Path

import SimpleITK as sitk

from holo.errors import StudyError
from holo.imaging.deid import deidentify_dataset, public_metadata
from holo.imaging.index import Instance, SeriesEntry, StudyIndex, index_files
from holo.imaging.radiograph import (
    DEFAULT_FALLBACK_SPACING_MM,
    Cine,
    Radiograph,
    radiograph_from_instance,
)
from holo.imaging.series import assemble_volume
from holo.imaging.sources import (
    Inputs,
    NamedFile,
    ZipLimits,
    expand_inputs,
    input_name,
    is_volume_file,
    iter_inputs,
)
from holo.volume import Volume

__all__ = [
    "Cine",
    "Inputs",
    "NamedFile",
    "Radiograph",
    "SeriesEntry",
    "StudyIndex",
    "deidentify_dataset",
    "index_study",
    "public_metadata",
    "read_cine",
    "read_radiograph",
    "read_series",
    "read_study",
]

logger = logging.getLogger(__name__)


def index_study(
    inputs: Inputs, *, limits: ZipLimits | None = None, scratch: Path | None = None
) -> StudyIndex:
    """List the series in ``inputs`` (folders recursively, zips, files) from headers only.

    A zip's members are inflated one at a time (in ``scratch``, default the system's
    temporary folder), within ``limits``; the index holds their headers, not their files.
    """
    files = iter_inputs(inputs, limits=limits, scratch=scratch)
    try:
        index = index_files(files, source=input_name(inputs))
    finally:
        files.close()
    if not index.series:
        raise StudyError(f"{input_name(inputs)}: {index.describe()}", path=_first(inputs))
    return index


def _first(inputs: Inputs) -> Path:
    first = inputs if isinstance(inputs, (str, os.PathLike, NamedFile)) else inputs[0]
    return first.path if isinstance(first, NamedFile) else Path(first)


def _read_volume_file(path: Path) -> Volume:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise StudyError(
            f"{path}: cannot read as NIfTI/NRRD/MetaImage ({first}); check that the file is "
            "complete",
            path=path,
        ) from err
    dims, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    if dims != 3 or components != 1:
        raise StudyError(
            f"{path}: a {dims}-D image with {components} component(s); holo reads 3-D "
            "scalar volumes",
            path=path,
        )
    volume = Volume.from_sitk(image, units="HU")
    return Volume(
        array=volume.array,
        affine=volume.affine,
        units="HU",
        metadata={},
        history=(f"read {path.name} with SimpleITK; no modality in the file, values taken as HU",),
    )


def _single_volume_file(inputs: Inputs) -> Path | None:
    """One NIfTI/NRRD/MetaImage file given by its path (SimpleITK picks the format from
    the file's suffix, so a file known by another name is not one)."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike, NamedFile)) else list(inputs)
    if len(items) == 1 and not isinstance(items[0], NamedFile) and is_volume_file(Path(items[0])):
        return Path(items[0])
    return None


def _volume_from(
    index: StudyIndex,
    series_uid: str | None,
    allow_gaps: bool,
    slice_spacing: float | None,
) -> Volume:
    if not index.series:
        raise StudyError(f"{index.source}: {index.describe()}")
    series = index.volume_series(series_uid)
    volume = assemble_volume(series, allow_gaps=allow_gaps, slice_spacing=slice_spacing)
    if index.skipped:
        logger.info("%s: %d non-image files skipped", index.source, len(index.skipped))
    return volume


def _xray_from(
    index: StudyIndex,
    sop_instance_uid: str | None,
    frame: int | None,
    fallback_spacing_mm: float,
) -> Radiograph:
    inst = _pick(_xray_instances(index), sop_instance_uid, index.source)
    if inst.frames > 1 and frame is None:
        raise StudyError(
            f"{inst.name}: a {inst.frames}-frame {inst.dataset.get('Modality', '')} cine, "
            "not a single radiograph; read it with read_cine() or choose a frame",
            path=inst.path,
        )
    if inst.frames == 1 and frame not in (None, 0):
        raise StudyError(
            f"{inst.name}: a single-frame radiograph has no frame {frame}", path=inst.path
        )
    image = radiograph_from_instance(inst, fallback_spacing_mm=fallback_spacing_mm)
    if isinstance(image, Cine):
        assert frame is not None
        if not 0 <= frame < len(image):
            raise StudyError(
                f"{inst.name}: frame {frame} does not exist; the cine has {len(image)} frames",
                path=inst.path,
            )
        return image.frame(frame)
    return image


def read_series(
    inputs: Inputs,
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    slice_spacing: float | None = None,
) -> Volume:
    """Read one cross-sectional series into a Volume in patient LPS millimetres.

    Parameters
    ----------
    inputs
        A folder (walked recursively), a ``.zip``, DICOM files, or one NIfTI/NRRD/MHA file.
    series_uid
        (0020,000E) of the series to read; default the CT series with the most images.
    allow_gaps
        Interpolate across missing slices instead of raising SeriesGeometryError.
    slice_spacing
        Spacing (mm) of the output grid when the series must be resampled (uneven steps,
        gantry tilt, gaps), or to resample a regular series.
    """
    volume_file = _single_volume_file(inputs)
    if volume_file is not None:
        return _read_volume_file(volume_file)
    with expand_inputs(inputs) as files:
        index = index_files(files, source=input_name(inputs))
        return _volume_from(index, series_uid, allow_gaps, slice_spacing)


def read_study(
    inputs: Inputs,
    *,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    frame: int | None = None,
    allow_gaps: bool = False,
    slice_spacing: float | None = None,
    fallback_spacing_mm: float = DEFAULT_FALLBACK_SPACING_MM,
) -> Volume | Radiograph:
    """Read what a study is, indexing it once: a CT volume if it has one, else an X-ray.

    ``series_uid`` asks for a volume; ``sop_instance_uid`` or ``frame`` for an X-ray.
    """
    volume_file = _single_volume_file(inputs)
    if volume_file is not None:
        return _read_volume_file(volume_file)
    with expand_inputs(inputs) as files:
        index = index_files(files, source=input_name(inputs))
        wants_xray = sop_instance_uid is not None or frame is not None
        has_volume = any(s.kind == "volume" for s in index.series)
        if series_uid is not None or (has_volume and not wants_xray):
            return _volume_from(index, series_uid, allow_gaps, slice_spacing)
        return _xray_from(index, sop_instance_uid, frame, fallback_spacing_mm)


def _xray_instances(index: StudyIndex) -> list[tuple[SeriesEntry, Instance]]:
    if not index.series:
        raise StudyError(f"{index.source}: {index.describe()}")
    found = index.radiograph_instances()
    if not found:
        raise StudyError(
            f"{index.source}: no X-ray image (CR, DX, XA, RF, MG) in the input "
            f"({index.describe()}); for CT use read_series / `holo read`"
        )
    return found


def _pick(
    found: list[tuple[SeriesEntry, Instance]], sop_instance_uid: str | None, source: str
) -> Instance:
    if sop_instance_uid is not None:
        for _, inst in found:
            if inst.sop_instance_uid == sop_instance_uid:
                return inst
        raise StudyError(
            f"{source}: no X-ray image with SOPInstanceUID {sop_instance_uid}; "
            "`holo studies PATH` lists them"
        )
    if len(found) > 1:
        raise StudyError(
            f"{source}: {len(found)} X-ray images; name one by SOPInstanceUID "
            "(`holo studies PATH` lists them) or point at a single file"
        )
    return found[0][1]


def read_radiograph(
    inputs: Inputs,
    *,
    sop_instance_uid: str | None = None,
    frame: int | None = None,
    fallback_spacing_mm: float = DEFAULT_FALLBACK_SPACING_MM,
) -> Radiograph:
    """Read one projection X-ray as a :class:`Radiograph`.

    Parameters
    ----------
    sop_instance_uid
        Which image, when the input holds several.
    frame
        For a multi-frame cine: which frame (0-based). Without it a cine is an error that
        points to :func:`read_cine`.
    fallback_spacing_mm
        Pixel size assumed when the file states none; reported as ``spacing_source ==
        "assumed"``.
    """
    with expand_inputs(inputs) as files:
        index = index_files(files, source=input_name(inputs))
        return _xray_from(index, sop_instance_uid, frame, fallback_spacing_mm)


def read_cine(
    inputs: Inputs,
    *,
    sop_instance_uid: str | None = None,
    fallback_spacing_mm: float = DEFAULT_FALLBACK_SPACING_MM,
) -> Cine:
    """Read a multi-frame X-ray run (XA/RF cine) as a :class:`Cine` of 2-D frames."""
    with expand_inputs(inputs) as files:
        index = index_files(files, source=input_name(inputs))
        inst = _pick(_xray_instances(index), sop_instance_uid, index.source)
        image = radiograph_from_instance(inst, fallback_spacing_mm=fallback_spacing_mm)
    if not isinstance(image, Cine):
        raise StudyError(
            f"{inst.name}: a single-frame radiograph, not a cine; use read_radiograph()",
            path=inst.path,
        )
    return image
