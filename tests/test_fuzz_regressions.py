"""One test per crash the fuzz harnesses (fuzz/) found, with the crashing input made here.

Each input raised something other than the documented error; each test asserts the
documented error now, with its one-line message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from holo.auth import token_id, verify_token
from holo.errors import AuthError, InvalidRequestError, PipelineError, StudyError
from holo.export.container import pack_glb, read_glb
from holo.export.manifest import layout_coarse_first, model_manifest
from holo.imaging import read_study
from holo.imaging.index import index_files
from holo.imaging.pixels import decode_frames
from holo.imaging.sources import NamedFile, expand_inputs
from holo.imaging.summary import summarise_study


def _glb(**changes: Any) -> tuple[dict[str, Any], bytes]:
    """A one-triangle model (one LOD), as fuzz/fuzz_glb.py seeds it."""
    binary = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0) + struct.pack("<3H", 0, 1, 2) + b"\0\0"
    tree: dict[str, Any] = {
        "asset": {"version": "2.0"},
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            },
            {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"},
        ],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 36},
            {"buffer": 0, "byteOffset": 36, "byteLength": 6},
        ],
        "buffers": [{"byteLength": len(binary)}],
    }
    tree.update(changes)
    return tree, binary


def test_a_negative_byte_offset_is_refused_not_laid_out_wrong() -> None:
    # The layout sliced BIN[-1:...] and wrote a file its own second pass refused.
    tree, binary = _glb()
    tree["bufferViews"][1]["byteOffset"] = -1
    with pytest.raises(PipelineError, match=r"bufferView 1 has byteOffset -1 .*non-negative"):
        layout_coarse_first(pack_glb(tree, binary))
    with pytest.raises(PipelineError, match="non-negative integers"):
        model_manifest(pack_glb(tree, binary))


def test_a_fractional_byte_offset_is_refused() -> None:
    # TypeError ("slice indices must be integers") from the layout.
    tree, binary = _glb()
    tree["bufferViews"][1]["byteOffset"] = 36.5
    with pytest.raises(PipelineError, match="non-negative integers"):
        layout_coarse_first(pack_glb(tree, binary))


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("count", 1e999),  # OverflowError: cannot convert float infinity to integer
        ("rotation", [10**400, 0, 0, 1]),  # OverflowError: int too large to convert to float
    ],
)
def test_numbers_out_of_range_are_malformed_gltf(where: str, value: object) -> None:
    tree, binary = _glb()
    if where == "count":
        tree["accessors"][1]["count"] = value
    else:
        tree["nodes"][0]["rotation"] = value
    with pytest.raises(PipelineError, match=r"not valid glTF 2\.0 \(OverflowError"):
        model_manifest(pack_glb(tree, binary))


def test_a_property_of_the_wrong_json_type_is_malformed_gltf() -> None:
    # AttributeError: 'int' object has no attribute 'get' (a buffer view that is a number).
    tree, binary = _glb()
    tree["bufferViews"][0] = 7
    with pytest.raises(PipelineError, match=r"not valid glTF 2\.0 \(AttributeError"):
        model_manifest(pack_glb(tree, binary))


def test_buffers_that_are_not_a_list_of_objects_mean_no_bin_chunk() -> None:
    # TypeError in Glb.has_bin ("'int' object is not subscriptable"), before any check.
    tree, binary = _glb(buffers=5)
    glb = pack_glb(tree, binary)
    assert not read_glb(glb).has_bin
    assert layout_coarse_first(glb) == glb
    assert model_manifest(glb)["lods"][0]["triangles"] == 1


def test_json_nested_too_deep_is_refused_in_one_line() -> None:
    # RecursionError from json.loads in read_glb.
    text = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    glb = struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body
    with pytest.raises(PipelineError, match="nests arrays or objects too deeply"):
        read_glb(glb)


def _signed(secret: bytes, claims: bytes) -> str:
    """A token of these claims bytes, signed as a minter would (fuzz/fuzz_token.py)."""
    payload = "holo1." + base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    signature = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


_CLAIMS = '{"sub":"t","case":"c","role":"presenter","iat":%s,"exp":1751000000,"jti":"abc"}'


@pytest.mark.parametrize(
    "claims",
    [
        (_CLAIMS % "1e999").encode(),  # OverflowError: cannot convert float infinity to integer
        b"[" * 2900,  # RecursionError from json.loads, before it finds no closing bracket
    ],
    ids=["infinite-iat", "nested-2900"],
)
def test_signed_but_unreadable_claims_are_an_auth_error(claims: bytes) -> None:
    secret = b"s" * 32
    token = _signed(secret, claims)
    assert len(token) <= 4096
    with pytest.raises(AuthError, match="claims are unreadable"):
        verify_token(secret, token, now=1_750_000_000)


def test_token_id_of_deeply_nested_claims_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="claims are unreadable"):
        token_id(_signed(b"s" * 32, b"[" * 2900))


def _ct_slice(**values: Any) -> Dataset:
    """A tiny CT slice (8 x 8), as fuzz/common.py seeds it, with ``values`` set."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.4", "CT"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _write(path: Path, ds: Dataset) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the damaged values are the point
        ds.save_as(path, enforce_file_format=True)
    return path


