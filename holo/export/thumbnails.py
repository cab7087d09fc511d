"""Off-screen PNG thumbnails of a model (front, side, top) for a look without a headset.

Rendering is VTK's OpenGL pipeline without any window system: VTK's Linux wheel picks its
GL context at run time (X, then EGL, then OSMesa) and *segfaults* on the first render when
none of them can be made, so this module

* never asks for X (a headless server has none; VTK would try it first and log a
  warning): it instantiates ``vtkEGLRenderWindow`` or ``vtkOSOpenGLRenderWindow`` itself;
* probes each candidate once per process in a child Python (a crash there costs a return
  code, not the caller's process) and renders in-process only with one that drew a pixel.

On Debian the software (llvmpipe) EGL comes from ``libegl1 libegl-mesa0 libgl1-mesa-dri``;
OSMesa from ``libosmesa6`` is the fallback. No GPU and no display are needed.

Besides ``holo.meshing.surface`` this is the one module that imports VTK classes (an
exception to STYLE.md's single VTK module, for rendering only), all from ``vtkmodules``.
"""

from __future__ import annotations

from holo.extras import need

need("convert", "vtkmodules", feature="thumbnails")

import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trimesh
from vtkmodules.util.numpy_support import numpy_to_vtk
from vtkmodules.vtkCommonDataModel import vtkPolyData
from vtkmodules.vtkIOImage import vtkPNGWriter
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkLight,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkWindowToImageFilter,
)
from vtkmodules.vtkRenderingOpenGL2 import (
    vtkEGLRenderWindow,
    vtkOpenGLRenderWindow,
    vtkOSOpenGLRenderWindow,
)

from holo.atomic import atomic_path
from holo.errors import PipelineError
from holo.meshing.surface import to_polydata

__all__ = ["BACKGROUND", "offscreen_backend", "render_thumbnails"]

logger = logging.getLogger(__name__)

#: Background of every thumbnail, sRGB 0..1: a neutral dark grey (bone ivory stands out,
#: and it is not black, so an empty render is told apart from a failed one).
BACKGROUND: tuple[float, float, float] = (0.12, 0.12, 0.12)


@dataclass(frozen=True)
class _View:
    """A camera direction in patient LPS (unit vectors; +x Left, +y Posterior, +z Superior)."""

    look: tuple[float, float, float]  # direction the camera looks along
    up: tuple[float, float, float]  # patient direction that is up in the image


#: The thumbnails, by file stem. Image right = ``look x up``:
#: front: look +P, up +S -> right = +L: patient right on image left (radiological);
#: side: from patient Left, look -L, up +S -> right = +P: anterior on the image left;
#: top: from Superior, look -S, up -P (anterior) -> right = -L: patient right on image
#: right (as seen from above, the opposite of an axial CT slice, which is seen from below).
_VIEWS: dict[str, _View] = {
    "front": _View(look=(0.0, 1.0, 0.0), up=(0.0, 0.0, 1.0)),
    "side": _View(look=(-1.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)),
    "top": _View(look=(0.0, 0.0, -1.0), up=(0.0, -1.0, 0.0)),
}

#: Render-window classes tried in order. EGL first: it is what Mesa keeps developing
#: (OSMesa was removed in Mesa 25.1); OSMesa covers a machine whose EGL is broken.
_BACKENDS: tuple[str, ...] = ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow")
_WINDOW_CLASSES: dict[str, type[vtkOpenGLRenderWindow]] = {
    "vtkEGLRenderWindow": vtkEGLRenderWindow,
    "vtkOSOpenGLRenderWindow": vtkOSOpenGLRenderWindow,
}
_LABELS = {"vtkEGLRenderWindow": "EGL", "vtkOSOpenGLRenderWindow": "OSMesa"}
_INSTALL_HINT = (
    "install the Debian packages libegl1 libegl-mesa0 libgl1-mesa-dri "
    "(software EGL; or libosmesa6 for OSMesa)"
)
_PROBE_TIMEOUT_S = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MARGIN = 1.08  # the model fills 1/1.08 of the image along its longer side

