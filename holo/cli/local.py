"""The local commands of ``holo``: ``studies``, ``read``, ``segment`` and ``convert``.

They read studies and write files on this machine (the ``convert`` extra); nothing here
talks to a server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from holo.atomic import atomic_path
from holo.cli.output import StageBars, table
from holo.errors import HoloError, StudyError
from segmentation.presets import PRESET_NAMES

__all__ = ["add_commands"]


def _cmd_studies(args: argparse.Namespace) -> int:
    from holo.imaging import index_study

    index = index_study(args.inputs)
    series = [s.summary() for s in index.series]
    if args.json:
        print(
            json.dumps(
                {"series": series, "skipped": [[f.name, r] for f, r in index.skipped]},
                indent=None,
            )
        )
        return 0
    rows = [
        [
            s["StudyInstanceUID"][-24:],
            s["SeriesInstanceUID"],
            s["Modality"],
            s["kind"],
            str(s["images"]),
            f"{s['Rows']}x{s['Columns']}",
            s["SeriesDescription"][:30],
        ]
        for s in series
    ]
    print(table(rows, ["study (tail)", "series", "mod", "kind", "images", "size", "description"]))
    if index.skipped:
        print(f"\n{len(index.skipped)} file(s) skipped (not DICOM images); --json lists them")
    return 0


def _volume_summary(volume: Any) -> dict[str, Any]:
    arr = volume.array
    return {
        "kind": "volume",
        "shape": list(volume.shape),
        "spacing_mm": [round(v, 4) for v in volume.spacing],
        "origin_lps_mm": [round(float(v), 3) for v in volume.origin],
        "directions_lps": [[round(float(v), 5) for v in axis] for axis in volume.directions.T],
        "units": volume.units,
        "dtype": str(arr.dtype),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "FrameOfReferenceUID": volume.frame_of_reference_uid,
        "history": list(volume.history),
    }


def _radiograph_summary(image: Any) -> dict[str, Any]:
    return {
        "kind": "radiograph",
        "shape": list(image.pixels.shape),
        "pixel_spacing_mm": [round(v, 5) for v in image.pixel_spacing],
        "spacing_source": image.spacing_source,
        "size_mm": [round(v, 1) for v in image.size_mm],
        "window": [round(v, 2) for v in image.window],
        "window_source": image.window_source,
        "photometric": image.photometric,
    }


def _write(out: Path, write: Any) -> None:
    """Write through a temporary file; an unwritable target is a one-line user error."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            write(str(tmp))
    except (OSError, RuntimeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise HoloError(f"cannot write {out}: {reason}; choose another output path") from err


def _cmd_read(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from holo.imaging import read_study
    from holo.volume import Volume

    if args.slice_spacing is not None and not args.slice_spacing > 0:
        raise HoloError(
            f"--slice-spacing must be a positive number of mm, got {args.slice_spacing}"
        )
    image = read_study(
        args.inputs,
        series_uid=args.series,
        sop_instance_uid=args.sop,
        frame=args.frame,
        allow_gaps=args.allow_gaps,
        slice_spacing=args.slice_spacing,
    )
    summary: dict[str, Any]
    if isinstance(image, Volume):
        summary = _volume_summary(image)
        if args.output:
            if not str(args.output).lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha")):
                raise StudyError(
                    f"{args.output}: write a volume as .nii.gz, .nrrd or .mha", path=args.output
                )
            _write(args.output, lambda p: sitk.WriteImage(image.to_sitk(), p, useCompression=True))
            summary["written"] = str(args.output)
    else:
        summary = _radiograph_summary(image)
        if args.output:
            if not str(args.output).lower().endswith(".png"):
                raise StudyError(f"{args.output}: write a radiograph as .png", path=args.output)
            _write(
                args.output, lambda p: sitk.WriteImage(sitk.GetImageFromArray(image.to_uint8()), p)
            )
            summary["written"] = str(args.output)
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            if key == "history":
                for line in value:
                    print(f"{'note'.ljust(width)}  {line}")
            else:
                print(f"{key.ljust(width)}  {value}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from holo.imaging import read_series
    from segmentation import segment

    if not str(args.output).lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha")):
        raise StudyError(f"{args.output}: write labels as .nii.gz, .nrrd or .mha", path=args.output)
    volume = read_series(args.inputs, series_uid=args.series, allow_gaps=args.allow_gaps)
    labels = segment(volume, args.preset)
    _write(
        args.output, lambda p: sitk.WriteImage(labels.as_volume().to_sitk(), p, useCompression=True)
    )
    voxel = labels.voxel_volume_mm3()
    summary = {
        "written": str(args.output),
        "preset": args.preset,
        "labels": [
            {"value": value, "name": labels.names[value], "volume_mm3": round(count * voxel, 1)}
            for value, count in labels.counts().items()
        ],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        rows = [[str(x["value"]), x["name"], f"{x['volume_mm3']:.0f}"] for x in summary["labels"]]
        print(table(rows, ["label", "name", "volume mm3"]))
        print(f"\nwrote {args.output}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from holo.pipeline import convert

    bars = StageBars(enabled=not args.json)
    try:
        report = convert(
            args.inputs,
            args.output,
            preset=args.preset,
            series_uid=args.series,
            allow_gaps=args.allow_gaps,
            method=args.surface,
            compression=args.compression,
            output_format=args.format,
            report_dir=args.report,
            progress=bars,
        )
    finally:
        bars.close()
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    if report.structures and "size_mm" in report.structures[0]:
        panel = report.structures[0]
        height, width = panel["size_mm"]
        print(f"radiograph panel {width:.1f} x {height:.1f} mm ({panel['spacing_source']})")
    else:
        rows = [
            [
                s["name"],
                str(s["triangles"]),
                "yes" if s["watertight"] else "no",
                f"{s['volume_mm3']:.0f}",
            ]
            for s in report.structures
        ]
        print(table(rows, ["structure", "triangles (full)", "watertight", "volume mm3"]))
    print()
    if report.lods:
        lod_rows = [
            [
                lod["name"],
                f"{lod['total']:,}",
                "full detail" if lod.get("budget") is None else f"{lod['budget']:,}",
                str(len(lod["triangles"])),
            ]
            for lod in report.lods
        ]
        print(table(lod_rows, ["LOD scene", "triangles (all)", "budget", "structures"]))
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in report.seconds.items())
    print(f"\nwrote {report.output}: {report.bytes} bytes; {stages}")
    for note in report.notes:
        print(f"note: {note}")
    if report.thumbnails:
        print(f"thumbnails: {', '.join(report.thumbnails)}")
    return 0


def add_commands(sub: Any) -> None:
    """Register studies, read, convert and segment on the ``holo`` parser."""
    p = sub.add_parser("studies", help="list the studies and series in folders, zips or files")
    p.add_argument("inputs", nargs="+", type=Path, help="folders, .zip files or DICOM files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_studies)

    p = sub.add_parser(
        "read",
        help="read a CT series into a volume (or an X-ray into a radiograph) and summarise it",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="folders, .zip, DICOM or NIfTI/NRRD/MHA")
    p.add_argument("--series", help="SeriesInstanceUID to read (default: largest CT series)")
    p.add_argument("--sop", help="SOPInstanceUID of the X-ray image, when there are several")
    p.add_argument("--frame", type=int, help="frame of a multi-frame X-ray cine (0-based)")
    p.add_argument("--allow-gaps", action="store_true", help="interpolate across missing slices")
    p.add_argument(
        "--slice-spacing", type=float, help="mm between slices when the series is resampled"
    )
    p.add_argument(
        "-o", "--output", type=Path, help="write the volume (.nii.gz/.nrrd/.mha) or X-ray (.png)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_read)

    p = sub.add_parser("convert", help="convert a CT study into a GLB hologram model")
    p.add_argument("inputs", nargs="+", type=Path, help="folders, .zip, DICOM or NIfTI/NRRD/MHA")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .glb to write")
    p.add_argument("--preset", default="bone", choices=PRESET_NAMES)
    p.add_argument("--series", help="SeriesInstanceUID to read (default: largest CT series)")
    p.add_argument("--allow-gaps", action="store_true", help="interpolate across missing slices")
    p.add_argument("--surface", default="flying-edges", choices=["flying-edges", "surface-nets"])
    p.add_argument("--compression", default="draco", choices=["draco", "none"])
    p.add_argument("--format", default="glb", choices=["glb", "stl", "obj", "ply"])
    p.add_argument(
        "--report", type=Path, metavar="DIR", help="write front/side/top PNG thumbnails there"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "segment", help="segment a CT study and write the label map (NIfTI) on the study's grid"
    )
    p.add_argument("inputs", nargs="+", type=Path, help="folders, .zip, DICOM or NIfTI/NRRD/MHA")
    p.add_argument("-o", "--output", type=Path, required=True, help="labels .nii.gz/.nrrd/.mha")
    p.add_argument("--preset", default="bone", choices=PRESET_NAMES)
    p.add_argument("--series", help="SeriesInstanceUID to read (default: largest CT series)")
    p.add_argument("--allow-gaps", action="store_true", help="interpolate across missing slices")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_segment)
