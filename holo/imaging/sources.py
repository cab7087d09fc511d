"""Turn what a user points at (folders, zips, file lists) into a list of files to index.

Zips are extracted into a private temporary folder, with guards against decompression bombs
and member names that would escape the folder ("zip slip"), because uploads come from outside.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from holo.errors import StudyError

__all__ = ["VOLUME_FILE_SUFFIXES", "ZipLimits", "expand_inputs", "is_volume_file"]

logger = logging.getLogger(__name__)

#: Non-DICOM volume formats read through SimpleITK.
VOLUME_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class ZipLimits:
    """Limits applied when extracting an uploaded zip.

    The defaults fit the largest CT studies a hospital sends for surgical planning (a few
    thousand slices, a few GB) while refusing archives built to exhaust the disk.
    """

    max_total_bytes: int = 8 * 1024**3
    max_members: int = 100_000
    max_ratio: float = 200.0  # uncompressed / compressed; DICOM rarely exceeds ~10


def is_volume_file(path: Path) -> bool:
    """True for NIfTI, NRRD and MetaImage files, which bypass DICOM indexing."""
    name = path.name.lower()
    return any(name.endswith(s) for s in VOLUME_FILE_SUFFIXES)


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _extract_zip(archive: Path, target: Path, limits: ZipLimits) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise StudyError(
            f"{archive}: not a readable zip archive ({err}); re-create the archive or "
            "upload the folder instead",
            path=archive,
        ) from err
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_members:
            raise StudyError(
                f"{archive}: {len(members)} files in the zip exceed the limit of "
                f"{limits.max_members}; split the study into several uploads",
                path=archive,
            )
        total = sum(m.file_size for m in members)
        packed = max(1, sum(m.compress_size for m in members))
        if total > limits.max_total_bytes or total / packed > limits.max_ratio:
            raise StudyError(
                f"{archive}: the zip expands to {total} bytes from {packed} "
                f"(ratio {total / packed:.0f}); refused as a possible decompression bomb, "
                "upload the files uncompressed",
                path=archive,
            )
        root = target.resolve()
        for i, member in enumerate(members):
            dest = (target / member.filename).resolve()
            if not dest.is_relative_to(root):
                raise StudyError(
                    f"{archive}: member {member.filename!r} points outside the archive; "
                    "refusing to extract it",
                    path=archive,
                )
            # Members keep their relative names (for messages) under a numbered folder, so
            # two members whose names differ only by case or normalisation cannot collide.
            out = target / f"{i:06d}" / Path(member.filename).name
            out.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > member.file_size:  # header lied about the size
                            raise StudyError(
                                f"{archive}: member {member.filename!r} is larger than its "
                                "header says; the archive is corrupt or malicious",
                                path=archive,
                            )
                        dst.write(chunk)
            except (
                zipfile.BadZipFile,
                RuntimeError,
                NotImplementedError,
                zlib.error,
                EOFError,
            ) as err:
                # CRC errors, encrypted members, unsupported compression, cut-off data
                raise StudyError(
                    f"{archive}: member {member.filename!r} cannot be extracted ({err}); "
                    "re-create the archive without encryption, or upload the folder",
                    path=archive,
                ) from err


@contextmanager
def expand_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    limits: ZipLimits | None = None,
) -> Iterator[list[Path]]:
    """Yield the files behind ``inputs``: folders walked recursively, zips extracted.

    Parameters
    ----------
    inputs
        A path or a list of paths; each a file, a folder or a ``.zip``.

    Yields
    ------
    list of Path
        Regular files, sorted per input. Extracted zip members live in a temporary folder
        that is removed when the context exits, so read pixel data inside the context.
    """
    items: list[str | os.PathLike[str]] = (
        [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    )
    if not items:
        raise StudyError("no input given; name a folder, zip or DICOM files")
    limits = limits or ZipLimits()
    files: list[Path] = []
    with ExitStack() as stack:
        for item in items:
            path = Path(item)
            if not path.exists():
                raise StudyError(f"{path}: no such file or folder; check the path", path=path)
            if path.is_dir():
                files.extend(_walk(path))
            elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="holo-zip-")))
                _extract_zip(path, tmp, limits)
                files.extend(_walk(tmp))
            else:
                files.append(path)
        if not files:
            raise StudyError(
                f"{', '.join(str(Path(i)) for i in items)}: no files found; point at a folder, "
                "zip or files of a DICOM study",
                path=Path(items[0]),
            )
        yield files
