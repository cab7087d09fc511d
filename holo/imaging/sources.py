"""Turn what a user points at (folders, zips, file lists) into a list of files to index.

Zips are extracted into a private temporary folder, with guards against decompression bombs
and member names that would escape the folder ("zip slip"), because uploads come from outside.

Every file found is a :class:`NamedFile`: where it is, and the name messages give it (the
path the user gave; ``archive.zip/member`` for a zip's member; an upload's own file name
for an uploaded file the server stores by its hash), so no message names a scratch folder
or a blob.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath

from holo.errors import StudyError

__all__ = [
    "VOLUME_FILE_SUFFIXES",
    "Inputs",
    "NamedFile",
    "ZipLimits",
    "expand_inputs",
    "input_name",
    "is_volume_file",
]

logger = logging.getLogger(__name__)

#: Non-DICOM volume formats read through SimpleITK.
VOLUME_FILE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class NamedFile:
    """A file and the name messages give it (an uploaded file is stored by its hash)."""

    path: Path
    name: str

    @property
    def short_name(self) -> str:
        """The last part of the name (``CT_0001.dcm``), for messages naming several."""
        return PurePath(self.name).name


#: What the readers accept: a path, a named file, or a list of them.
Inputs = str | os.PathLike[str] | NamedFile | Sequence[str | os.PathLike[str] | NamedFile]


def input_name(inputs: Inputs) -> str:
    """How messages name ``inputs`` (the first of several, and how many more)."""
    items = _items(inputs)
    names = [i.name if isinstance(i, NamedFile) else str(i) for i in items]
    if not names:
        return "the input"
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"


def _items(inputs: Inputs) -> list[str | os.PathLike[str] | NamedFile]:
    if isinstance(inputs, (str, os.PathLike, NamedFile)):
        return [inputs]
    return list(inputs)


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


def _extract_zip(named: NamedFile, target: Path, limits: ZipLimits) -> list[NamedFile]:
    """Extract a zip under ``target``; its members, named ``<archive name>/<member>``."""
    archive = named.name  # as messages name it
    found: list[NamedFile] = []
    try:
        zf = zipfile.ZipFile(named.path)
    except (zipfile.BadZipFile, OSError) as err:
        raise StudyError(
            f"{archive}: not a readable zip archive ({err}); re-create the archive or "
            "upload the folder instead",
            path=named.path,
        ) from err
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_members:
            raise StudyError(
                f"{archive}: {len(members)} files in the zip exceed the limit of "
                f"{limits.max_members}; split the study into several uploads",
                path=named.path,
            )
        total = sum(m.file_size for m in members)
        packed = max(1, sum(m.compress_size for m in members))
        if total > limits.max_total_bytes or total / packed > limits.max_ratio:
            raise StudyError(
                f"{archive}: the zip expands to {total} bytes from {packed} "
                f"(ratio {total / packed:.0f}); refused as a possible decompression bomb, "
                "upload the files uncompressed",
                path=named.path,
            )
        root = target.resolve()
        for i, member in enumerate(members):
            dest = (target / member.filename).resolve()
            if not dest.is_relative_to(root):
                raise StudyError(
                    f"{archive}: member {member.filename!r} points outside the archive; "
                    "refusing to extract it",
                    path=named.path,
                )
            # Each member under a numbered folder: two members whose names differ only by
            # case or normalisation cannot collide on disk (messages use the member's name).
            out = target / f"{i:06d}" / Path(member.filename).name
            out.parent.mkdir(parents=True, exist_ok=True)
            found.append(NamedFile(out, f"{archive}/{member.filename}"))
            written = 0
            try:
                with zf.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > member.file_size:  # header lied about the size
                            raise StudyError(
                                f"{archive}: member {member.filename!r} is larger than its "
                                "header says; the archive is corrupt or malicious",
                                path=named.path,
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
                    path=named.path,
                ) from err
    return found


@contextmanager
def expand_inputs(inputs: Inputs, *, limits: ZipLimits | None = None) -> Iterator[list[NamedFile]]:
    """Yield the files behind ``inputs``: folders walked recursively, zips extracted.

    Parameters
    ----------
    inputs
        A path, a :class:`NamedFile`, or a list of them; each a file, a folder or a zip
        (recognised by its name ending ``.zip`` or by its content).

    Yields
    ------
    list of NamedFile
        Regular files, sorted per input. Extracted zip members live in a temporary folder
        that is removed when the context exits, so read pixel data inside the context.
    """
    items = _items(inputs)
    if not items:
        raise StudyError("no input given; name a folder, zip or DICOM files")
    limits = limits or ZipLimits()
    files: list[NamedFile] = []
    with ExitStack() as stack:
        for item in items:
            named = item if isinstance(item, NamedFile) else NamedFile(Path(item), str(item))
            path = named.path
            if not path.exists():
                raise StudyError(f"{named.name}: no such file or folder; check the path", path=path)
            if path.is_dir():
                files.extend(NamedFile(p, str(p)) for p in _walk(path))
            elif named.name.lower().endswith(".zip") or zipfile.is_zipfile(path):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="holo-zip-")))
                files.extend(_extract_zip(named, tmp, limits))
            else:
                files.append(named)
        if not files:
            raise StudyError(
                f"{input_name(inputs)}: no files found; point at a folder, zip or files of a "
                "DICOM study",
                path=items[0].path if isinstance(items[0], NamedFile) else Path(items[0]),
            )
        yield files
