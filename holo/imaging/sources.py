"""Turn what a user points at (folders, zips, file lists) into a list of files to index.

Zips are extracted into a private temporary folder (in a scratch folder the caller names: a
server's is in its data folder), with guards against decompression bombs and member names
that would escape the folder ("zip slip"), because uploads come from outside. Reading only
headers (:func:`iter_inputs`) inflates one member at a time.

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
from collections.abc import Generator, Iterator, Sequence
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
    "iter_inputs",
    "set_default_zip_limits",
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


@dataclass(frozen=True)
class ZipLimits:
    """Limits applied when extracting an uploaded zip; checked on the archive's directory
    before anything is written, and again on every member as it is inflated.

    ``max_total_bytes`` bounds what a zip may expand to: 4 GiB holds the largest CT
    studies sent for surgical planning (2,000 slices of 512 x 512 x 16 bit are 1 GiB) four
    times over, and is what one conversion may take of the server's disk (the job
    extracts the zip once, into its scratch folder). A bomb of ratio 88 once expanded to
    8 GiB, twice, in the system temp folder under the earlier 8 GiB bound.
    """

    max_total_bytes: int = 4 << 30
    max_members: int = 100_000
    max_ratio: float = 200.0  # uncompressed / compressed; DICOM rarely exceeds ~10


#: The limits :func:`expand_inputs` and :func:`iter_inputs` apply when given none; a
#: conversion worker process sets its server's (:func:`set_default_zip_limits`).
_default_limits = ZipLimits()


def set_default_zip_limits(limits: ZipLimits) -> None:
    """Set the limits this process applies when none are given (a worker's server's)."""
    global _default_limits
    _default_limits = limits


def is_volume_file(path: Path) -> bool:
    """True for NIfTI, NRRD and MetaImage files, which bypass DICOM indexing."""
    name = path.name.lower()
    return any(name.endswith(s) for s in VOLUME_FILE_SUFFIXES)


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _open_zip(named: NamedFile, limits: ZipLimits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """Open a zip and check its directory against ``limits`` (nothing is written yet)."""
    archive = named.name  # as messages name it
    try:
        zf = zipfile.ZipFile(named.path)
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError) as err:
        # NotImplementedError: a directory entry needing a newer zip version than
        # zipfile's; ValueError: a member name flagged UTF-8 that is not UTF-8 (and more).
        # Not an OSError's text: it names the path, a server's scratch or blob path.
        reason = "cannot be opened" if isinstance(err, OSError) else str(err)
        raise StudyError(
            f"{archive}: not a readable zip archive ({reason}); re-create the archive or "
            "upload the folder instead",
            path=named.path,
        ) from err
    try:
        # Not ZipInfo.is_dir(): it raises IndexError on a member with an empty name.
        members = [m for m in zf.infolist() if not m.filename.endswith("/")]
        if len(members) > limits.max_members:
            raise StudyError(
                f"{archive}: {len(members)} files in the zip exceed the limit of "
                f"{limits.max_members}; split the study into several uploads",
                path=named.path,
            )
        total = sum(m.file_size for m in members)
        packed = max(1, sum(m.compress_size for m in members))
        if total > limits.max_total_bytes:
            raise StudyError(
                f"{archive}: the zip expands to {total} bytes, over the limit of "
                f"{limits.max_total_bytes}; split the study into several uploads",
                path=named.path,
            )
        if total / packed > limits.max_ratio:
            raise StudyError(
                f"{archive}: the zip expands to {total} bytes from {packed} "
                f"(ratio {total / packed:.0f}); refused as a possible decompression bomb, "
                "upload the files uncompressed",
                path=named.path,
            )
        for member in members:
            # Checked on names alone: nothing is written under a name (or a numbered
            # folder, below) that came from the archive.
            if PurePath(member.filename).is_absolute() or ".." in PurePath(member.filename).parts:
                raise StudyError(
                    f"{archive}: member {member.filename!r} points outside the archive; "
                    "refusing to extract it",
                    path=named.path,
                )
    except BaseException:
        zf.close()
        raise
    return zf, members


#: What reading a member of a damaged archive raises: CRC errors, encrypted members,
#: unsupported compression, cut-off data; an OSError from seeking to a local header at a
#: negative offset (the central directory says where it is).
_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    EOFError,
    OSError,
)


def _unextractable(named: NamedFile, member: zipfile.ZipInfo, err: Exception) -> StudyError:
    # An OSError's text could name a path; its strerror does not.
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return StudyError(
        f"{named.name}: member {member.filename!r} cannot be extracted ({reason}); "
        "re-create the archive without encryption, or upload the folder",
        path=named.path,
    )


def _extract_member(
    named: NamedFile, zf: zipfile.ZipFile, member: zipfile.ZipInfo, out: Path
) -> NamedFile:
    """Inflate one checked member to ``out``; named ``<archive name>/<member>``."""
    archive = named.name
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        src = zf.open(member)
    except _MEMBER_ERRORS as err:
        raise _unextractable(named, member, err) from err
    # Errors writing ``out`` (a full disk) are not the archive's and pass through.
    with src, open(out, "wb") as dst:
        while True:
            try:
                chunk = src.read(1 << 20)
            except _MEMBER_ERRORS as err:
                raise _unextractable(named, member, err) from err
            if not chunk:
                break
            written += len(chunk)
            if written > member.file_size:  # header lied about the size
                raise StudyError(
                    f"{archive}: member {member.filename!r} is larger than its "
                    "header says; the archive is corrupt or malicious",
                    path=named.path,
                )
            dst.write(chunk)
    return NamedFile(out, f"{archive}/{member.filename}")


#: Longest member file name written as it is (bytes): Linux allows 255 per name.
_MAX_NAME_BYTES = 200


def _disk_name(filename: str) -> str:
    """The file name a member is inflated under: its own (readers look at suffixes such as
    ``.nii.gz``), or ``member`` with its volume suffix when the name is empty (``.``) or
    too long for the file system (ENAMETOOLONG named the scratch path in the message)."""
    name = PurePath(filename).name
    if name and len(os.fsencode(name)) <= _MAX_NAME_BYTES:
        return name
    lowered = name.lower()
    return "member" + next((s for s in VOLUME_FILE_SUFFIXES if lowered.endswith(s)), "")


def _extract_zip(named: NamedFile, target: Path, limits: ZipLimits) -> list[NamedFile]:
    """Extract a zip under ``target``; its members, named ``<archive name>/<member>``."""
    zf, members = _open_zip(named, limits)
    with zf:
        # Each member under a numbered folder: two members whose names differ only by
        # case or normalisation cannot collide on disk (messages use the member's name).
        return [
            _extract_member(named, zf, m, target / f"{i:06d}" / _disk_name(m.filename))
            for i, m in enumerate(members)
        ]


def _is_zip(named: NamedFile) -> bool:
    return named.name.lower().endswith(".zip") or zipfile.is_zipfile(named.path)


def _scratch(scratch: Path | None) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="holo-zip-", dir=scratch)


def iter_inputs(
    inputs: Inputs, *, limits: ZipLimits | None = None, scratch: Path | None = None
) -> Generator[NamedFile, None, None]:
    """The files behind ``inputs`` one at a time, for reading headers: a zip's members are
    inflated one by one, each deleted when the next is asked for, so indexing a zip never
    holds more of it on disk than its largest member (the whole archive is extracted once,
    by the conversion that reads its pixels). Close the iterator when stopping early.

    ``scratch`` is the folder members are inflated in (default the system's temporary
    folder; a server passes its data folder's scratch space).
    """
    limits = limits or _default_limits
    count = 0
    for item in _items(inputs):
        named = item if isinstance(item, NamedFile) else NamedFile(Path(item), str(item))
        _check_exists(named)
        if named.path.is_dir():
            for p in _walk(named.path):
                count += 1
                yield NamedFile(p, str(p))
        elif _is_zip(named):
            zf, members = _open_zip(named, limits)
            with zf, _scratch(scratch) as tmp:
                for i, member in enumerate(members):
                    out = Path(tmp) / f"{i:06d}" / _disk_name(member.filename)
                    count += 1
                    yield _extract_member(named, zf, member, out)
                    out.unlink(missing_ok=True)
                    out.parent.rmdir()
        else:
            count += 1
            yield named
    if not count:
        raise _no_files(inputs)


def _check_exists(named: NamedFile) -> None:
    if not named.path.exists():
        raise StudyError(f"{named.name}: no such file or folder; check the path", path=named.path)


def _no_files(inputs: Inputs) -> StudyError:
    items = _items(inputs)
    return StudyError(
        f"{input_name(inputs)}: no files found; point at a folder, zip or files of a DICOM study",
        path=items[0].path if isinstance(items[0], NamedFile) else Path(items[0]),
    )


@contextmanager
def expand_inputs(
    inputs: Inputs, *, limits: ZipLimits | None = None, scratch: Path | None = None
) -> Iterator[list[NamedFile]]:
    """Yield the files behind ``inputs``: folders walked recursively, zips extracted.

    Parameters
    ----------
    inputs
        A path, a :class:`NamedFile`, or a list of them; each a file, a folder or a zip
        (recognised by its name ending ``.zip`` or by its content).
    limits
        What a zip may expand to (default :class:`ZipLimits`, or the process's default).
    scratch
        The folder zips are extracted in (default the system's temporary folder).

    Yields
    ------
    list of NamedFile
        Regular files, sorted per input. Extracted zip members live in a temporary folder
        that is removed when the context exits, so read pixel data inside the context.
    """
    items = _items(inputs)
    if not items:
        raise StudyError("no input given; name a folder, zip or DICOM files")
    limits = limits or _default_limits
    files: list[NamedFile] = []
    with ExitStack() as stack:
        for item in items:
            named = item if isinstance(item, NamedFile) else NamedFile(Path(item), str(item))
            _check_exists(named)
            if named.path.is_dir():
                files.extend(NamedFile(p, str(p)) for p in _walk(named.path))
            elif _is_zip(named):
                tmp = Path(stack.enter_context(_scratch(scratch)))
                files.extend(_extract_zip(named, tmp, limits))
            else:
                files.append(named)
        if not files:
            raise _no_files(inputs)
        yield files