def test_a_rescale_intercept_that_is_not_a_number_is_a_study_error(tmp_path: Path) -> None:
    # ValueError: could not convert string to float, from read_study (series.py).
    data = _write(tmp_path / "ok.dcm", _ct_slice()).read_bytes()
    path = tmp_path / "ct.dcm"
    path.write_bytes(data.replace(b"-1024.0 ", b"-11x    "))  # pydicom will not write it
    with pytest.raises(StudyError, match=r"\(0028,1052\) Rescale Intercept is '-11x"):
        read_study(path)


def test_columns_with_two_values_skip_the_file(tmp_path: Path) -> None:
    # TypeError: int() argument must be ... not 'list', from summarise_study (the upload path).
    path = _write(tmp_path / "ct.dcm", _ct_slice(Columns=[8, 8]))
    with pytest.raises(StudyError, match=r"Columns is \[8, 8\], not one number"):
        summarise_study([NamedFile(path, "ct.dcm")], salt="s")


@pytest.mark.parametrize(
    ("element", "needed"),
    [
        (b"\x02\x00\x02\x00UI", True),
        (b"\x02\x00\x10\x00UI", True),  # raised by dcmread itself
        (b"\x28\x00\x52\x10DS", True),
        (b"\x08\x00\x30\x10LO", False),
    ],
    ids=["file-meta-class", "transfer-syntax", "rescale-intercept", "study-description"],
)
def test_an_unknown_vr_skips_the_file_or_drops_the_value(
    tmp_path: Path, element: bytes, needed: bool
) -> None:
    # NotImplementedError: Unknown Value Representation, from summarise_study and read_study.
    ds = _ct_slice(StudyDescription="knee")
    data = _write(tmp_path / "ok.dcm", ds).read_bytes()
    assert data.count(element) == 1
    path = tmp_path / "ct.dcm"
    path.write_bytes(data.replace(element, element[:4] + b"D["))
    if needed:
        with pytest.raises(StudyError, match="Unknown Value Representation"):
            summarise_study([NamedFile(path, "ct.dcm")], salt="s")
    else:  # a value no reader needs is dropped, the image read
        summary = summarise_study([NamedFile(path, "ct.dcm")], salt="s")
        assert summary["identity"]["StudyDescription"] == ""
        read_study(path)


def test_an_unknown_vr_on_a_long_needed_value_skips_the_file(tmp_path: Path) -> None:
    # NotImplementedError from read_study (series.py slice_records): a Rescale Intercept with
    # an unknown VR and a value over 4 KiB was deferred by the header check, so the first
    # reader to touch it met pydicom's error instead of a damaged-header skip.
    ds = _ct_slice()
    ds.RescaleIntercept = "-1024"
    ds["RescaleIntercept"].VR = "LT"  # written long: LT takes up to 10,240 characters
    ds["RescaleIntercept"].value = "-1024" + " " * 5000
    data = _write(tmp_path / "ok.dcm", ds).read_bytes()
    element = b"\x28\x00\x52\x10LT"
    assert data.count(element) == 1
    path = tmp_path / "ct.dcm"
    path.write_bytes(data.replace(element, element[:4] + b"DU"))
    with pytest.raises(StudyError, match="Unknown Value Representation"):
        read_study(path)
    with pytest.raises(StudyError, match="Unknown Value Representation"):
        summarise_study([NamedFile(path, "ct.dcm")], salt="s")


def test_a_decoder_panic_is_a_study_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pylibjpeg-rle (Rust) panicked on a corrupt RLE codestream the fuzzer made from the
    # knee's CT_0001 (index out of bounds: the len is 61440 but the index is 61440); pyo3's
    # PanicException is a BaseException, which decode_frames let through. Raised here by a
    # stand-in, as the 35 KB input is not worth keeping in the tree.
    import holo.imaging.pixels as pixels

    class PanicException(BaseException):
        pass

    def panic(ds: Dataset) -> None:
        raise PanicException("index out of bounds: the len is 61440 but the index is 61440")

    monkeypatch.setattr(pixels, "pixel_array", panic)
    path = _write(tmp_path / "ct.dcm", _ct_slice())
    instance = index_files([path]).series[0].instances[0]
    with pytest.raises(StudyError, match="codestream is corrupt or unsupported"):
        pixels.decode_frames(instance)