# Draws an unlit white square over a black 8x8 window with the given class and checks the
# centre pixel came out lit, so a context that opens but cannot draw also counts as failed.
_PROBE = """
import sys
import vtkmodules.vtkRenderingOpenGL2 as gl
from vtkmodules.vtkFiltersSources import vtkPlaneSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper, vtkRenderer
from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter
window = getattr(gl, sys.argv[1])()
window.SetOffScreenRendering(1)
window.SetSize(8, 8)
renderer = vtkRenderer()
renderer.SetBackground(0, 0, 0)
window.AddRenderer(renderer)
plane = vtkPlaneSource()
mapper = vtkPolyDataMapper()
mapper.SetInputConnection(plane.GetOutputPort())
actor = vtkActor()
actor.SetMapper(mapper)
actor.GetProperty().LightingOff()
renderer.AddActor(actor)
renderer.ResetCamera()
window.Render()
grab = vtkWindowToImageFilter()
grab.SetInput(window)
grab.ReadFrontBufferOff()
grab.Update()
if grab.GetOutput().GetScalarComponentAsDouble(4, 4, 0, 0) < 128:
    sys.exit("rendered nothing")
info = [s for s in window.ReportCapabilities().splitlines() if "renderer string" in s]
print("ok", info[0].split(":", 1)[1].strip() if info else "")
"""

_lock = threading.Lock()  # one GL context at a time; also guards the cached backend
_backend: str | None = None


def _probe(name: str) -> str | None:
    """Render once with window class ``name`` in a child process; ``None`` if it works."""
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-c", _PROBE, name],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"hung for {_PROBE_TIMEOUT_S:.0f} s"
    except OSError as err:
        return f"could not start {sys.executable}: {err}"
    if done.returncode == 0 and done.stdout.startswith("ok"):
        logger.info("off-screen rendering with %s: %s", name, done.stdout[3:].strip())
        return None
    # VTK logs why before it crashes ("libOSMesa not found", "Could not initialize a
    # device"); keep its last line, without colour codes and the log prefix.
    lines = [_ANSI.sub("", s).rsplit("| ", 1)[-1].strip() for s in done.stderr.splitlines()]
    last = next((s for s in reversed(lines) if s), "")
    said = f": {last[:77]}..." if len(last) > 80 else f": {last}" if last else ""
    if done.returncode < 0:
        return f"crashed ({signal.Signals(-done.returncode).name}){said}"
    return f"exit {done.returncode}{said}"


def offscreen_backend() -> str:
    """Find the VTK render-window class that draws off-screen here, once per process.

    Each candidate (EGL, then OSMesa) is tried in a child Python, so a missing library
    crashes the child and not this process. Only success is cached: a server whose
    packages get installed later recovers without a restart.

    Returns
    -------
    str
        ``"vtkEGLRenderWindow"`` or ``"vtkOSOpenGLRenderWindow"``.

    Raises
    ------
    PipelineError
        No candidate drew a pixel; the message says why for each and what to install.
    """
    with _lock:
        return _select_backend()


def _select_backend() -> str:
    """:func:`offscreen_backend` for a caller that holds :data:`_lock`."""
    global _backend
    if _backend is None:
        failures = []
        for name in _BACKENDS:
            reason = _probe(name)
            if reason is None:
                _backend = name
                break
            failures.append(f"{_LABELS.get(name, name)} {reason}")
        else:
            raise PipelineError(
                f"off-screen rendering is not available ({'; '.join(failures)}): {_INSTALL_HINT}"
            )
    return _backend


