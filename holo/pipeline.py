"""Study -> hologram model: read, segment, mesh, decimate, write. Pure stages with progress.

The same function runs from the CLI, a test or the server's job runner (in a worker
process); nothing here imports grpc. ``progress(stage, fraction)`` is called as each stage
advances. Needs the ``convert`` extra.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "trimesh", "SimpleITK", "vtkmodules", "DracoPy", feature="holo.convert")

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trimesh

from holo.atomic import atomic_path
from holo.errors import PipelineError
from holo.export.draco import precompress
from holo.export.glb import Compression, Structure, export_glb, lod_levels
from holo.export.normals import vertex_normals
from holo.export.panel import export_panel_glb
from holo.export.thumbnails import render_thumbnails
from holo.imaging import Inputs, Radiograph, public_metadata, read_study
from holo.meshing.cleanup import clean_mesh
from holo.meshing.lod import LOD_BUDGETS, build_model_lods
from holo.meshing.manifold import is_edge_manifold
from holo.meshing.surface import SurfaceMethod, extract_surface, signed_volume, smooth_surface
from holo.volume import Volume
from segmentation.labelmap import LabelMap
from segmentation.presets import PRESETS
from segmentation.segmenter import segment

__all__ = ["FORMATS", "STAGES", "ConversionReport", "convert", "structure_mesh"]

logger = logging.getLogger(__name__)

STAGES = ("read", "segment", "mesh", "decimate", "report", "write")  # report: with report_dir

Progress = Callable[[str, float], None]

#: Output formats. GLB carries every LOD, names, colours and the glTF frame; STL, OBJ and
#: PLY (for 3-D printing and other tools) carry the full-detail meshes in patient LPS mm.
FORMATS = ("glb", "stl", "obj", "ply")


@dataclass
class ConversionReport:
    """What a conversion produced, for the CLI summary and ``--json``."""

    output: str
    structures: list[dict[str, Any]] = field(default_factory=list)
    lods: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    thumbnails: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "structures": self.structures,
            "lods": self.lods,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "notes": self.notes,
            "thumbnails": self.thumbnails,
        }


def convert(
    inputs: Inputs,
    output: str | Path,
    *,
    preset: str = "bone",
    series_uid: str | None = None,
    allow_gaps: bool = False,
    method: SurfaceMethod = "flying-edges",
    budgets: Sequence[int] = LOD_BUDGETS,
    compression: Compression = "draco",
    output_format: str = "glb",
    report_dir: str | Path | None = None,
    progress: Progress | None = None,
    deid_salt: str | None = None,
) -> ConversionReport:
    """Convert a CT study into a GLB hologram model (one scene per LOD).

    ``deid_salt`` keys the replacement UIDs in the GLB's de-identified facts (the server
    passes its own, so a model's FrameOfReferenceUID matches its catalogue entry across
    restarts); default: a random value fixed for this process.

    Raises
    ------
    StudyError
        The input cannot be read (see :func:`holo.imaging.read_series`).
    PipelineError
        Segmentation or meshing produced nothing usable.
    """
    if preset not in PRESETS:
        raise PipelineError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if output_format not in FORMATS:
        raise PipelineError(f"unknown format {output_format!r}; choose one of {', '.join(FORMATS)}")
    say = progress or (lambda stage, fraction: None)
    report = ConversionReport(output=str(output))
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.seconds[stage] = round(now - clock, 3)
        clock = now
        say(stage, 1.0)

    say("read", 0.0)
    study = read_study(inputs, series_uid=series_uid, allow_gaps=allow_gaps)
    if isinstance(study, Radiograph):
        return _convert_radiograph(study, Path(output), output_format, report, lap, deid_salt)
    volume = study
    report.notes.extend(volume.history)
    lap("read")
    say("segment", 0.0)
    labels = segment(volume, preset)
    lap("segment")
    meshes = []
    for i, (label, name) in enumerate(labels.names.items()):
        say("mesh", i / len(labels.names))
        meshes.append((name, structure_mesh(volume, labels, label, preset=preset, method=method)))
    lap("mesh")
    say("decimate", 0.0)
    # The full-detail meshes are final now: their Draco encoding (3.7 s on the skull) runs
    # in a thread while the LODs are decimated (both release the GIL, so the two cores
    # share the work); the GLB writer picks the encodings up.
    encoder = ThreadPoolExecutor(1, thread_name_prefix="holo-draco")
    ready = None
    if output_format == "glb" and compression == "draco":
        ready = encoder.submit(
            precompress, [(m.vertices, m.faces, vertex_normals(m)) for _, m in meshes]
        )
    encoder.shutdown(wait=False)
    chains = build_model_lods([mesh for _, mesh in meshes], tuple(budgets))
    structures = [
        Structure(name=name, color=PRESETS[preset].color, lods=chain)
        for (name, _), chain in zip(meshes, chains, strict=True)
    ]
    for name, mesh in meshes:
        # Vectorised: trimesh's volume and watertightness cost 2.5 s on a 1.5M-triangle skull.
        report.structures.append(
            {
                "name": name,
                "triangles": len(mesh.faces),
                "watertight": is_edge_manifold(mesh),
                "volume_mm3": round(signed_volume(mesh), 1),
                "area_mm2": round(float(mesh.area), 1),
            }
        )
    lap("decimate")
    if report_dir is not None:
        say("report", 0.0)
        # The finest LOD within 100k triangles looks the same as full detail at thumbnail
        # size and renders faster.
        levels = lod_levels(structures)
        fine = [k for k, level in enumerate(levels) if sum(len(m.faces) for m in level) <= 100_000]
        shown = levels[fine[-1] if fine else 0]
        views = [(s.name, mesh, s.color) for s, mesh in zip(structures, shown, strict=True)]
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        report.thumbnails = [str(p) for p in render_thumbnails(views, Path(report_dir))]
        lap("report")
    say("write", 0.0)
    if output_format != "glb":
        report.bytes = _write_mesh_file(structures, Path(output), output_format)
        report.lods = [
            {"name": "full", "triangles": {s.name: len(s.lods[-1].faces) for s in structures}}
        ]
        report.lods[0]["total"] = sum(report.lods[0]["triangles"].values())
        lap("write")
        return report
    public = public_metadata(volume.metadata, salt=deid_salt)
    written = export_glb(
        structures,
        output,
        frame_of_reference_uid=public.get("FrameOfReferenceUID"),
        study=public,
        compression=compression,
        draco_ready=None if ready is None else ready.result(),
    )
    report.lods = written["lods"]
    below = sorted(b for b in budgets if b < sum(s["triangles"] for s in report.structures))
    for lod, budget in zip(report.lods, [*below, None], strict=False):
        lod["budget"] = budget  # None: full detail
    report.bytes = written["bytes"]
    lap("write")
    return report


def structure_mesh(
    volume: Volume,
    labels: LabelMap,
    label: int,
    *,
    preset: str = "bone",
    method: SurfaceMethod = "flying-edges",
) -> trimesh.Trimesh:
    """The full-detail mesh of one label: surface, smoothing, cleanup (the mesh stage).

    Bone surfaces sit at the half-maximum edge of the CT's HU; other presets' on the mask.
    """
    ct = volume if preset == "bone" else None
    return clean_mesh(smooth_surface(extract_surface(labels, label, ct=ct, method=method)))


def _write_mesh_file(structures: Sequence[Structure], path: Path, output_format: str) -> int:
    """Full-detail meshes of all structures in one STL/OBJ/PLY file, LPS millimetres."""
    joined = trimesh.util.concatenate([s.lods[-1] for s in structures])
    with atomic_path(path) as tmp:
        joined.export(tmp, file_type=output_format)
        size = tmp.stat().st_size
    return size


def _convert_radiograph(
    image: Radiograph,
    output: Path,
    output_format: str,
    report: ConversionReport,
    lap: Callable[[str], None],
    deid_salt: str | None,
) -> ConversionReport:
    """An X-ray study becomes a flat panel at its physical size (GLB only)."""
    if output_format != "glb":
        raise PipelineError(
            f"{output}: a radiograph converts to a GLB image panel only; use -o PANEL.glb"
        )
    lap("read")
    written = export_panel_glb(image, output, study=public_metadata(image.metadata, salt=deid_salt))
    report.bytes = written["bytes"]
    report.structures.append(
        {
            "name": "radiograph",
            "size_mm": written["size_mm"],
            "spacing_source": image.spacing_source,
        }
    )
    if image.spacing_source == "assumed":
        report.notes.append(
            f"no pixel spacing in the file: {image.pixel_spacing[0]:g} mm assumed, the panel's "
            "size is approximate"
        )
    lap("write")
    return report
