"""Segmentation presets: HU ranges and sizes, each with where its numbers come from.

HU values of tissues: DenOtter TD, Schaffer J. "Hounsfield Unit", StatPearls (2023):
air -1000; fat -120 to -90 (holo uses -100); soft tissue and muscle +10 to +80 (holo uses
40); cancellous bone +300 to +400; cortical bone +500 to +1900; iodinated contrast in
vessels is typically +150 to +500 HU at arterial phase.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "BodyPreset",
    "BonePreset",
    "Preset",
    "SoftTissuePreset",
]


@dataclass(frozen=True)
class BodyPreset:
    """The patient's body (skin surface), everything else (air, couch) excluded.

    ``body_hu``: above air and lung (-1000 to -500 HU), below fat (-100): -400 HU separates
    the patient from the air around it, as in common body-mask methods. Which piece is the
    patient is decided on a ``grid_mm`` grid (2 mm: 1/8 of the voxels of a 1 mm grid, so the
    morphology costs 0.1 s instead of 3.2 s on the 512 x 512 x 140 skull; a couch 3 mm below
    the skin still stays apart, tests/test_segmentation.py): the inside is filled per slice,
    then the couch is removed as what is not the largest connected body after an opening of
    ``opening_mm`` (couch pads and head holders touch the skin over a few mm at most). The
    skin itself is placed at full resolution.
    """

    name: str = "skin"
    #: Display colour, linear RGBA: muted red, half transparent so the bone shows through.
    color: tuple[float, float, float, float] = (0.80, 0.60, 0.52, 0.5)
    body_hu: float = -400.0
    opening_mm: float = 3.0
    grid_mm: float = 2.0


@dataclass(frozen=True)
class BonePreset:
    """Bone, cortex and marrow, labelled per bone.

    - ``seed_hu``: clusters of at least ``min_seed_mm3`` (10 mm³, ~20 voxels at 0.8 mm)
      at or above it start a bone region (500 HU: the lower end of cortical bone, above
      contrast-filled vessels at most phases; the cluster size keeps noise in a 450 HU
      vessel from seeding). That holds for slices up to ``seed_slice_mm`` (1.5 mm). A voxel
      is the mean over its slice, so cortex lying in the slice plane reads
      ``soft + (seed_hu - soft) x seed_slice_mm / slice`` in thicker slices (270 HU at
      3 mm): the seed level follows that down, but not below ``seed_floor_hu`` (400 HU:
      above the 250-350 HU of arterial-phase contrast in most vessels); a bone needs only
      one seed cluster, and its walls across the slices keep their full HU in-plane;
    - ``low_hu``: a region grows through connected voxels at or above the growing level,
      so cancellous bone is kept and contrast vessels that do not touch cortex are left
      out. The level sits ``grow_noise_sigmas`` (3) noise standard deviations above the
      top of soft tissue, ``soft_tissue_top_hu`` (+80 HU: muscle, blood, organs), with the
      noise measured on the image itself (:mod:`segmentation.noise`), at most ``low_hu``
      (150 HU, the level for noisy 0.5-1 mm bone-kernel series: sigma >= 23 HU) and at
      least ``low_floor_hu`` (100 HU: cartilage and tendon read 80-100 HU). A smooth 3 mm
      series (sigma 5-8 HU) grows down to 100-105 HU, where its cancellous bone reads
      100-160 HU through partial volume;
    - marrow (fatty, about -50 to +50 HU) inside the cortex is filled: 3-D holes always,
      and 2-D holes per axial slice up to ``max_marrow_area_mm2`` (15 cm²: beyond the
      adult femoral shaft's medullary canal, well below a skull's cross-section, so the
      brain is never filled);
    - pieces under ``min_bone_mm3`` (100 mm³, a 6 mm cube) are specks and dropped;
    - touching bones are split where an erosion of ``split_erosion_mm`` separates them
      (a joint space narrowed to ~1-2 mm by partial volume) and the parts' contact is under
      ``split_max_contact`` x (smaller part's volume)^(2/3), i.e. a contact patch, not the
      broad sheet where thin bone joins two thick regions of one bone (0.3: a skull's
      vault and base meet over ~0.5 of that, a knee's femur and tibia over ~0.1-0.2).
      On slices thicker than that erosion, a joint space narrower than a slice is bridged
      over a patch about a slice wide (the knee phantom's 6 mm joint at 5 mm slices: a
      neck of 5 mm radius), so the erosion grows to the slice thickness, up to
      ``split_erosion_max_mm`` (5 mm: more would erase ribs and skull vault, 5-8 mm thick,
      whose parts then could not be told apart).
    - ``soft_tissue_hu``: the background used to place the surface at half the local
      bone maximum (half-maximum edge, robust to thin bone and partial volume).
    """

    name: str = "bone"
    color: tuple[float, float, float, float] = (0.89, 0.85, 0.79, 1.0)  # ivory, opaque
    seed_hu: float = 500.0
    seed_slice_mm: float = 1.5
    seed_floor_hu: float = 400.0
    min_seed_mm3: float = 10.0
    low_hu: float = 150.0
    low_floor_hu: float = 100.0
    soft_tissue_top_hu: float = 80.0
    grow_noise_sigmas: float = 3.0
    max_marrow_area_mm2: float = 1500.0
    min_bone_mm3: float = 100.0
    split_erosion_mm: float = 1.5
    split_erosion_max_mm: float = 5.0
    split_max_contact: float = 0.3
    soft_tissue_hu: float = 40.0
    body: BodyPreset = BodyPreset()

    def seed_level(self, slice_mm: float) -> float:
        """The seed threshold (HU) for slices of ``slice_mm``."""
        scale = min(1.0, self.seed_slice_mm / max(slice_mm, 1e-6))
        level = self.soft_tissue_hu + (self.seed_hu - self.soft_tissue_hu) * scale
        return max(min(self.seed_floor_hu, self.seed_hu), level)

    def split_erosion(self, slice_mm: float) -> float:
        """The erosion (mm) that proposes joint splits, for slices of ``slice_mm``."""
        return min(max(self.split_erosion_mm, slice_mm), self.split_erosion_max_mm)

    def grow_level(self, noise_hu: float) -> float:
        """The growing threshold (HU) for an image whose soft tissue has ``noise_hu``."""
        level = self.soft_tissue_top_hu + self.grow_noise_sigmas * noise_hu
        return min(self.low_hu, max(self.low_floor_hu, level))


@dataclass(frozen=True)
class SoftTissuePreset:
    """Muscle and organs: body voxels from -30 to +200 HU, bone excluded.

    -30 HU lies between fat (-120 to -50 HU) and water (0), so fat stays out even with
    CT noise; +200 HU stays under cancellous bone.
    """

    name: str = "soft_tissue"
    color: tuple[float, float, float, float] = (0.70, 0.35, 0.33, 1.0)  # muted red, opaque
    low_hu: float = -30.0
    high_hu: float = 200.0
    body: BodyPreset = BodyPreset()
    bone: BonePreset = BonePreset()


Preset = BonePreset | BodyPreset | SoftTissuePreset

PRESETS: dict[str, Preset] = {
    "bone": BonePreset(),
    "skin": BodyPreset(),
    "soft_tissue": SoftTissuePreset(),
}
#: The presets by name, as the CLI and the server accept them.
PRESET_NAMES = tuple(PRESETS)
