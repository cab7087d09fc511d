"""Stack the slices of a cross-sectional series into a Volume with exact geometry.

Every 2-D image (a file, or a frame of an enhanced multi-frame file) becomes a
:class:`SliceRecord` carrying its plane: position, orientation, pixel spacing, rescale.
Stacking then works on records only, so classic and enhanced objects take the same path:

1. all planes must share size, orientation and pixel spacing (else SeriesGeometryError);
2. planes are sorted by their distance along the slice normal, never by file name or
   InstanceNumber (those only break ties);
3. duplicated positions keep one image (the lowest InstanceNumber) and log a warning;
4. steps much larger than the slice thickness are gaps: an error naming the gap in mm,
   unless the caller allows interpolating across them;
5. uneven steps or planes that slide sideways as they stack (gantry tilt) are resampled
   onto an orthogonal, evenly spaced grid, so anatomy keeps its true shape.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from holo.coords import affine_from_geometry
from holo.errors import SeriesGeometryError, StudyError, quote_id
from holo.imaging.index import STUDY_KEYWORDS, Instance, SeriesEntry, header_values
from holo.imaging.pixels import decode_frames
from holo.volume import Volume

__all__ = ["SliceRecord", "assemble_volume", "slice_records"]

logger = logging.getLogger(__name__)

#: Two planes closer than this along the normal are the same position (mm).
DUPLICATE_TOLERANCE_MM = 0.01
#: Steps that differ by less than this (or 1 % of the step) are the same (mm; scanners
#: write ~1e-3 mm round-off, tables ~0.03 mm jitter).
STEP_TOLERANCE_MM = 0.02
#: A step more than this many times the expected step is a gap (missing slices).
GAP_FACTOR = 1.5
#: Orientation cosines that differ by less than this are the same orientation.
ORIENTATION_TOLERANCE = 1e-3
#: Upper bound on slices created by resampling, to refuse absurd spacing requests.
MAX_RESAMPLED_SLICES = 4096

# Header attributes kept on the Volume for the server side; public views go through
# holo.imaging.deid, which removes or replaces the identifying ones.
_METADATA_KEYWORDS = (
    *STUDY_KEYWORDS,
    "FrameOfReferenceUID",
    "PatientPosition",
    "KVP",
    "ConvolutionKernel",
    "SliceThickness",
    "GantryDetectorTilt",
    "ContrastBolusAgent",
)


@dataclass(frozen=True, eq=False)
class SliceRecord:
    """The plane of one 2-D image in the patient (LPS mm).

    ``row_direction`` runs along a row (increasing column index), ``col_direction`` down a
    column (increasing row index), as in (0020,0037) ImageOrientationPatient.
    ``pixel_spacing`` is ``(between rows, between columns)`` as in (0028,0030).
    """

    instance: Instance
    frame: int
    position: npt.NDArray[np.float64]
    row_direction: npt.NDArray[np.float64]
    col_direction: npt.NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    thickness: float | None
    slope: float
    intercept: float
    rows: int
    cols: int


def _floats(value: Any, n: int, what: str, inst: Instance) -> npt.NDArray[np.float64]:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SeriesGeometryError(
            f"{inst.name}: {what} is {value!r}, not {n} numbers; the header is damaged",
            path=inst.path,
        ) from err
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise SeriesGeometryError(
            f"{inst.name}: {what} is {value!r}, expected {n} finite numbers; the header is damaged",
            path=inst.path,
        )
    return arr


def _item(ds: Dataset | None, sequence: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(sequence)
    return seq[0] if seq else None


def _find(per_frame: Dataset | None, shared: Dataset | None, sequence: str, keyword: str) -> Any:
    for group in (per_frame, shared):
        item = _item(group, sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _optional_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def slice_records(inst: Instance) -> list[SliceRecord]:
    """Describe every frame of an instance as a plane in the patient.

    Classic images read (0020,0032), (0020,0037), (0028,0030) and the rescale from the top
    level; enhanced multi-frame images read them per frame from the Per-Frame Functional
    Groups, falling back to the Shared Functional Groups.
    """
    ds = inst.dataset
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows <= 0 or cols <= 0:
        raise SeriesGeometryError(
            f"{inst.name}: image has {rows}x{cols} pixels; the header is damaged", path=inst.path
        )
    per_frame_groups = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame_groups:
        shared = _item(ds, "SharedFunctionalGroupsSequence")
        out = []
        for f, per_frame in enumerate(per_frame_groups):
            ipp = _find(per_frame, shared, "PlanePositionSequence", "ImagePositionPatient")
            iop = _find(per_frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _find(per_frame, shared, "PixelMeasuresSequence", "PixelSpacing")
            thick = _find(per_frame, shared, "PixelMeasuresSequence", "SliceThickness")
            slope = _find(per_frame, shared, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _find(per_frame, shared, "PixelValueTransformationSequence", "RescaleIntercept")
            out.append(_record(inst, f, ipp, iop, spacing, thick, slope, icpt, rows, cols))
        return out
    if inst.frames > 1:
        raise SeriesGeometryError(
            f"{inst.name}: {inst.frames} frames but no per-frame geometry (no Per-Frame "
            "Functional Groups), so the frames cannot be placed; export the series as "
            "single-frame images or as Enhanced CT",
            path=inst.path,
        )
    return [
        _record(
            inst,
            0,
            ds.get("ImagePositionPatient"),
            ds.get("ImageOrientationPatient"),
            ds.get("PixelSpacing"),
            ds.get("SliceThickness"),
            ds.get("RescaleSlope"),
            ds.get("RescaleIntercept"),
            rows,
            cols,
        )
    ]


def _record(
    inst: Instance,
    frame: int,
    ipp: Any,
    iop: Any,
    spacing: Any,
    thickness: Any,
    slope: Any,
    intercept: Any,
    rows: int,
    cols: int,
) -> SliceRecord:
    where = f" frame {frame + 1}" if inst.frames > 1 else ""
    for value, tag in (
        (ipp, "(0020,0032) Image Position (Patient)"),
        (iop, "(0020,0037) Image Orientation (Patient)"),
        (spacing, "(0028,0030) Pixel Spacing"),
    ):
        if value is None:
            raise SeriesGeometryError(
                f"{inst.name}{where}: has no {tag}, so the slice cannot be placed in the "
                "patient; re-export the series with its geometry",
                path=inst.path,
            )
    position = _floats(ipp, 3, "ImagePositionPatient", inst)
    orientation = _floats(iop, 6, "ImageOrientationPatient", inst)
    row_dir, col_dir = orientation[:3], orientation[3:]
    if not (
        abs(np.linalg.norm(row_dir) - 1) < 0.01
        and abs(np.linalg.norm(col_dir) - 1) < 0.01
        and abs(float(row_dir @ col_dir)) < 0.01
    ):
        raise SeriesGeometryError(
            f"{inst.name}{where}: ImageOrientationPatient {list(orientation)} is not two "
            "orthogonal unit vectors; the header is damaged",
            path=inst.path,
        )
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    ps = _floats(spacing, 2, "PixelSpacing", inst)
    if np.any(ps <= 0):
        raise SeriesGeometryError(
            f"{inst.name}{where}: (0028,0030) Pixel Spacing is {list(ps)}; a CT slice needs "
            "positive spacing, re-export the series",
            path=inst.path,
        )
    slope_f = _rescale(slope, 1.0, "(0028,1053) Rescale Slope", inst, where)
    intercept_f = _rescale(intercept, 0.0, "(0028,1052) Rescale Intercept", inst, where)
    return SliceRecord(
        instance=inst,
        frame=frame,
        position=position,
        row_direction=row_dir,
        col_direction=col_dir,
        pixel_spacing=(float(ps[0]), float(ps[1])),
        thickness=_optional_float(thickness),
        slope=slope_f,
        intercept=intercept_f,
        rows=rows,
        cols=cols,
    )


def _rescale(value: Any, default: float, tag: str, inst: Instance, where: str) -> float:
    """A rescale value as a finite float (``default`` when absent)."""
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise StudyError(
            f"{inst.name}{where}: {tag} is {quote_id(str(value), limit=32)}, not a finite "
            "number; the header is damaged, re-export the series",
            path=inst.path,
        )
    return out


def _check_consistent(records: Sequence[SliceRecord], series_uid: str) -> None:
    sizes = Counter((r.rows, r.cols) for r in records)
    if len(sizes) > 1:
        desc = ", ".join(f"{n} of {rr}x{cc}" for (rr, cc), n in sizes.most_common())
        raise SeriesGeometryError(
            f"series {series_uid} mixes image sizes ({desc}); choose one stack with "
            "--series or re-export it",
            series_uid=series_uid,
        )
    ref = records[0]
    orientation = np.array([np.r_[r.row_direction, r.col_direction] for r in records])
    off = np.abs(orientation - orientation[0]).max(axis=1) > ORIENTATION_TOLERANCE
    if off.any():
        r = records[int(np.argmax(off))]
        raise SeriesGeometryError(
            f"series {series_uid} mixes orientations: {ref.instance.short_name} is "
            f"{np.round(orientation[0], 4).tolist()} but {r.instance.short_name} is "
            f"{np.round(np.r_[r.row_direction, r.col_direction], 4).tolist()}; "
            "it holds more than one stack (e.g. a localizer), pick the images of one",
            series_uid=series_uid,
        )
    spacing = np.array([r.pixel_spacing for r in records])
    off = (np.abs(spacing - spacing[0]) > 1e-3 * spacing[0]).any(axis=1)
    if off.any():
        r = records[int(np.argmax(off))]
        raise SeriesGeometryError(
            f"series {series_uid} mixes pixel spacings: {ref.pixel_spacing} in "
            f"{ref.instance.short_name}, {r.pixel_spacing} in {r.instance.short_name}; "
            "re-export it as one stack",
            series_uid=series_uid,
        )


def _units(ds: Dataset, modality: str) -> str:
    if modality == "CT":
        return "HU"
    return str(ds.get("RescaleType") or "unspecified")


def _stored_range(ds: Dataset) -> tuple[int, int]:
    """Smallest and largest stored value the pixel encoding allows."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _stack(records: Sequence[SliceRecord]) -> npt.NDArray[Any]:
    """Decode and rescale every record to modality values, shape (n, rows, cols).

    int16 when every slope is 1, every intercept whole and the values fit (CT nearly
    always); float32 otherwise. When the encoding's value range, rescaled, already fits
    int16 the values are written straight into int16; else through int32 and checked.
    """
    integral = all(r.slope == 1.0 and float(r.intercept).is_integer() for r in records)
    dtype: type[np.generic] = np.float32
    if integral:
        ranges = [_stored_range(r.instance.dataset) for r in records]
        low = min(lo + int(r.intercept) for (lo, _), r in zip(ranges, records, strict=True))
        high = max(hi + int(r.intercept) for (_, hi), r in zip(ranges, records, strict=True))
        dtype = np.int16 if low >= -32768 and high <= 32767 else np.int32
    first = records[0]
    out = np.empty((len(records), first.rows, first.cols), dtype=dtype)
    decoded: dict[int, npt.NDArray[Any]] = {}
    for k, rec in enumerate(records):
        key = id(rec.instance)
        frames = decoded.get(key)
        if frames is None:
            frames = decode_frames(rec.instance)
            if frames.ndim != 3:
                raise StudyError(
                    f"{rec.instance.name}: colour image in a CT series; only greyscale slices "
                    "can form a volume",
                    path=rec.instance.path,
                )
            if rec.instance.frames > 1:
                decoded[key] = frames
        if integral:
            np.add(frames[rec.frame], np.int32(rec.intercept), out=out[k], casting="unsafe")
        else:
            out[k] = frames[rec.frame].astype(np.float32) * rec.slope + rec.intercept
    if dtype is np.int32:
        fits = out.size and out.min() >= -32768 and out.max() <= 32767
        return out.astype(np.int16 if fits else np.float32)
    return out


