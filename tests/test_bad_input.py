"""Malformed and awkward files: a clear one-line error naming the file, never a crash."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from holo import StudyError
from holo.cli import main
from holo.client import ClientError
from holo.imaging import deidentify_dataset, index_study, read_radiograph, read_series
from holo.imaging.index import index_files
from holo.imaging.pixels import decode_frames
from holo.testing import TestServer

MALFORMED = "malformed_and_edge_cases"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("GH177_CT1_IVRLE_BigEndian_undefined_length.dcm", "not a readable DICOM file"),
        ("no_meta.dcm", "not DICOM"),
        ("JPEG2000-embedded-sequence-delimiter.dcm", "no X-ray image"),  # NM: not ours
        ("badVR.dcm", "no X-ray image"),  # RT Dose
        ("meta_missing_tsyntax.dcm", "no X-ray image"),
        ("MR_truncated.dcm", "no CT series"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "no CT series"),
    ],
)
def test_cli_reports_one_line_and_exits_2(
    shared_data: Path, capsys: pytest.CaptureFixture[str], name: str, expected: str
) -> None:
    path = shared_data / MALFORMED / name
    assert main(["read", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("holo: error:")]
    assert len(errors) == 1, err
    assert name in errors[0] and expected in errors[0]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("JPEG2000-embedded-sequence-delimiter.dcm", "codestream is corrupt"),
        ("MR_truncated.dcm", "pixel data are truncated (8130 of 8192 bytes)"),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", "pixel data are cut off"),
        ("badVR.dcm", "Number of Frames is '1A'"),
        ("meta_missing_tsyntax.dcm", "has no Rows element"),
    ],
)
def test_damaged_pixel_data_named_when_decoded(shared_data: Path, name: str, expected: str) -> None:
    index = index_files([shared_data / MALFORMED / name])
    (series,) = index.series
    with pytest.raises(StudyError) as info:
        decode_frames(series.instances[0])
    message = str(info.value)
    assert expected in message and name in message and "\n" not in message


def test_truncated_mr_volume_read_explicitly_is_a_clear_error(shared_data: Path) -> None:
    path = shared_data / MALFORMED / "MR_truncated.dcm"
    uid = index_study(path).series[0].series_uid
    with pytest.raises(StudyError, match="pixel data are truncated"):
        read_series(path, series_uid=uid)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("CT_small.dcm", (1, 128, 128)),
        ("bad_sequence.dcm", (1, 512, 512)),
        ("explicit_VR-UN.dcm", (1, 512, 512)),
    ],
)
def test_awkward_but_valid_ct_slices_read(
    shared_data: Path, name: str, shape: tuple[int, ...]
) -> None:
    volume = read_series(shared_data / MALFORMED / name)
    assert volume.shape == shape
    assert volume.array.min() < -800 and volume.array.max() > 500  # air and bone


def test_headerless_cr_reads_as_radiograph(shared_data: Path) -> None:
    image = read_radiograph(shared_data / MALFORMED / "CR-MONO1-10-chest_no_meta")
    assert image.pixels.shape == (440, 440)
    assert image.photometric == "MONOCHROME1"


def test_folder_of_bad_files_still_indexes_the_good_ones(shared_data: Path) -> None:
    index = index_study(shared_data / MALFORMED)
    skipped = {f.short_name for f, _ in index.skipped}
    assert {"GH177_CT1_IVRLE_BigEndian_undefined_length.dcm", "no_meta.dcm", "README.md"} <= skipped
    assert sum(s.kind == "volume" for s in index.series) >= 3


def test_empty_and_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="no files found"):
        read_series(tmp_path)
    with pytest.raises(StudyError, match="no such file or folder"):
        read_series(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("not an image\n")
    with pytest.raises(
        StudyError, match=r"no DICOM images; 1 files skipped: notes\.txt: not DICOM"
    ):
        read_series(tmp_path)


def test_zip_input_reads_like_the_folder(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "ct_legacy_no_meta_egsnrc_phantom"
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"patient/series/{path.name}")
    from_zip = read_series(archive)
    from_folder = read_series(folder)
    assert np.array_equal(from_zip.array, from_folder.array)
    assert np.allclose(from_zip.affine, from_folder.affine)
    listed = read_series(sorted(folder.glob("*.ct")))  # a list of files
    assert np.array_equal(listed.array, from_folder.array)


def test_zip_escaping_its_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Extraction happens in a temporary folder under tmp/a/b, so "../../outside.dcm" from
    # there would land in tmp/a: check that nothing does.
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "a" / "b"))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../outside.dcm", b"x" * 10)
    with pytest.raises(StudyError, match="points outside the archive"):
        read_series(archive)
    assert not list((tmp_path / "a").rglob("outside.dcm"))


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * (50 * 1024 * 1024))  # ~1000:1
    with pytest.raises(StudyError, match="decompression bomb"):
        read_series(archive)


def test_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "cut.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.dcm", b"DICM" * 1000)
    archive.write_bytes(archive.read_bytes()[:-30])  # central directory cut off
    with pytest.raises(StudyError, match=r"cut\.zip: not a readable zip archive"):
        read_series(archive)


def test_entry_point_exits_nonzero_without_traceback(shared_data: Path) -> None:
    path = shared_data / MALFORMED / "no_meta.dcm"
    result = subprocess.run(
        [sys.executable, "-m", "holo.cli", "read", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"holo: error: {path}: no DICOM images; 1 files skipped: no_meta.dcm: not DICOM "
        "(no 'DICM' prefix and no ACR-NEMA header)"
    ]


# Sequences nested deeper than any image needs (issue 14, point 7): pydicom parses them,
# and everything that walks a data set handles them, by recursion.
_SQ = struct.pack("<HH", 0x5200, 0x9229) + b"SQ\0\0"  # Shared Functional Groups: allowlisted
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_UNDEFINED = b"\xff\xff\xff\xff"


def _nested(depth: int, layout: str) -> bytes:
    """Explicit VR little endian bytes of ``depth`` sequences, each the only element of
    the one item of the sequence around it: every length undefined (parsed as read),
    defined (parsed on access), or one defined around undefined ones ("mixed")."""
    if layout == "undefined":
        opening = (_SQ + _UNDEFINED + _ITEM + _UNDEFINED) * depth
        closing = struct.pack("<HHIHHI", 0xFFFE, 0xE00D, 0, 0xFFFE, 0xE0DD, 0) * depth
        return opening + closing
    if layout == "mixed":
        inner = _nested(depth - 1, "undefined")
        return (
            _SQ + struct.pack("<I", len(inner) + 8) + _ITEM + struct.pack("<I", len(inner)) + inner
        )
    heads, inner = [], 0
    for _ in range(depth):  # innermost first; each level adds its 20 bytes of headers
        heads.append(_SQ + struct.pack("<I", inner + 8) + _ITEM + struct.pack("<I", inner))
        inner += 20
    return b"".join(reversed(heads))


def _deep_dicom(shared_data: Path, out: Path, depth: int, layout: str = "undefined") -> Path:
    """CT_small.dcm with ``depth`` nested sequences before its pixel data."""
    ds = pydicom.dcmread(shared_data / MALFORMED / "CT_small.dcm")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    raw = out.read_bytes()
    at = raw.rindex(b"\xe0\x7f\x10\x00OW")  # (7FE0,0010) Pixel Data: tags stay in order
    out.write_bytes(raw[:at] + _nested(depth, layout) + raw[at:])
    return out


_TOO_DEEP = r"deep\.dcm: nested sequences deeper than 64 levels; no image needs that many"


@pytest.mark.parametrize("layout", ["undefined", "defined", "mixed"])
def test_sequences_nested_20000_deep_are_refused_in_one_line(
    shared_data: Path, tmp_path: Path, layout: str
) -> None:
    deep = _deep_dicom(shared_data, tmp_path / "deep.dcm", 20_000, layout)
    for read in (index_study, read_series):
        with pytest.raises(StudyError, match=_TOO_DEEP) as refused:
            read(deep)
        assert "\n" not in str(refused.value)
    # Next to good files it is skipped with that reason, and the good ones read.
    good = tmp_path / "good.dcm"
    good.write_bytes((shared_data / MALFORMED / "CT_small.dcm").read_bytes())
    index = index_study([deep, good])
    reasons = {f.short_name: r for f, r in index.skipped}
    assert reasons["deep.dcm"].startswith("nested sequences deeper than 64 levels")
    assert read_series(good).shape[0] == 1
    # A data set read without the index is bounded before de-identification walks it.
    if layout == "defined":  # the others already fail in pydicom's own reader
        with pytest.raises(StudyError, match=_TOO_DEEP):
            deidentify_dataset(pydicom.dcmread(deep))


def test_sequences_nested_64_deep_still_read(shared_data: Path, tmp_path: Path) -> None:
    for layout in ("undefined", "defined"):
        ok = _deep_dicom(shared_data, tmp_path / f"ok-{layout}.dcm", 64, layout)
        assert index_study(ok).series[0].modality == "CT"
        clean = deidentify_dataset(pydicom.dcmread(ok))
        assert "SharedFunctionalGroupsSequence" in clean
        too_deep = _deep_dicom(shared_data, tmp_path / f"deep-{layout}.dcm", 65, layout)
        with pytest.raises(StudyError, match="nested sequences deeper than 64"):
            index_study(too_deep)


def test_a_server_refuses_an_upload_nested_20000_deep_and_stays_up(
    shared_data: Path, tmp_path: Path
) -> None:
    deep = _deep_dicom(shared_data, tmp_path / "deep.dcm", 20_000)
    with TestServer(tmp_path / "data") as server, server.client("radiologist") as radiologist:
        with pytest.raises(ClientError, match="INVALID_ARGUMENT") as refused:
            radiologist.upload_study([deep])
        message = str(refused.value)
        assert re.search(_TOO_DEEP, message) and "\n" not in message
        assert str(tmp_path) not in message  # named as uploaded, not by its server path
        # The server answers the next request, and a good study still goes in.
        study = radiologist.upload_study([shared_data / MALFORMED / "CT_small.dcm"])
        assert [s.study_id for s in radiologist.list_studies()] == [study.study_id]
