"""Off-screen thumbnails: files, colours and the patient orientation of each view.

The scene is a bar long along Superior-Inferior at the origin and a ball to the patient's
Left, Anterior and Superior of it, in LPS millimetres, so each view's up, right and fit
can be read off where the two land in the image. Off-screen OpenGL (Mesa EGL or OSMesa)
missing fails in CI (``CI=true``) and skips elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk
import trimesh

from holo.errors import PipelineError
from holo.export import thumbnails
from holo.export.thumbnails import BACKGROUND, offscreen_backend, render_thumbnails

SIZE = 512
# Linear RGBA as in the GLB; orange and green are far apart in chromaticity and from grey.
BAR_RGBA = (0.80, 0.30, 0.05, 1.0)
BALL_RGBA = (0.10, 0.60, 0.10, 1.0)
BAR_EXTENTS_LPS = (20.0, 20.0, 160.0)  # mm: long along Superior-Inferior
BALL_CENTRE_LPS = (60.0, -40.0, 60.0)  # mm: patient Left, Anterior, Superior of the bar
BALL_RADIUS = 15.0


def _needs(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def backend() -> str:
    try:
        return offscreen_backend()
    except PipelineError as err:
        _needs(str(err))
        raise


def _scene() -> list[tuple[str, trimesh.Trimesh, tuple[float, float, float, float]]]:
    bar = trimesh.creation.box(extents=BAR_EXTENTS_LPS)
    ball = trimesh.creation.icosphere(subdivisions=3, radius=BALL_RADIUS)
    ball.apply_translation(BALL_CENTRE_LPS)
    return [("bar", bar, BAR_RGBA), ("ball", ball, BALL_RGBA)]


@pytest.fixture(scope="module")
def rendered(backend: str, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("thumbs")
    (out / "front.png").write_bytes(b"stale")  # replaced, not appended to
    return render_thumbnails(_scene(), out, size=SIZE)


def _pixels(path: Path) -> npt.NDArray[np.uint8]:
    """(rows, cols, 3) uint8 sRGB, row 0 at the top of the image (SimpleITK's PNG order)."""
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (SIZE, SIZE)
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetPixelID() == sitk.sitkVectorUInt8
    return sitk.GetArrayFromImage(image)


def _chroma(rgb: npt.ArrayLike) -> npt.NDArray[np.float64]:
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb / np.maximum(rgb.max(axis=-1, keepdims=True), 1e-9)


def _srgb(linear: float) -> float:
    return 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055


def _mask(pixels: npt.NDArray[np.uint8], rgba: tuple[float, ...]) -> npt.NDArray[np.bool_]:
    """Lit pixels whose hue is the structure's (shading scales all channels alike)."""
    want = _chroma([_srgb(c) for c in rgba[:3]])
    near = np.abs(_chroma(pixels) - want).max(axis=-1) < 0.12
    return near & (pixels.max(axis=-1) > 60)


def _box(mask: npt.NDArray[np.bool_]) -> tuple[float, float, int, int]:
    """Centre row, centre column, height and width in pixels of a mask's bounding box."""
    rows, cols = np.nonzero(mask)
    assert rows.size > 0, "structure not found in the image"
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    return (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2, height, width


def test_writes_three_rgb_pngs_of_the_requested_size(rendered: list[Path]) -> None:
    assert [p.name for p in rendered] == ["front.png", "side.png", "top.png"]
    # Atomic writes leave no temporary file beside the thumbnails.
    assert sorted(p.name for p in rendered[0].parent.iterdir()) == [p.name for p in rendered]
    for path in rendered:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _pixels(path)


@pytest.mark.parametrize("view", ["front", "side", "top"])
def test_background_and_both_colours(rendered: list[Path], view: str) -> None:
    pixels = _pixels(rendered[0].parent / f"{view}.png")
    background = np.round(np.array(BACKGROUND) * 255)
    for corner in (pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]):
        np.testing.assert_allclose(corner, background, atol=2)
    assert _mask(pixels, BALL_RGBA).sum() > 1000
    assert _mask(pixels, BAR_RGBA).sum() > 1000
    # Shaded, not flat: the lit ball spans a range of brightness (edge pixels, blended
    # with the background by anti-aliasing, are fewer than a tenth of it).
    ball = pixels[_mask(pixels, BALL_RGBA)].max(axis=-1)
    assert np.percentile(ball, 90) - np.percentile(ball, 10) > 40


@pytest.mark.parametrize(
    ("view", "ball_right_of_bar", "ball_above_bar_centre", "bar_tall"),
    [
        # From Anterior: patient Left on the image right, Superior up.
        ("front", True, True, True),
        # From patient Left: Anterior on the image left, Superior up.
        ("side", False, True, True),
        # From Superior: Anterior up, patient Left on the image left.
        ("top", False, True, False),
    ],
)
def test_views_are_oriented_as_documented(
    rendered: list[Path],
    view: str,
    ball_right_of_bar: bool,
    ball_above_bar_centre: bool,
    bar_tall: bool,
) -> None:
    pixels = _pixels(rendered[0].parent / f"{view}.png")
    bar_row, bar_col, bar_h, bar_w = _box(_mask(pixels, BAR_RGBA))
    ball_row, ball_col, _, _ = _box(_mask(pixels, BALL_RGBA))
    assert (ball_col > bar_col) == ball_right_of_bar
    assert (ball_row < bar_row) == ball_above_bar_centre
    if bar_tall:
        assert bar_h > 4 * bar_w
        # Fitted: the 160 mm bar is the model's longest side and nearly fills the height.
        assert bar_h > 0.85 * SIZE
    else:
        assert 0.7 < bar_h / bar_w < 1.4


@pytest.mark.parametrize("name", thumbnails._BACKENDS)
def test_each_backend_renders(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # EGL is the one in use; OSMesa (libosmesa6) is the fallback and must work too.
    reason = thumbnails._probe(name)
    if reason is not None:
        _needs(f"{name}: {reason}")
    monkeypatch.setattr(thumbnails, "_BACKENDS", (name,))
    monkeypatch.setattr(thumbnails, "_backend", None)
    front, *_ = render_thumbnails(_scene(), tmp_path, size=64)
    assert thumbnails._backend == name
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(front)))
    assert pixels.shape == (64, 64, 3)
    assert _mask(pixels, BALL_RGBA).sum() > 20
    assert _mask(pixels, BAR_RGBA).sum() > 20


