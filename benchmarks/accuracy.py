"""Benchmark: bone accuracy per slice thickness and kernel, holo against a plain threshold.

The sample generator's knee (three capsule bones, ``sample_data/generate.py``) at 0.5, 1,
2, 3 and 5 mm slices, through a standard and a bone kernel (``thick_slice_ct``). For each:

- **holo**: the bone preset and the mesh stage of ``holo convert``
  (``holo.testing.accuracy.score_bones``);
- **150 HU** (the baseline, in the same run): every voxel at or above 150 HU, its
  connected pieces as labels, each meshed on its mask (flying edges at the mask's edge,
  smoothing and cleanup, as holo does), the piece nearest each bone scored.

Printed per case: Dice on a 0.25 mm grid and the symmetric surface distance (mean and
95th percentile, mm) of every bone, the worst of the three, and the targets (Dice >= 0.90,
p95 <= one voxel = the slice thickness here) with met/MISSED.

Usage: python benchmarks/accuracy.py [--thickness MM ...] [--kernel NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import SimpleITK as sitk
from tables import print_table

from holo.meshing.cleanup import clean_mesh
from holo.meshing.surface import extract_surface, smooth_surface
from holo.testing.accuracy import BoneScores, Capsule, score_bones, score_mesh
from holo.volume import Volume
from segmentation.labelmap import LabelMap

GENERATOR = Path(__file__).resolve().parents[1] / "sample_data" / "generate.py"
THRESHOLD_HU = 150.0
DICE_TARGET = 0.90


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("holo_sample_data_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def threshold_bones(volume: Volume, truths: dict[str, Capsule]) -> list[BoneScores]:
    """The baseline: pieces of HU >= 150, meshed on their masks, nearest piece per bone."""
    image = volume.to_sitk()
    pieces = sitk.RelabelComponent(
        sitk.ConnectedComponent(sitk.BinaryThreshold(image, THRESHOLD_HU, 32767)),
        minimumObjectSize=100,
        sortByObjectSize=True,
    )
    array = sitk.GetArrayFromImage(pieces).astype(np.uint16)
    n = min(int(array.max()), 10)  # the ten largest pieces are plenty for three bones
    labels = LabelMap(
        labels=np.where(array <= n, array, 0).astype(np.uint16),
        affine=volume.affine.copy(),
        names={k: f"piece_{k}" for k in range(1, n + 1)},
        source={},
    )
    meshes = [clean_mesh(smooth_surface(extract_surface(labels, k))) for k in labels.names]
    out = []
    for name, truth in truths.items():
        middle = (np.asarray(truth.start) + np.asarray(truth.end)) / 2
        near = [
            (float(np.linalg.norm(m.center_mass - middle)), m)
            for m in meshes
            if np.linalg.norm(m.center_mass - middle) <= truth.radius
        ]
        best = min(near, key=lambda item: item[0])[1] if near else None
        out.append(BoneScores(name, None if best is None else score_mesh(best, truth)))
    return out


def cells(scored: list[BoneScores]) -> tuple[list[str], float, float]:
    """Per-bone 'dice / mean / p95' cells, and the worst Dice and p95 (missed: 0 and inf)."""
    out, worst_dice, worst_p95 = [], 1.0, 0.0
    for bone in scored:
        if bone.scores is None:
            out.append("missed")
            worst_dice, worst_p95 = 0.0, float("inf")
            continue
        s = bone.scores
        out.append(f"{s.dice:.3f} / {s.mean_mm:.2f} / {s.p95_mm:.2f}")
        worst_dice, worst_p95 = min(worst_dice, s.dice), max(worst_p95, s.p95_mm)
    return out, worst_dice, worst_p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thickness", type=float, nargs="*")
    parser.add_argument("--kernel", nargs="*")
    args = parser.parse_args()
    gen = load_generator()
    thicknesses = args.thickness or list(gen.THICK_SLICES_MM)
    kernels = args.kernel or list(gen.KERNELS)
    truths = {
        b.name: Capsule(tuple(gen.to_lps(b.start)), tuple(gen.to_lps(b.end)), b.radius)
        for b in gen.BONES
    }
    started = time.perf_counter()
    rows = []
    for kernel in kernels:
        for slice_mm in thicknesses:
            hu, affine = gen.thick_slice_ct(slice_mm, kernel)
            volume = Volume(array=hu.astype(np.int16), affine=affine, units="HU")
            voxel = max(volume.spacing)
            for method, run in (("holo", score_bones), ("150 HU", threshold_bones)):
                per_bone, dice, p95 = cells(run(volume, truths))
                met = "met" if dice >= DICE_TARGET and p95 <= voxel else "MISSED"
                rows.append(
                    [
                        f"{slice_mm:g} mm {kernel}",
                        method,
                        *per_bone,
                        f"{dice:.3f}",
                        f"{p95:.2f}",
                        met,
                    ]
                )
    print_table(
        "bone accuracy against the analytic knee: Dice / mean / p95 surface distance (mm)",
        ["case", "method", *truths, "worst Dice", "worst p95", "target"],
        rows,
    )
    print(
        f"targets: Dice >= {DICE_TARGET}, p95 <= one voxel (the slice thickness); "
        f"wall time {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