def _srgb_from_linear(c: float) -> float:
    """IEC 61966-2-1 transfer function: glTF colours are linear, PNG pixels are sRGB."""
    c = min(max(c, 0.0), 1.0)
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def _polydata(mesh: trimesh.Trimesh) -> vtkPolyData:
    """A vtkPolyData of the mesh (LPS mm, unchanged) with smooth per-vertex normals."""
    poly = to_polydata(mesh)
    # Without normals VTK shades each facet flat, which shows every decimation triangle.
    normals = numpy_to_vtk(np.ascontiguousarray(mesh.vertex_normals, dtype=np.float32), deep=True)
    normals.SetName("Normals")
    poly.GetPointData().SetNormals(normals)
    return poly


def _bounds(
    meshes: Sequence[tuple[str, trimesh.Trimesh, tuple[float, float, float, float]]],
) -> npt.NDArray[np.float64]:
    """(2, 3) LPS mm: min and max corner of all structures together."""
    boxes = np.array([mesh.bounds for _, mesh, _ in meshes], dtype=np.float64)
    return np.stack([boxes[:, 0].min(axis=0), boxes[:, 1].max(axis=0)])


def _place_camera(renderer: vtkRenderer, view: _View, bounds: npt.NDArray[np.float64]) -> None:
    """Parallel projection looking along ``view.look``, fitted to the bounding box."""
    look, up = np.array(view.look), np.array(view.up)
    right = np.cross(look, up)
    centre = bounds.mean(axis=0)
    extent = bounds[1] - bounds[0]
    diagonal = max(float(np.linalg.norm(extent)), 1.0)
    # The box's extent along the image's right and up axes (the view axes are patient axes).
    width, height = float(abs(right) @ extent), float(abs(up) @ extent)
    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre - look * 2.0 * diagonal))
    camera.SetViewUp(*up)
    # ParallelScale is half the image height in world units; the image is square.
    camera.SetParallelScale(0.5 * _MARGIN * max(width, height, 1.0))
    camera.SetClippingRange(diagonal, 3.0 * diagonal)


def _add_lights(renderer: vtkRenderer) -> None:
    """A key light above and left of the camera plus a weaker headlight that fills shadows."""
    key = vtkLight()
    key.SetLightTypeToCameraLight()  # position in camera coordinates: x right, y up, z back
    key.SetPosition(-1.0, 1.0, 1.0)
    key.SetFocalPoint(0.0, 0.0, 0.0)
    key.SetIntensity(0.75)
    fill = vtkLight()
    fill.SetLightTypeToHeadlight()
    fill.SetIntensity(0.45)
    renderer.AddLight(key)
    renderer.AddLight(fill)


def render_thumbnails(
    meshes: Sequence[tuple[str, trimesh.Trimesh, tuple[float, float, float, float]]],
    out_dir: Path,
    *,
    size: int = 512,
) -> list[Path]:
    """Render the model off-screen from the front, the side and the top as PNG files.

    Parameters
    ----------
    meshes
        ``(name, mesh, rgba)`` per structure. Vertices in patient LPS millimetres (+x
        Left, +y Posterior, +z Superior); ``rgba`` linear 0..1 as in the glTF material
        (converted to sRGB for the image; alpha < 1 is drawn translucent).
    out_dir
        Existing folder; ``front.png``, ``side.png`` and ``top.png`` in it are replaced
        atomically (temporary file in the same folder, then :func:`os.replace`).
    size
        Width and height of each image in pixels.

    Returns
    -------
    list of pathlib.Path
        ``[front.png, side.png, top.png]``: 8-bit RGB, ``size`` x ``size``, shaded, on
        :data:`BACKGROUND`, parallel projection fitted to the model's bounding box:

        * front: seen from Anterior; Superior up, patient Right on the image left;
        * side: seen from patient Left; Superior up, Anterior on the image left;
        * top: seen from Superior; Anterior up, patient Right on the image right.

    Raises
    ------
    PipelineError
        No structure has a triangle, ``size`` is below 16, ``out_dir`` is missing or not
        writable, or no off-screen OpenGL context can be made (the message names the
        Debian packages to install).

    Notes
    -----
    The first call in a process spends under a second probing the OpenGL back end in a
    child process (:func:`offscreen_backend`). Calls are serialised by a lock. VTK's wheel
    releases the GIL inside its calls (a Python thread kept running through ``Render``),
    so a worker thread keeps an event loop responsive; llvmpipe itself uses every core.
    Lighting is applied to the sRGB colour, an approximation of a glTF viewer's linear
    shading that is close enough for a preview.
    """
    out_dir = Path(out_dir)
    drawn = [(name, mesh, rgba) for name, mesh, rgba in meshes if len(mesh.faces) > 0]
    if not drawn:
        raise PipelineError(f"no triangles to render thumbnails of into {out_dir}")
    if size < 16:
        raise PipelineError(f"thumbnail size {size} px is too small; use at least 16")
    if not out_dir.is_dir():
        raise PipelineError(f"thumbnail folder {out_dir} does not exist; create it first")
    with _lock:
        backend = _select_backend()
        start = time.perf_counter()
        paths = _render(drawn, out_dir, size, _WINDOW_CLASSES[backend]())
    logger.debug(
        "%d thumbnails of %d triangles in %.2f s",
        len(paths),
        sum(len(mesh.faces) for _, mesh, _ in drawn),
        time.perf_counter() - start,
    )
    return paths


