"""Bone accuracy at every slice thickness and kernel, against the analytic knee.

The sample generator makes the knee phantom at 1, 2, 3 and 5 mm slices (each voxel the mean
of the tissues in its box, an in-plane PSF and noise of a standard and of a bone kernel,
``sample_data/generate.py``: ``thick_slice_ct``). ``holo convert``'s segmentation and mesh
stage run on each; every bone's mesh is scored against its capsule
(:mod:`holo.testing.accuracy`). Floors are the issue's targets: Dice >= 0.90 and the 95th
percentile of the surface distance within one voxel, read as the voxel's largest side
(the slice thickness here). The figures per case are in ``benchmarks/accuracy.py``.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from holo.testing.accuracy import BoneScores, Capsule, score_bones
from holo.volume import Volume

DICE_FLOOR = 0.90


def _truths(gen: ModuleType) -> dict[str, Capsule]:
    return {
        bone.name: Capsule(tuple(gen.to_lps(bone.start)), tuple(gen.to_lps(bone.end)), bone.radius)
        for bone in gen.BONES
    }


@pytest.mark.parametrize("kernel", ["standard", "bone"])
@pytest.mark.parametrize("slice_mm", [1.0, 2.0, 3.0, 5.0])
def test_every_bone_within_a_voxel_at_every_thickness(
    sample_generator: ModuleType, slice_mm: float, kernel: str
) -> None:
    hu, affine = sample_generator.thick_slice_ct(slice_mm, kernel)
    volume = Volume(array=hu.astype(np.int16), affine=affine, units="HU")
    voxel_mm = max(volume.spacing)
    scored: list[BoneScores] = score_bones(volume, _truths(sample_generator))
    missed = [bone.name for bone in scored if bone.scores is None]
    assert not missed, f"{slice_mm} mm {kernel}: no mesh for {missed}"
    for bone in scored:
        assert bone.scores is not None
        where = f"{bone.name} at {slice_mm} mm, {kernel} kernel: {bone.scores}"
        assert bone.scores.dice >= DICE_FLOOR, where
        assert bone.scores.p95_mm <= voxel_mm, where


def test_thick_slices_are_partial_volume_means_with_the_kernels_noise(
    sample_generator: ModuleType,
) -> None:
    # The phantom itself: noise falls as 1/sqrt(thickness), a bone kernel is noisier than a
    # standard one, and a thick slice through a capsule's round end reads between soft
    # tissue and cortex (partial volume), not either.
    def soft_tissue_sd(slice_mm: float, kernel: str) -> float:
        hu, _ = sample_generator.thick_slice_ct(slice_mm, kernel)
        # A patch of lean soft tissue beside the knee (knee frame x = -40 mm, y = 0).
        col = round(
            (-40.0 - sample_generator.CT_FIRST_VOXEL_KNEE[0]) / sample_generator.CT_PIXEL_SPACING_MM
        )
        row = round(
            (0.0 - sample_generator.CT_FIRST_VOXEL_KNEE[1]) / sample_generator.CT_PIXEL_SPACING_MM
        )
        return float(hu[:, row - 4 : row + 4, col - 4 : col + 4].std())

    standard_1, standard_4 = soft_tissue_sd(1.0, "standard"), soft_tissue_sd(4.0, "standard")
    assert standard_1 == pytest.approx(15.0, rel=0.15)
    assert standard_4 == pytest.approx(standard_1 / 2, rel=0.2)
    assert soft_tissue_sd(1.0, "bone") == pytest.approx(45.0, rel=0.15)
    hu, affine = sample_generator.thick_slice_ct(5.0, "standard")
    z = affine[2, 3] + affine[2, 0] * np.arange(hu.shape[0])
    femur = sample_generator.BONES[0]
    tip_z = sample_generator.to_lps(femur.start)[2] - femur.radius  # the femur's distal end, LPS z
    col = round((femur.start[0] - sample_generator.CT_FIRST_VOXEL_KNEE[0]) / 0.8)
    row = round((femur.start[1] - sample_generator.CT_FIRST_VOXEL_KNEE[1]) / 0.8)
    k = int(np.argmin(np.abs(z - (tip_z + 1.0))))  # the slice whose box holds the tip
    assert 40 + 100 < hu[k, row, col] < sample_generator.HU_CORTICAL - 100
