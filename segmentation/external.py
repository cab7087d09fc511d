"""An external segmentation model (e.g. TotalSegmentator) behind holo's label-map contract.

The model is any program that reads a NIfTI image and writes a NIfTI label map. holo writes
the volume into a private temporary folder, runs the program (no shell) and reads the label
map back onto the volume's own grid, so what comes out is a :class:`LabelMap` exactly as the
presets make it. Nothing here is needed by holo itself: when the program is not installed
only the call that asks for it fails, with a message that says how to install it or to use
the built-in presets instead.

Patient identity never reaches the program: the NIfTI file carries voxels and geometry only
(``Volume.metadata`` is not written).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from holo.errors import PipelineError
from holo.volume import Volume
from segmentation.labelmap import LabelMap

__all__ = [
    "TOTALSEGMENTATOR",
    "TOTALSEGMENTATOR_BONES",
    "segment_external",
    "segment_totalsegmentator",
]

logger = logging.getLogger(__name__)

#: ``TotalSegmentator`` writing one multi-label NIfTI (``--ml``) for the default ``total`` task.
TOTALSEGMENTATOR = ("TotalSegmentator", "-i", "{input}", "-o", "{output}", "--ml")

#: Bone classes of TotalSegmentator 2's ``total`` task (also used by ``--fast``), only used
#: when the output carries no label table of its own (TotalSegmentator 2 writes one, see
#: :func:`_label_table`). Source: ``class_map["total"]`` in ``totalsegmentator/map_to_binary.py``
#: of github.com/wasserth/TotalSegmentator; the two stored versions of that file (commits
#: 4cb664c1507782a7e503a203cd619406fbb06abe and 0275d3046117a9615a9876e6e4eefd5156843f1c)
#: agree on every number below. They disagree on the ribs (92..115: ``rib_right_4`` at 92 in
#: one, ``rib_left_1`` in the other), so ribs are left as ``label_<n>`` here rather than named
#: wrongly; TotalSegmentator 1 (104 classes) numbered everything differently.
TOTALSEGMENTATOR_BONES: dict[int, str] = {
    25: "sacrum",
    26: "vertebrae_S1",
    **{27 + i: f"vertebrae_L{5 - i}" for i in range(5)},  # 27 L5 .. 31 L1
    **{32 + i: f"vertebrae_T{12 - i}" for i in range(12)},  # 32 T12 .. 43 T1
    **{44 + i: f"vertebrae_C{7 - i}" for i in range(7)},  # 44 C7 .. 50 C1
    69: "humerus_left",
    70: "humerus_right",
    71: "scapula_left",
    72: "scapula_right",
    73: "clavicula_left",
    74: "clavicula_right",
    75: "femur_left",
    76: "femur_right",
    77: "hip_left",
    78: "hip_right",
    91: "skull",
    116: "sternum",
    117: "costal_cartilages",
}

# Options that change which numbers TotalSegmentator writes (another task, v1 numbering):
# with any of them the built-in names above would be wrong.
_RENUMBERING_OPTIONS = ("-ta", "--task", "--v1_order")

# Grid tolerance: the same grid when the origin is within 1e-3 mm, the direction cosines
# within 1e-4 and each axis' far end within 1e-3 mm (NIfTI stores geometry as float32,
# which moves a 500 mm axis by ~3e-5 mm, well inside these).
_ORIGIN_TOL_MM = 1e-3
_DIRECTION_TOL = 1e-4

_INTEGER_PIXELS = {
    sitk.sitkUInt8,
    sitk.sitkInt8,
    sitk.sitkUInt16,
    sitk.sitkInt16,
    sitk.sitkUInt32,
    sitk.sitkInt32,
    sitk.sitkUInt64,
    sitk.sitkInt64,
}
_MAX_LABEL_TABLE_BYTES = 4 * 1024 * 1024


def segment_external(
    volume: Volume,
    command: Sequence[str],
    *,
    names: Mapping[int, str] | None = None,
    timeout_s: float = 3600,
) -> LabelMap:
    """Segment a volume with an external program that writes a NIfTI label map.

    Parameters
    ----------
    volume
        The image to segment (any units; the program decides what it accepts). Written as
        NIfTI with its exact geometry (LPS in holo, stored as RAS in the file by ITK).
    command
        The program and its arguments, run without a shell. ``{input}`` is replaced by the
        path of the NIfTI image (``.nii``) and ``{output}`` by the path where the program
        must write its label map (``.nii.gz``); ``{output}`` is required.
    names
        Label value -> structure name. Labels it does not name take their name from the
        label table the program stored in the file (TotalSegmentator's NIfTI extension),
        else ``label_<n>``.
    timeout_s
        Seconds before the program is stopped (with everything it started).

    Returns
    -------
    LabelMap
        Labels on the volume's grid, shape ``(slice, row, col)``; names only for the values
        present, in increasing order. A label map written on another grid (cropped, another
        orientation or spacing) is resampled onto the volume's grid with nearest neighbour,
        and ``source["resampled_from"]`` records the grid it came on; otherwise that entry is
        None. ``source["external"]`` is ``command[0]``.

    Raises
    ------
    PipelineError
        The program is missing, fails, times out, or writes no usable label map (missing,
        unreadable, not 3-D, not integer, nothing labelled, or outside the volume). No
        temporary file is left behind in any case.
    """
    if isinstance(command, str):
        raise TypeError("command must be a sequence of arguments, e.g. ['model', '{input}', ...]")
    command = [str(part) for part in command]
    if not command:
        raise PipelineError("external segmentation needs a command; none was given")
    program = command[0]
    if not any("{output}" in part for part in command):
        raise PipelineError(
            f"external model {program!r}: the command has no {{output}} placeholder, so holo "
            "cannot know where the label map is written; add '{output}' to its arguments"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="holo-external-") as work:
        image_path = Path(work) / "image.nii"
        output_path = Path(work) / "labels.nii.gz"
        reference = volume.to_sitk()
        sitk.WriteImage(reference, str(image_path))
        args = [
            part.replace("{input}", str(image_path)).replace("{output}", str(output_path))
            for part in command
        ]
        _run(args, program, Path(work), timeout_s)
        labels_image = _read_labels(output_path, program)
        table = _label_table(output_path)
        array, resampled_from = _on_volume_grid(labels_image, reference, program)
    present = [int(v) for v in np.unique(array) if v != 0]
    if not present:
        raise PipelineError(
            f"external model {program!r} labelled nothing in the volume (every voxel is 0, or "
            "its labels lie outside the volume); check that it suits this image"
        )
    chosen = {int(k): str(v) for k, v in (names or {}).items()}
    label_names = {
        label: chosen.get(label) or table.get(label) or f"label_{label}" for label in present
    }
    dtype = np.uint8 if present[-1] < 256 else np.uint16
    seconds = time.perf_counter() - started
    logger.info(
        "external %s: %d label(s) in %.1f s%s",
        program,
        len(present),
        seconds,
        " (resampled onto the volume's grid)" if resampled_from else "",
    )
    source: dict[str, Any] = {
        "external": program,
        "command": command,
        "seconds": round(seconds, 3),
        "resampled_from": resampled_from,
        "label_table": bool(table),
    }
    return LabelMap(
        labels=array.astype(dtype),
        affine=volume.affine.copy(),
        names=label_names,
        source=source,
    )


def segment_totalsegmentator(
    volume: Volume,
    *,
    extra_args: Sequence[str] = (),
    fast: bool = True,
    timeout_s: float = 3600,
) -> LabelMap:
    """Segment a CT volume with TotalSegmentator, when the user has it installed.

    Runs :data:`TOTALSEGMENTATOR` (the ``total`` task, one multi-label file) plus ``--fast``
    (its 3 mm model instead of 1.5 mm, which its README advises on a CPU) unless ``fast`` is
    False, plus ``extra_args`` (e.g. ``("--roi_subset", "femur_left", "femur_right")``).
    Structure names come from the label table TotalSegmentator 2 writes into its output;
    without one, the bone classes of :data:`TOTALSEGMENTATOR_BONES` are named and the rest are
    ``label_<n>``.

    Raises
    ------
    PipelineError
        TotalSegmentator is not on PATH, or it failed (see :func:`segment_external`).
    """
    if shutil.which(TOTALSEGMENTATOR[0]) is None:
        raise PipelineError(
            "TotalSegmentator is not installed (no 'TotalSegmentator' on PATH); "
            "`pip install TotalSegmentator` (it downloads its model weights on first use) "
            "or use the built-in bone preset"
        )
    extra = [str(arg) for arg in extra_args]
    command = [*TOTALSEGMENTATOR, *(["--fast"] if fast else []), *extra]
    labels = segment_external(volume, command, timeout_s=timeout_s)
    renumbered = any(arg.split("=")[0] in _RENUMBERING_OPTIONS for arg in extra)
    if labels.source["label_table"] or renumbered:
        return labels
    named = {label: TOTALSEGMENTATOR_BONES.get(label, name) for label, name in labels.names.items()}
    source = {**labels.source, "names": "holo's built-in TotalSegmentator 2 bone classes"}
    return LabelMap(labels.labels, labels.affine, named, source)


def _run(args: list[str], program: str, work: Path, timeout_s: float) -> None:
    """Run the program with its output in files (no pipe to fill), or raise PipelineError."""
    stdout_path, stderr_path = work / "stdout.log", work / "stderr.log"
    # A new session (POSIX) makes the program the leader of its own process group, so a
    # timeout stops whatever it started too (TotalSegmentator starts worker processes).
    new_session = sys.platform != "win32"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=new_session,
            )
        except FileNotFoundError as error:
            raise PipelineError(
                f"external model {program!r} was not found; install it or give its full path"
            ) from error
        except OSError as error:
            raise PipelineError(
                f"external model {program!r} could not be started ({error.strerror}); check "
                "that it is an executable program"
            ) from error
        try:
            status = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            _stop(process, new_session)
            raise PipelineError(
                f"external model {program!r} did not finish within {timeout_s:g} s and was "
                "stopped; allow more time (timeout_s) or use a faster mode"
            ) from error
        except BaseException:  # e.g. KeyboardInterrupt: never leave the model running
            _stop(process, new_session)
            raise
    if status != 0:
        reason = f"exited with status {status}" if status > 0 else f"was killed by signal {-status}"
        last = _last_line(stderr_path) or _last_line(stdout_path) or "(no output)"
        raise PipelineError(
            f"external model {program!r} {reason}: {last}; run the command by hand to see "
            "its full log"
        )


def _stop(process: subprocess.Popen[bytes], group: bool, grace_s: float = 5.0) -> None:
    """Stop the program (and its process group): SIGTERM, then SIGKILL after ``grace_s``."""
    if not group or sys.platform == "win32":
        process.kill()
        process.wait()
        return
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):  # ignored SIGTERM: SIGKILL next
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # what ignored SIGTERM, and its children
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log file (read from its end), shortened to ``limit``."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 8192))
        tail = f.read().decode("utf-8", errors="replace")
    lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_labels(path: Path, program: str) -> sitk.Image:
    """Read the program's label map and check it is a 3-D integer image."""
    if path.is_dir():
        raise PipelineError(
            f"external model {program!r} wrote a folder at {{output}}, not one label map file; "
            "make it write a single multi-label NIfTI (TotalSegmentator: --ml)"
        )
    if not path.is_file():
        raise PipelineError(
            f"external model {program!r} exited normally but wrote no label map at {{output}}; "
            "check that its command passes {output} as the output file"
        )
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise PipelineError(
            f"external model {program!r} wrote a label map that is not readable NIfTI; "
            "check its output format"
        ) from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise PipelineError(
            f"external model {program!r} wrote a vector image "
            f"({image.GetNumberOfComponentsPerPixel()} components per voxel), not a label map"
        )
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:  # (x, y, z, 1): tolerant when decoding
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise PipelineError(
            f"external model {program!r} wrote a {image.GetDimension()}-D image of size "
            f"{'x'.join(map(str, size))}; a label map must be 3-D like the volume"
        )
    if image.GetPixelID() not in _INTEGER_PIXELS:
        values = sitk.GetArrayViewFromImage(image)
        if not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
            raise PipelineError(
                f"external model {program!r} wrote non-integer values "
                f"({image.GetPixelIDTypeAsString()}); a label map holds whole label numbers"
            )
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise PipelineError(
            f"external model {program!r} wrote labels {low:.0f}..{high:.0f}; labels must be "
            "0 (background) to 65535"
        )
    return sitk.Cast(image, sitk.sitkUInt16)


def _same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    if image.GetSize() != reference.GetSize():
        return False
    origin = np.subtract(image.GetOrigin(), reference.GetOrigin())
    direction = np.subtract(image.GetDirection(), reference.GetDirection())
    far_end = np.subtract(image.GetSpacing(), reference.GetSpacing()) * np.subtract(
        reference.GetSize(), 1
    )
    return bool(
        np.abs(origin).max() <= _ORIGIN_TOL_MM
        and np.abs(direction).max() <= _DIRECTION_TOL
        and np.abs(far_end).max() <= _ORIGIN_TOL_MM
    )


def _on_volume_grid(
    labels: sitk.Image, reference: sitk.Image, program: str
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The labels as a ``(slice, row, col)`` array on the reference grid, resampled if needed.

    Nearest neighbour keeps label values whole; voxels of the volume outside the program's
    grid become 0. Returns the array and the grid it was resampled from (None if it was not).
    """
    if _same_grid(labels, reference):
        return sitk.GetArrayFromImage(labels), None
    had_labels = bool(sitk.GetArrayViewFromImage(labels).any())
    resampled = sitk.Resample(
        labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16
    )
    array = sitk.GetArrayFromImage(resampled)
    if had_labels and not array.any():
        raise PipelineError(
            f"external model {program!r} wrote its labels outside the volume's space "
            "(no labelled voxel falls inside it); check that it keeps the input's geometry"
        )
    origin = [round(float(v), 4) for v in labels.GetOrigin()]
    logger.warning(
        "external %s wrote labels on another grid (size %s, spacing %s mm); resampled onto the "
        "volume's grid with nearest neighbour",
        program,
        labels.GetSize(),
        labels.GetSpacing(),
    )
    return array, {
        "size_xyz": list(labels.GetSize()),
        "spacing_xyz_mm": [float(v) for v in labels.GetSpacing()],
        "origin_lps_mm": origin,
        "direction": [round(float(v), 6) for v in labels.GetDirection()],
    }


def _label_table(path: Path) -> dict[int, str]:
    """Label names stored in a NIfTI-1 header extension, as TotalSegmentator 2 writes them.

    TotalSegmentator (``nifti_ext_header.add_label_map_to_nifti``) appends an extension
    holding a Caret-style XML ``<LabelTable>`` of ``<Label Key="n">name</Label>`` elements.
    Anything else (no extension, NIfTI-2, other XML) gives an empty table: names are a
    courtesy, never a reason to fail.
    """
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            header = f.read(352)
            if len(header) < 352:
                return {}
            for endian in "<>":
                if struct.unpack(f"{endian}i", header[:4])[0] == 348:
                    break
            else:
                return {}  # not NIfTI-1
            if header[348] == 0:
                return {}  # no extensions
            (vox_offset,) = struct.unpack(f"{endian}f", header[108:112])
            if not vox_offset:  # a .hdr/.img pair: extensions run to the end of the header
                blob = f.read(_MAX_LABEL_TABLE_BYTES)
            elif vox_offset > 352:
                blob = f.read(min(int(vox_offset), 352 + _MAX_LABEL_TABLE_BYTES) - 352)
            else:
                return {}
    except (OSError, EOFError, struct.error):
        return {}
    table: dict[int, str] = {}
    offset = 0
    while offset + 8 <= len(blob):
        size, _code = struct.unpack(f"{endian}ii", blob[offset : offset + 8])
        if size < 8 or offset + size > len(blob):
            break
        content = blob[offset + 8 : offset + size].rstrip(b"\0 \n")
        offset += size
        if b"<LabelTable" not in content:
            continue
        try:
            root = ET.fromstring(content)
        except ET.ParseError:
            logger.debug("unreadable label table in %s", path)
            continue
        for label in root.iter("Label"):
            key, text = label.get("Key"), (label.text or "").strip()
            if key is not None and key.strip().lstrip("-").isdigit() and text:
                table[int(key)] = text
    return table