@pytest.mark.parametrize("keyword", ["BitsStored", "PixelRepresentation"])
def test_a_pixel_layout_value_with_two_values_skips_the_file(tmp_path: Path, keyword: str) -> None:
    # TypeError from int() in series._stored_range, reading the volume (read_study).
    path = _write(tmp_path / "ct.dcm", _ct_slice(**{keyword: [12, 12]}))
    with pytest.raises(StudyError, match=rf"{keyword} is \[12, 12\], not one number"):
        read_study(path)


#: The fuzzer's input (1,137 bytes, zlib + base64): the 8 x 8 RLE seed of fuzz/common.py
#: with its pixel data item overwritten; pydicom's RLE decoder raised struct.error
#: ("unpack requires a buffer of 1967521796 bytes").
_RLE_STRUCT_ERROR = (
    "eNrFUz1oFEEUfru3ZJfzcmyMyiGBLAgShAwzO7O3sygYcsmRg2z2uE0Q8QgiprCzETGFqdLZ2aWzsxMsBAs7u4CF"
    "nYVwnZ2dRSDc5Zu9H41iBJu8YXhv3vvmfe/ND9H5ykqrkdrQW+sOfYK2yaJs2WiIZUNvta6SYCHTijPBOb/FIiaY"
    "woQX8RIQS0NEWGfAMFnXnCvJNFPPNEskl2EcxzxRKlFC16UMpVA8ijRnYSwTIeG2yUeeS6eYtGFgETguIjb3N44E"
    "OGBmKV+rUvsuOsrSQAIVBh5d+aN+fap+j2pn1Z+cXX88qd+j+9TIbWps+uikvVGm5pPd3e18Z+dh4FNA65lNTVGj"
    "Nq3kDth4ENA0mKcKZglEFavycMVEJOCZpRYyCiBD7KoQZ7w7mvDF8NVMpu4v/u5oHSyYm8vNbS6Qg8oqlGYbWWOt"
    "k6WrIaJ+EfUQnZlYHBk9sETIEAFDlon4iFiFVYFlF9YFWCVrnL/jm32LgoeqYM79cY+9Pb94TQNIf0A957dTMa9s"
    "eCoOrPGpTME+nJzK4HylXBT281L+LabRAxp+oSXMzn9+zaPROKa+dVQMl9zq5blrN4SrbzfTzXsPHrmPnz7ff/Hy"
    "4JX7+s27Dx8PP39xe9++/zgulWfc2vz1RXVzueW272y/fd8ffO2ZrCfQbxnM"
)


def test_an_rle_header_past_its_fragment_is_a_study_error(tmp_path: Path) -> None:
    path = tmp_path / "ct_rle.dcm"
    path.write_bytes(zlib.decompress(base64.b64decode(_RLE_STRUCT_ERROR)))
    instance = index_files([path]).series[0].instances[0]
    with pytest.raises(StudyError, match="RLE Lossless"):
        decode_frames(instance)


#: The fuzzer's input (317 bytes, base64), made from ../shared/data's
#: meta_missing_tsyntax.dcm: a group length of 157 bytes read as UL raised pydicom's
#: BytesLengthException (a RuntimeError) from dcmread, which indexing let through.
_WRONG_LENGTH = (
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABESUNN"
    "AgAAAFVMBAA6AAAAAgABAE9AAAACAAAAAAECAAIAVUkAAAIAAwBVSQAAAgASAFVJFAAxMjM0NTY3ODkwLjE5OTgu"
    "MzEwAAEAAQD//////v8A4P////8BAAEA//////7/AOD/////AQABABAAAABEb3VibGUgTmVzdGVkIFNR/v8N4AAA"
    "AAD+/93gAAAAAAEAAgAJAAAATmVzdGVkIFNR/v8N4AAAAAD+/93gAAAAAOB/EAACAAAAAAA="
)


def test_a_value_of_the_wrong_length_skips_the_file(tmp_path: Path) -> None:
    path = tmp_path / "upload.dcm"
    path.write_bytes(base64.b64decode(_WRONG_LENGTH))
    with pytest.raises(StudyError, match="not a readable DICOM file"):
        summarise_study([NamedFile(path, "upload.dcm")], salt="s")


# --- fuzz/fuzz_zip.py: an upload's zip, read member by member by summarise_study ----------