def _interp_axis(
    arr: npt.NDArray[np.float32], coords: npt.NDArray[np.float64], axis: int, fill: float
) -> npt.NDArray[np.float32]:
    """Linear interpolation of ``arr`` at fractional indices ``coords`` along ``axis``."""
    n = arr.shape[axis]
    coords = np.round(coords, 6)
    i0 = np.floor(coords).astype(np.int64)
    w = (coords - i0).astype(np.float32)
    shape = [1] * arr.ndim
    shape[axis] = len(coords)
    w = w.reshape(shape)
    parts = []
    for idx in (i0, i0 + 1):
        valid = ((idx >= 0) & (idx < n)).reshape(shape)
        taken = np.take(arr, np.clip(idx, 0, n - 1), axis=axis)
        parts.append(np.where(valid, taken, np.float32(fill)))
    return np.asarray(parts[0] * (1 - w) + parts[1] * w, dtype=np.float32)


def _regularise(
    stack: npt.NDArray[Any],
    depth: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.float64],
    pixel_spacing: tuple[float, float],
    out_spacing: float,
    fill: float,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Resample parallel planes onto an orthogonal, evenly spaced grid.

    Parameters
    ----------
    stack
        Shape ``(n, rows, cols)``, sorted by ``depth``.
    depth
        Shape ``(n,)``: each plane's distance along the slice normal, mm, increasing.
    offsets
        Shape ``(n, 2)``: each plane's in-plane shift relative to plane 0, mm, as
        ``(along col_direction i.e. rows, along row_direction i.e. cols)``. Non-zero with
        gantry tilt.
    pixel_spacing
        ``(between rows, between columns)`` in mm.

    Returns
    -------
    array, corner
        The resampled ``(slices, rows', cols')`` array (grown in-plane to hold every
        shifted plane) and the in-plane ``(row, col)`` shift in mm of its first pixel
        relative to plane 0's first pixel.
    """
    dy, dx = pixel_spacing
    lo = offsets.min(axis=0)
    hi = offsets.max(axis=0)
    rows = stack.shape[1] + math.ceil((hi[0] - lo[0]) / dy - 1e-6)
    cols = stack.shape[2] + math.ceil((hi[1] - lo[1]) / dx - 1e-6)
    n_out = math.floor((depth[-1] - depth[0]) / out_spacing + 1e-6) + 1
    if n_out > MAX_RESAMPLED_SLICES:
        raise SeriesGeometryError(
            f"resampling at {out_spacing:g} mm would make {n_out} slices (limit "
            f"{MAX_RESAMPLED_SLICES}); choose a larger slice spacing"
        )
    shifted: dict[int, npt.NDArray[np.float32]] = {}

    def plane(k: int) -> npt.NDArray[np.float32]:
        if k not in shifted:
            src = stack[k].astype(np.float32)
            r = np.arange(rows) + (lo[0] - offsets[k, 0]) / dy
            c = np.arange(cols) + (lo[1] - offsets[k, 1]) / dx
            shifted[k] = _interp_axis(_interp_axis(src, r, 0, fill), c, 1, fill)
            shifted.pop(k - 2, None)  # planes are visited in order; keep memory flat
        return shifted[k]

    out = np.empty((n_out, rows, cols), dtype=np.float32)
    targets = depth[0] + np.arange(n_out) * out_spacing
    for j, z in enumerate(targets):
        k = int(np.clip(np.searchsorted(depth, z, side="right") - 1, 0, len(depth) - 2))
        span = depth[k + 1] - depth[k]
        w = float(np.clip((z - depth[k]) / span, 0.0, 1.0))
        out[j] = plane(k) * (1 - w) + plane(k + 1) * w if w > 0 else plane(k)
    if np.issubdtype(stack.dtype, np.integer):
        info = np.iinfo(stack.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(stack.dtype), lo
    return out, lo


def assemble_volume(
    series: SeriesEntry,
    *,
    allow_gaps: bool = False,
    slice_spacing: float | None = None,
) -> Volume:
    """Build the Volume of one cross-sectional series.

    Parameters
    ----------
    series
        From :func:`holo.imaging.index.index_files`.
    allow_gaps
        Interpolate linearly across missing slices instead of raising.
    slice_spacing
        Spacing (mm) of the output grid when the series must be resampled. Default: the
        smallest regular step of the series (steps under half the median are ignored).

    Raises
    ------
    SeriesGeometryError
        Mixed sizes/orientations/spacings, missing geometry, or gaps (unless allowed).
    StudyError
        Pixel data that cannot be decoded.
    """
    uid = series.series_uid
    records = [rec for inst in series.instances for rec in slice_records(inst)]
    if not records:
        raise StudyError(f"series {uid} has no images", series_uid=uid)
    _check_consistent(records, uid)
    ref = records[0]
    normal = np.cross(ref.row_direction, ref.col_direction)
    depth_all = np.array([r.position @ normal for r in records])
    order = np.lexsort((np.array([r.instance.instance_number for r in records]), depth_all))
    records = [records[i] for i in order]
    depth = depth_all[order]
    history: list[str] = []

    keep = [0]
    for k in range(1, len(records)):
        if depth[k] - depth[keep[-1]] < DUPLICATE_TOLERANCE_MM:
            if records[k].instance.instance_number < records[keep[-1]].instance.instance_number:
                keep[-1], k = k, keep[-1]  # keep the lower InstanceNumber
            dropped, kept = records[k].instance, records[keep[-1]].instance
            logger.warning(
                "series %s: %s repeats the position of %s (%.2f mm along the normal); keeping %s",
                uid,
                dropped.short_name,
                kept.short_name,
                depth[k],
                kept.short_name,
            )
            history.append(f"dropped duplicate slice {dropped.short_name} at {depth[k]:.2f} mm")
            continue
        keep.append(k)
    records = [records[i] for i in keep]
    depth = depth[keep]
    ref = records[0]  # the first plane along the normal: the volume's origin

    dy, dx = ref.pixel_spacing
    steps = np.diff(depth)
    offsets = np.array(
        [
            [
                (r.position - ref.position) @ ref.col_direction,
                (r.position - ref.position) @ ref.row_direction,
            ]
            for r in records
        ]
    )
    # In-plane drift of the planes relative to plane 0, beyond what round-off explains.
    sheared = bool(len(records) > 1 and np.abs(offsets).max() > 0.01 * min(dy, dx))
    uneven = bool(
        len(steps) > 1
        and steps.max() - steps.min() > max(STEP_TOLERANCE_MM, 0.01 * float(np.median(steps)))
    )

    gaps: list[tuple[int, float, float]] = []
    if uneven:
        # The expected step is the series' own (median) step; where the protocol changes
        # slice thickness inside the series (e.g. 4 mm then 7 mm), the local thickness.
        thicknesses = {r.thickness for r in records if r.thickness}
        median_step = float(np.median(steps))
        for k, step in enumerate(steps):
            thick = [t for t in (records[k].thickness, records[k + 1].thickness) if t]
            nominal = max(thick) if len(thicknesses) > 1 and thick else median_step
            if step > GAP_FACTOR * nominal + STEP_TOLERANCE_MM:
                gaps.append((k, float(step), nominal))
    if gaps and not allow_gaps:
        k, step, nominal = max(gaps, key=lambda g: g[1])
        raise SeriesGeometryError(
            f"series {uid} has missing slices: {len(gaps)} gap(s), the largest "
            f"{step:.1f} mm between {records[k].instance.short_name} and "
            f"{records[k + 1].instance.short_name} where the series steps {nominal:g} mm; "
            "re-send the complete series, or pass --allow-gaps to interpolate across gaps",
            series_uid=uid,
        )

    stack = _stack(records)
    units = _units(ref.instance.dataset, series.modality)
    meta = header_values(ref.instance.dataset, _METADATA_KEYWORDS)
    if len(records) > 1:
        tilt = math.degrees(math.atan2(np.linalg.norm(offsets[-1]), depth[-1] - depth[0]))
        meta["MeasuredGantryTiltDegrees"] = round(tilt, 3)

    if len(records) == 1:
        dz = ref.thickness or 1.0
        if ref.thickness is None:
            history.append("single slice without SliceThickness: assumed 1 mm")
        affine = affine_from_geometry(
            ref.position, ref.row_direction, ref.col_direction, normal, (dz, dy, dx)
        )
    elif not (uneven or sheared or slice_spacing is not None):
        dz = float((depth[-1] - depth[0]) / (len(depth) - 1))
        affine = affine_from_geometry(
            ref.position, ref.row_direction, ref.col_direction, normal, (dz, dy, dx)
        )
    else:
        if slice_spacing is not None:
            if not slice_spacing > 0:
                raise SeriesGeometryError(f"slice spacing must be positive, got {slice_spacing}")
            dz = float(slice_spacing)
        else:
            regular = steps[steps >= 0.5 * np.median(steps)]
            dz = float(regular.min())
        air = -1024.0 if units == "HU" else float(stack.min())
        fill = max(float(stack.min()), air)
        before = stack.shape
        stack, corner = _regularise(stack, depth, offsets, (dy, dx), dz, fill)
        origin = ref.position + corner[0] * ref.col_direction + corner[1] * ref.row_direction
        affine = affine_from_geometry(
            origin, ref.row_direction, ref.col_direction, normal, (dz, dy, dx)
        )
        if sheared:
            history.append(
                f"gantry tilt {meta['MeasuredGantryTiltDegrees']:.1f} deg: planes shifted "
                f"onto an orthogonal grid ({before[1]}x{before[2]} -> "
                f"{stack.shape[1]}x{stack.shape[2]} pixels)"
            )
        if uneven:
            history.append(
                f"uneven slice steps {steps.min():.2f}-{steps.max():.2f} mm: "
                f"{before[0]} slices resampled to {stack.shape[0]} at {dz:.3g} mm"
            )
        if gaps:
            history.append(
                f"interpolated across {len(gaps)} gap(s), the largest "
                f"{max(g[1] for g in gaps):.1f} mm"
            )
    for line in history:
        logger.info("series %s: %s", uid, line)
    return Volume(array=stack, affine=affine, units=units, metadata=meta, history=tuple(history))
