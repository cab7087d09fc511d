"""Optional features and the extras that install them.

``pip install holo`` is the lean SDK and the CLI's client commands (grpcio, protobuf,
numpy). The rest comes in extras, named in ``pyproject.toml``:

=============  =======================================================================
``convert``    reading DICOM, segmentation, meshing, GLB export (pydicom, SimpleITK,
               VTK, trimesh, ...): ``holo read``, ``holo convert``, :func:`holo.convert`
``video``      video ingest and recording (PyAV / FFmpeg)
``server``     ``holo serve`` (with ``convert`` and ``video``; health, reflection, Redis)
``all``        everything
=============  =======================================================================

A module that needs an extra calls :func:`need` before importing it, so using a feature
without its extra fails with one line that names the extra, not a bare ImportError deep
in a traceback.
"""

from __future__ import annotations

import importlib.util

from holo.errors import ExtraError

__all__ = ["need"]


def need(extra: str, *modules: str, feature: str = "") -> None:
    """Raise :class:`~holo.errors.ExtraError` unless every module in ``modules`` is
    installed (``feature`` names what needs them; default: the extra's name)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ExtraError(
                f"{feature or extra} needs the optional dependency {module!r}: install the "
                f"'{extra}' extra (pip install 'holo[{extra}]')",
                extra=extra,
            )