def _zip(path: Path, members: dict[str, bytes]) -> NamedFile:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return NamedFile(path, "upload.zip")


def _study_error_leaves_scratch_empty(upload: NamedFile, scratch: Path, match: str) -> None:
    with pytest.raises(StudyError, match=match) as err:
        summarise_study([upload], salt="s", scratch=scratch)
    assert str(scratch) not in str(err.value)
    assert list(scratch.iterdir()) == []


def test_a_dicom_file_cut_inside_an_element_length_is_skipped(tmp_path: Path) -> None:
    # struct.error ("unpack requires a buffer of 4 bytes") from dcmread: the file ends
    # after (7FE0,0010)'s VR, before its 4-byte length. The fuzzer made it from a zip seed.
    data = _write(tmp_path / "ok.dcm", _ct_slice()).read_bytes()
    cut = data[: data.index(b"\xe0\x7f\x10\x00OW") + 8]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    upload = _zip(tmp_path / "upload.zip", {"ct.dcm": cut})
    _study_error_leaves_scratch_empty(
        upload, scratch, r"skipped: ct.dcm: not a readable DICOM file \(unpack requires"
    )


def test_a_member_whose_local_header_is_at_a_negative_offset_is_a_study_error(
    tmp_path: Path,
) -> None:
    # OSError: [Errno 22] Invalid argument, from seeking to the member's local header:
    # zipfile places it by how far the central directory sits from where the end record
    # says, so an end record pointing past the directory puts the member before byte 0.
    path = tmp_path / "upload.zip"
    _zip(path, {"ct.dcm": b"x" * 64})
    data = bytearray(path.read_bytes())
    end = data.index(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<I", data, end + 16)
    struct.pack_into("<I", data, end + 16, offset + 100)
    path.write_bytes(bytes(data))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _study_error_leaves_scratch_empty(
        NamedFile(path, "upload.zip"),
        scratch,
        r"member 'ct.dcm' cannot be extracted \(Invalid argument\)",
    )


def _stored_zip(name: bytes, content: bytes) -> bytes:
    """A zip of one stored member, written by hand: zipfile refuses to write an empty name."""
    crc = zlib.crc32(content)
    local = struct.pack(
        "<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(content), len(content), len(name), 0
    )
    central = struct.pack(
        "<4s6H3I5H2I",
        b"PK\x01\x02",
        20,
        20,
        0,
        0,
        0,
        0,
        crc,
        len(content),
        len(content),
        len(name),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + name + content
    directory = central + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


@pytest.mark.parametrize("name", ["n" * 300 + ".dcm", ""], ids=["300-characters", "empty"])
def test_a_member_name_the_file_system_cannot_hold_is_inflated_under_another(
    tmp_path: Path, name: str
) -> None:
    # 300 characters: OSError ENAMETOOLONG with the scratch path in its text. Empty:
    # IndexError from ZipInfo.is_dir() (then the member would be written as its numbered
    # folder's name).
    ct = _write(tmp_path / "ok.dcm", _ct_slice()).read_bytes()
    path = tmp_path / "upload.zip"
    path.write_bytes(_stored_zip(name.encode(), ct))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    summary = summarise_study([NamedFile(path, "upload.zip")], salt="s", scratch=scratch)
    assert summary["series"][0]["images"] == 1
    assert list(scratch.iterdir()) == []
    with expand_inputs(NamedFile(path, "upload.zip"), scratch=scratch) as files:
        assert [f.name for f in files] == [f"upload.zip/{name}"]
        assert files[0].path.name == "member"


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        # "version needed to extract" 7.4, as the fuzzer's: NotImplementedError
        (b"PK\x01\x02\x14\x03\x14\x00", b"PK\x01\x02\x14\x03\x4a\x00", r"zip file version 7\.4"),
        # a name flagged UTF-8 that is not: UnicodeDecodeError (a ValueError)
        (b"caf\xc3\xa9", b"caf\xff\xfe", "'utf-8' codec can't decode byte 0xff"),
    ],
    ids=["version-7.4", "name-not-utf-8"],
)
def test_a_directory_zipfile_cannot_read_is_not_a_readable_zip(
    tmp_path: Path, old: bytes, new: bytes, reason: str
) -> None:
    # Both raised by zipfile.ZipFile() itself, which _open_zip let through.
    path = tmp_path / "upload.zip"
    _zip(path, {"caf\xe9.dcm": b"x" * 64})
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _study_error_leaves_scratch_empty(
        NamedFile(path, "upload.zip"),
        scratch,
        rf"upload.zip: not a readable zip archive \({reason}",
    )
