"""Benchmark: registration accuracy against analytic truth, holo against ITK and trimesh.

On the sample knee's bone model (``sample_data/knee_ct`` through the mesh stage of
``holo convert``), with known random rigid transforms and localisation noise of known size
(isotropic Gaussian, FLE = RMS length of the 3-D error; ``holo.testing.registration``):

1. **Paired points**: 4, 6 and 10 fiducials spread over the knee (each the farthest from
   those chosen, a new configuration every ``--per-layout`` trials) at FLE 0.5, 1 and 2 mm,
   ``--trials`` each. Printed: RMS FRE measured and expected (``FLE sqrt(1 - 2/N)``); RMS
   TRE against the truth at the knee's three landmarks and the femur's proximal end,
   Fitzpatrick's prediction with the true FLE, their ratio, the 95th percentile; the
   prediction each registration reports (FLE estimated from its own FRE); how many trials
   the default check flagged, and how many truly had a target over 2 mm.
2. **Against ITK** (the baseline, same run): SimpleITK's LandmarkBasedTransformInitializer
   (VersorRigid3DTransform, Horn's method) on the same points: largest disagreement in mm,
   and time per registration (holo includes its input checks and FRE).
3. **Surface refinement**: 180 points on the exposed (anterior) side of the knee's analytic
   bone surfaces, 0.3 mm noise, 0-40 % of them lifted 3-15 mm off (soft tissue), a start
   3 degrees and 3 mm off; holo's point-to-plane ICP with MAD rejection against trimesh's
   ``registration.icp`` (point-to-point, every point kept, its default 20 iterations; made
   rigid with ``reflection=False, scale=False``, which its defaults are not),
   ``--surface-trials`` each.

Usage: python benchmarks/registration.py [--trials N] [--surface-trials N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import trimesh
from scipy.spatial.transform import Rotation
from tables import print_table

from holo.registration import (
    AccuracyLimits,
    RigidTransform,
    expected_fre,
    register_paired_points,
)
from holo.registration.surface import refine_on_surface
from holo.testing.accuracy import Capsule
from holo.testing.registration import (
    bone_meshes,
    capsule_patch,
    localise,
    paired_trials,
    random_transform,
    spread_points,
    touch_surface,
)

REPO = Path(__file__).resolve().parents[1]
FIDUCIALS = (4, 6, 10)
FLES_MM = (0.5, 1.0, 2.0)
OUTLIER_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4)
TRE_LIMIT_MM = 2.0  # AccuracyLimits().tre_mm
ANTERIOR = (0.0, -1.0, 0.0)


def passing_over(flagged: np.ndarray, over: np.ndarray) -> str:
    """The share of the trials the check passed that truly had a target over the limit."""
    passed = ~flagged
    return f"{np.mean(over[passed]):.1%}" if passed.any() else "-"


def paired_table(knee: trimesh.Trimesh, targets: np.ndarray, trials: int, per_layout: int) -> None:
    rng = np.random.default_rng(20261122)
    rows = []
    for n in FIDUCIALS:
        for fle in FLES_MM:
            runs = [
                paired_trials(spread_points(knee.vertices, n, rng), targets, fle, per_layout, rng)
                for _ in range(max(1, trials // per_layout))
            ]
            fre = np.concatenate([r.fre_rms_mm for r in runs])
            tre = np.concatenate([r.tre_mm for r in runs])
            expected = np.concatenate(
                [np.tile(r.expected_tre_mm, (len(r.tre_mm), 1)) for r in runs]
            )
            reported = np.concatenate([r.predicted_tre_mm for r in runs])
            bound = np.concatenate([r.predicted_tre95_mm for r in runs])
            flagged = np.concatenate([r.flagged for r in runs])
            flagged_given = np.concatenate([r.flagged_given_fle for r in runs])
            over = tre.max(axis=1) > TRE_LIMIT_MM
            measured = float(np.sqrt(np.mean(tre**2)))
            predicted = float(np.sqrt(np.mean(expected**2)))
            rows.append(
                [
                    f"N={n}, FLE {fle:g} mm",
                    f"{np.sqrt(np.mean(fre**2)):.3f}",
                    f"{expected_fre(fle, n):.3f}",
                    f"{measured:.3f}",
                    f"{predicted:.3f}",
                    f"{measured / predicted:.3f}",
                    f"{np.percentile(tre, 95):.3f}",
                    f"{np.sqrt(np.mean(reported**2)):.3f}",
                    f"{(tre > bound).mean():.1%}",
                    f"{over.mean():.1%}",
                    f"{flagged.mean():.1%}",
                    passing_over(flagged, over),
                    f"{flagged_given.mean():.1%}",
                    passing_over(flagged_given, over),
                ]
            )
    print_table(
        f"paired points on the sample knee: {trials} trials per row, mm "
        "(TRE at 3 landmarks + the femur's far end)",
        [
            "case",
            "FRE rms",
            "FRE expected",
            "TRE rms",
            "TRE predicted",
            "ratio",
            "TRE p95",
            "TRE reported",
            "over 95% bound",
            "TRE > 2 mm",
            "flagged",
            "passed, > 2 mm",
            "flagged (FLE given)",
            "passed, > 2 mm (given)",
        ],
        rows,
    )
    print(
        "FRE expected = FLE sqrt(1 - 2/N); TRE predicted = Fitzpatrick's formula with the true "
        "FLE; TRE reported = the same with the FLE each registration estimates from its FRE; "
        "over 95% bound = how often the true TRE exceeded the 95th-percentile bound each "
        "registration reports (target 5%); TRE > 2 mm = trials with a target truly over 2 mm; "
        "flagged = the default check (AccuracyLimits: 95% bound over 2 mm, FRE, fewer than 4 "
        "fiducials) with the FLE estimated from the FRE, and with the true FLE given; "
        "passed, > 2 mm = the share of the trials it passed that truly had a target over 2 mm"
    )


def itk_table(knee: trimesh.Trimesh, repeat: int) -> None:
    rng = np.random.default_rng(7)
    rows = []
    for n in FIDUCIALS:
        cases = []
        for _ in range(repeat):
            fiducials = spread_points(knee.vertices, n, rng)
            truth = random_transform(rng)
            cases.append((fiducials, localise(truth.apply(fiducials), 1.0, rng)))
        started = time.perf_counter()
        ours = [register_paired_points(a, b).room_from_patient for a, b in cases]
        holo_s = (time.perf_counter() - started) / repeat
        started = time.perf_counter()
        theirs = [
            sitk.LandmarkBasedTransformInitializer(
                sitk.VersorRigid3DTransform(), a.ravel().tolist(), b.ravel().tolist()
            )
            for a, b in cases
        ]
        itk_s = (time.perf_counter() - started) / repeat
        worst = max(
            float(np.abs(t.apply(a) - np.array([i.TransformPoint(tuple(p)) for p in a])).max())
            for t, i, (a, _) in zip(ours, theirs, cases, strict=True)
        )
        rows.append(
            [
                f"N={n}",
                f"{worst:.1e}",
                f"{holo_s * 1e6:.0f}",
                f"{itk_s * 1e6:.0f}",
                f"{holo_s / itk_s:.2f}",
            ]
        )
    print_table(
        f"paired points against ITK's landmark initializer: {repeat} registrations each, FLE 1 mm",
        ["case", "max difference mm", "holo us", "ITK us", "holo / ITK"],
        rows,
    )


def nudge(about: np.ndarray, degrees: float, mm: float, rng: np.random.Generator) -> RigidTransform:
    axis = rng.normal(size=3)
    rotation = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(degrees)).as_matrix()
    shift = rng.normal(size=3)
    return RigidTransform(rotation, about - rotation @ about + shift / np.linalg.norm(shift) * mm)


def surface_table(
    knee: trimesh.Trimesh, capsules: list[Capsule], targets: np.ndarray, trials: int
) -> None:
    rng = np.random.default_rng(11)
    rows = []
    for fraction in OUTLIER_FRACTIONS:
        figures: dict[str, list[list[float]]] = {"holo": [], "trimesh icp": []}
        for _ in range(trials):
            patches = [capsule_patch(c, 60, rng, ANTERIOR) for c in capsules]
            touched, outliers = touch_surface(
                np.concatenate([p for p, _ in patches]),
                np.concatenate([n for _, n in patches]),
                rng,
                noise_mm=0.3,
                outlier_fraction=fraction,
            )
            truth = random_transform(rng)
            room = truth.apply(touched)
            start = truth @ nudge(targets.mean(axis=0), 3.0, 3.0, rng)
            started = time.perf_counter()
            ours = refine_on_surface(knee, room, start)
            seconds = time.perf_counter() - started
            caught = np.count_nonzero(outliers & ~ours.inliers) / max(1, outliers.sum())
            limits = AccuracyLimits()
            flagged = (
                ours.residual_rms_mm > limits.surface_rms_mm
                or ours.n_rejected / len(touched) > limits.surface_rejected_fraction
            )
            figures["holo"].append(
                [
                    float(ours.room_from_patient.distances_mm(truth, targets).max()),
                    ours.residual_rms_mm,
                    ours.n_rejected,
                    caught,
                    ours.iterations,
                    seconds,
                    float(flagged),
                ]
            )
            started = time.perf_counter()
            matrix, moved, _ = trimesh.registration.icp(
                room, knee, initial=start.inverse().matrix, reflection=False, scale=False
            )
            seconds = time.perf_counter() - started
            theirs = RigidTransform.from_matrix(matrix).inverse()
            _, distances, _ = knee.nearest.on_surface(moved)
            figures["trimesh icp"].append(
                [
                    float(theirs.distances_mm(truth, targets).max()),
                    float(np.sqrt(np.mean(np.asarray(distances) ** 2))),
                    0,
                    0.0,
                    20,
                    seconds,
                    np.nan,
                ]
            )
        for method, values in figures.items():
            v = np.asarray(values)
            rows.append(
                [
                    f"{fraction:.0%} outliers",
                    method,
                    f"{np.mean(v[:, 0]):.3f}",
                    f"{np.max(v[:, 0]):.3f}",
                    f"{np.mean(v[:, 0] > 1.0):.0%}",
                    f"{np.mean(v[:, 1]):.3f}",
                    f"{np.mean(v[:, 2]):.1f}",
                    f"{np.mean(v[:, 3]):.0%}" if method == "holo" and fraction else "-",
                    f"{np.mean(v[:, 4]):.1f}",
                    f"{np.mean(v[:, 5]) * 1000:.0f}",
                    "-" if method != "holo" else f"{np.mean(v[:, 6]):.0%}",
                ]
            )
    print_table(
        f"surface refinement on the sample knee: {trials} trials per row, start 3 deg + 3 mm off, "
        "180 points, 0.3 mm noise",
        [
            "case",
            "method",
            "TRE max mean",
            "TRE max worst",
            "TRE max > 1 mm",
            "residual rms",
            "rejected",
            "outliers caught",
            "iterations",
            "ms",
            "flagged",
        ],
        rows,
    )
    print(
        "TRE max = the largest error against the truth over the 4 targets (mm); residual = RMS "
        "distance of the points kept to the mesh; trimesh's icp runs its default 20 iterations "
        "and keeps every point; flagged = the default check's surface limits (residual over "
        "1 mm, over 30 % rejected)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--per-layout", type=int, default=100)
    parser.add_argument("--surface-trials", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    truth = json.loads((REPO / "sample_data" / "truth.json").read_text())
    knee = trimesh.util.concatenate(bone_meshes(REPO / "sample_data" / "knee_ct"))
    targets = np.array(
        [m["lps_mm"] for m in truth["landmarks"].values()]
        + [truth["bones"]["femur"]["segment_end_lps_mm"]]
    )
    capsules = [
        Capsule(tuple(b["segment_start_lps_mm"]), tuple(b["segment_end_lps_mm"]), b["radius_mm"])
        for b in truth["bones"].values()
    ]
    print(f"sample knee model: {len(knee.faces)} triangles, patient LPS mm")
    paired_table(knee, targets, args.trials, args.per_layout)
    itk_table(knee, 200)
    surface_table(knee, capsules, targets, args.surface_trials)
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