def _render(
    meshes: Sequence[tuple[str, trimesh.Trimesh, tuple[float, float, float, float]]],
    out_dir: Path,
    size: int,
    window: vtkOpenGLRenderWindow,
) -> list[Path]:
    window.SetOffScreenRendering(1)
    window.SetSize(size, size)
    # FXAA smooths edges at about 1/5 of the cost of 4x MSAA on llvmpipe (0.4 s vs 0.9 s for
    # three 512 px views of 100k triangles, where no anti-aliasing takes 0.35 s).
    window.SetMultiSamples(0)
    renderer = vtkRenderer()
    renderer.SetUseFXAA(True)
    renderer.SetBackground(*BACKGROUND)
    renderer.AutomaticLightCreationOff()
    _add_lights(renderer)
    window.AddRenderer(renderer)
    translucent = False
    for _, mesh, rgba in meshes:
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(_polydata(mesh))
        mapper.ScalarVisibilityOff()
        actor = vtkActor()
        actor.SetMapper(mapper)
        prop = actor.GetProperty()
        prop.SetColor(*(_srgb_from_linear(c) for c in rgba[:3]))
        prop.SetOpacity(rgba[3])
        prop.SetAmbient(0.15)
        prop.SetDiffuse(0.85)
        prop.SetSpecular(0.15)
        prop.SetSpecularPower(20.0)
        renderer.AddActor(actor)
        translucent = translucent or rgba[3] < 1.0
    if translucent:
        renderer.SetUseDepthPeeling(True)  # order-independent translucency (skin over bone)
    bounds = _bounds(meshes)
    paths = []
    try:
        for stem, view in _VIEWS.items():
            _place_camera(renderer, view, bounds)
            window.Render()
            grab = vtkWindowToImageFilter()
            grab.SetInput(window)
            grab.SetInputBufferTypeToRGB()
            grab.ReadFrontBufferOff()
            grab.Update()
            target = out_dir / f"{stem}.png"
            try:
                with atomic_path(target) as tmp:
                    writer = vtkPNGWriter()
                    writer.SetInputData(grab.GetOutput())
                    writer.SetFileName(str(tmp))
                    writer.Write()
                    if writer.GetErrorCode() != 0:  # VTK reports, it does not raise
                        raise OSError(f"vtkPNGWriter error {writer.GetErrorCode()}")
            except OSError as err:
                raise PipelineError(
                    f"could not write thumbnail {target} ({err}); "
                    "check the folder is writable and the disk not full"
                ) from err
            paths.append(target)
    finally:
        window.Finalize()  # release the GL context now, not when Python collects it
    return paths
