"""Fuzz how an uploaded zip is opened and read (``holo.imaging.sources``): through
``summarise_study`` (the upload path: members inflated one at a time by ``iter_inputs``),
``expand_inputs`` (a conversion extracts the whole archive) and ``iter_inputs`` closed
after its first member (a reader that stops early).

Documented error: :class:`~holo.errors.StudyError`. Also checked after every call: nothing
was written outside the scratch folder, the scratch folder is empty again, every extracted
member lies inside it, and what was extracted stays within the harness's
:class:`~holo.imaging.sources.ZipLimits`.

An input is a whole zip (first byte even) or, first byte odd, members the harness packs
with :mod:`zipfile`: repeated ``[name length: 1 byte][name][data length: 2 bytes, little
endian][data]``, lengths cut to what is there (bit 1 of the first byte deflates them, else
stored). Mutating a whole zip almost always breaks its CRCs and
offsets; the packed form reaches member names (``../``, absolute, empty, ``.``) and the
readers behind the archive.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["holo"]):
    from holo.errors import StudyError
    from holo.imaging.sources import NamedFile, ZipLimits, expand_inputs, iter_inputs
    from holo.imaging.summary import summarise_study

from common import REPO, fuzz, scratch_folder, tiny_dicoms

ROOT = scratch_folder()
#: The upload sits in its own folder and members are inflated two levels down in another:
#: anything that escapes the scratch folder lands where the checks below look.
UPLOADS = ROOT / "uploads"
BOX = ROOT / "box"
SCRATCH = BOX / "scratch"
UPLOAD = NamedFile(UPLOADS / "upload.zip", "upload.zip")
#: Small limits, so a blow-up shows within an input: a 64 KB input at ratio 200 is 12.5 MiB.
LIMITS = ZipLimits(max_total_bytes=16 << 20, max_members=64, max_ratio=200.0)


def _archive(data: bytes) -> bytes:
    if not data or not data[0] & 1:
        return data[1:]
    method = zipfile.ZIP_DEFLATED if data[0] & 2 else zipfile.ZIP_STORED
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        at = 1
        while at < len(data):
            name = data[at + 1 : at + 1 + data[at]]
            at += 1 + data[at]
            size = int.from_bytes(data[at : at + 2], "little")
            content = data[at + 2 : at + 2 + size]
            at += 2 + size
            # zipfile cuts a name at its first NUL and cannot write an empty one (a raw
            # zip can hold one: the whole-zip form reaches it).
            if name := name.split(b"\0")[0]:
                zf.writestr(name.decode("utf-8", "replace"), content)
    return out.getvalue()


def _check_clean() -> None:
    escaped = sorted({*os.listdir(UPLOADS)} - {"upload.zip"} | {*os.listdir(BOX)} - {"scratch"})
    assert not escaped, f"written outside the scratch folder: {escaped}"
    left = os.listdir(SCRATCH)
    assert not left, f"left in the scratch folder: {left}"


def _inside(path: Path) -> bool:
    return path.resolve().is_relative_to(SCRATCH.resolve())


def test_one_input(data: bytes) -> None:
    for folder in (UPLOADS, SCRATCH):
        folder.mkdir(parents=True, exist_ok=True)
    UPLOAD.path.write_bytes(_archive(data))
    with contextlib.suppress(StudyError):
        summarise_study([UPLOAD], salt="fuzz", limits=LIMITS, scratch=SCRATCH)
    _check_clean()
    try:
        with expand_inputs(UPLOAD, limits=LIMITS, scratch=SCRATCH) as files:
            total = 0
            for named in files:
                assert _inside(named.path), f"{named.name!r} extracted to {named.path}"
                total += named.path.stat().st_size
            assert len(files) <= LIMITS.max_members, f"{len(files)} members extracted"
            assert total <= LIMITS.max_total_bytes, f"{total} bytes extracted"
    except StudyError:
        pass
    _check_clean()
    members = iter_inputs(UPLOAD, limits=LIMITS, scratch=SCRATCH)
    try:
        first = next(members)
        assert _inside(first.path), f"{first.name!r} inflated to {first.path}"
    except StudyError:
        pass
    finally:
        members.close()
    _check_clean()


def _packed(members: dict[str, bytes], *, deflate: bool = True) -> bytes:
    """A seed in the packed form."""
    body = b"".join(
        bytes([len(name.encode())]) + name.encode() + len(content).to_bytes(2, "little") + content
        for name, content in members.items()
    )
    return bytes([3 if deflate else 1]) + body


def _zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return b"\0" + out.getvalue()


def write_seeds(folder: Path) -> None:
    knee = sorted((REPO / "sample_data" / "knee_ct").glob("CT_*.dcm"))
    tiny = tiny_dicoms()
    if knee:
        # Two slices: a CT slice of 35 KB deflates only to ~29 KB (noise in the pixels).
        slices = {f"knee/{p.name}": p.read_bytes() for p in knee[:2]}
        first = dict(list(slices.items())[:1])
        (folder / "knee_two.zip").write_bytes(_zipped(slices))
        (folder / "knee_one_stored.zip").write_bytes(_zipped(first, zipfile.ZIP_STORED))
        (folder / "knee_one.packed").write_bytes(_packed(first))
    (folder / "tiny.zip").write_bytes(_zipped(tiny))
    (folder / "tiny_stored.zip").write_bytes(_zipped(tiny, zipfile.ZIP_STORED))
    (folder / "tiny.packed").write_bytes(_packed(tiny))
    (folder / "names.packed").write_bytes(
        _packed(
            {
                "a/b/ct.dcm": tiny["ct.dcm"],
                "A/B/CT.DCM": tiny["ct.dcm"],
                "dir/": b"",
                "empty.dcm": b"",
                "readme.txt": b"not DICOM",
            },
            deflate=False,
        )
    )
    # A zip in a zip, and an empty archive.
    (folder / "nested.zip").write_bytes(_zipped({"inner.zip": _zipped(tiny)[1:]}))
    (folder / "empty.zip").write_bytes(_zipped({}))


if __name__ == "__main__":
    shutil.rmtree(SCRATCH, ignore_errors=True)
    fuzz(test_one_input, write_seeds)