def test_missing_egl_raises_a_pipeline_error_naming_the_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An EGL with no vendor library is what a machine without libegl-mesa0 has; VTK
    # segfaults on it, which the probe must turn into an error in this process.
    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_FILENAMES", str(tmp_path / "none.json"))
    monkeypatch.setattr(thumbnails, "_BACKENDS", ("vtkEGLRenderWindow",))
    monkeypatch.setattr(thumbnails, "_backend", None)
    with pytest.raises(PipelineError) as caught:
        render_thumbnails(_scene(), tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "libegl1" in message
    assert "libgl1-mesa-dri" in message
    assert list(tmp_path.iterdir()) == []


def test_write_failure_raises_pipeline_error(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def full_disk(target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(thumbnails, "atomic_path", full_disk)
    with pytest.raises(PipelineError, match=r"front\.png .*No space left"):
        render_thumbnails(_scene(), tmp_path, size=32)


@pytest.mark.parametrize(
    ("meshes", "folder", "size"),
    [
        ([], "exists", 512),
        ([("empty", trimesh.Trimesh(), (1.0, 1.0, 1.0, 1.0))], "exists", 512),
        (_scene(), "missing", 512),
        (_scene(), "exists", 8),
    ],
    ids=["no-structures", "no-triangles", "no-folder", "too-small"],
)
def test_bad_arguments_raise_pipeline_error(
    meshes: list[tuple[str, trimesh.Trimesh, tuple[float, float, float, float]]],
    folder: str,
    size: int,
    tmp_path: Path,
) -> None:
    out = tmp_path if folder == "exists" else tmp_path / "missing"
    with pytest.raises(PipelineError):
        render_thumbnails(meshes, out, size=size)
