"""Decode pixel data with errors a user can act on.

pydicom picks a decoder per transfer syntax (its own for uncompressed and RLE, the
pylibjpeg plugins and GDCM for JPEG, JPEG-LS and JPEG 2000). This module adds the checks
pydicom leaves to the caller: size limits before decoding (decompression bombs), truncated
files, corrupt codestreams and unsupported syntaxes, each turned into one StudyError line.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from holo.errors import StudyError
from holo.imaging.index import Instance

__all__ = ["MAX_DECODED_BYTES", "decode_frames", "transfer_syntax_name"]

logger = logging.getLogger(__name__)

#: Largest decoded pixel payload accepted from one file (guards against headers that
#: claim absurd sizes). 4 GiB holds a 2000-frame 1024x1024 16-bit cine.
MAX_DECODED_BYTES = 4 * 1024**3
_PIXEL_DATA = Tag(0x7FE0, 0x0010)
#: JPEG 2000 is decoded by pylibjpeg-openjpeg alone. GDCM, pydicom's other plugin for it
#: (tried when the first fails), aborts the whole process on some corrupt codestreams with
#: a C++ exception nothing catches: the fuzzer reached one in about 6,500 mutated files.
_ONLY_PYLIBJPEG = frozenset({JPEG2000, JPEG2000Lossless})
#: What the decoders raise on a corrupt or unsupported codestream, besides ValueError
#: (struct.error: an RLE header whose segment offsets point past the fragment).
_DECODER_ERRORS = (
    RuntimeError,
    OSError,
    EOFError,
    AttributeError,
    KeyError,
    TypeError,
    struct.error,
)
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Uncompressed syntaxes in which a recorded value offset is an offset in the file.
_NATIVE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def transfer_syntax_name(ds: Dataset) -> str:
    """Human name and UID of the data set's transfer syntax, for messages."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        return "no transfer syntax"
    uid = UID(str(ts))
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def _expected_bytes(ds: Dataset, frames: int) -> int:
    rows = int(ds.get("Rows") or 0)
    cols = int(ds.get("Columns") or 0)
    bits = int(ds.get("BitsAllocated") or 0)
    samples = int(ds.get("SamplesPerPixel") or 1)
    return rows * cols * frames * samples * max(bits, 8) // 8


def _load_deferred_pixel_data(inst: Instance) -> None:
    """Read deferred pixel data straight from its recorded offset.

    pydicom's own deferred read parses the whole header again to find the element; the
    offset and length are already known from indexing, so one seek and read suffice.
    """
    raw = inst.dataset.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value is not None or raw.value_tell is None:
        return
    if raw.length == _UNDEFINED_LENGTH or _transfer_syntax(inst.dataset) not in _NATIVE:
        # Encapsulated (compressed) data end at a sequence delimiter, not at a known
        # length, and a deflated data set's offsets are in the inflated stream: pydicom's
        # own deferred read handles both.
        return
    with open(inst.path, "rb") as fh:
        fh.seek(raw.value_tell)
        value = fh.read(raw.length)
    if len(value) < raw.length:
        raise StudyError(
            f"{inst.name}: pixel data are truncated ({len(value)} of {raw.length} bytes); "
            "the file is incomplete, re-export or re-transfer it",
            path=inst.path,
        )
    inst.dataset[_PIXEL_DATA] = raw._replace(value=value)


def decode_frames(inst: Instance) -> npt.NDArray[Any]:
    """Decode all frames of one instance to stored values.

    The instance's pixel data are consumed: the raw bytes are dropped from its data set
    once decoded, so a series never holds both the encoded and the decoded pixels.

    Returns
    -------
    numpy.ndarray
        Shape ``(frames, rows, cols)`` (``(frames, rows, cols, samples)`` for colour), the
        stored values before any Modality LUT, with the data set's signedness.

    Raises
    ------
    StudyError
        Naming the file, what is wrong with its pixel data and what to do.
    """
    ds, path, name = inst.dataset, inst.path, inst.name
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        if inst.truncated:
            raise StudyError(
                f"{name}: pixel data are cut off ({inst.truncated}); the file is incomplete, "
                "re-export or re-transfer it",
                path=path,
            )
        raise StudyError(
            f"{name}: has no (7FE0,0010) Pixel Data; it is not an image, remove it from the input",
            path=path,
        )
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if keyword not in ds:
            raise StudyError(
                f"{name}: has no {keyword} element, so its pixels cannot be interpreted; "
                "the header is damaged, re-export the file",
                path=path,
            )
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as err:
        raise StudyError(
            f"{name}: (0028,0008) Number of Frames is {ds.get('NumberOfFrames')!r}, not a "
            "number; the header is damaged, re-export the file",
            path=path,
        ) from err
    expected = _expected_bytes(ds, frames)
    if expected > MAX_DECODED_BYTES:
        raise StudyError(
            f"{name}: header claims {expected} bytes of pixels, over the {MAX_DECODED_BYTES} "
            "byte limit; refused as implausible",
            path=path,
        )
    _load_deferred_pixel_data(inst)
    try:
        # The function, not Dataset.pixel_array: that one caches the array on the data set
        # for as long as the index lives, beside the raw bytes.
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        plugin = "pylibjpeg" if ts in _ONLY_PYLIBJPEG else ""
        array = pixel_array(ds, decoding_plugin=plugin)
    except ValueError as err:
        text = str(err)
        if "less than expected" in text or "truncated" in text.lower():
            raise StudyError(
                f"{name}: pixel data are truncated ({text.split(' - ')[0]}); the file is "
                "incomplete, re-export or re-transfer it",
                path=path,
            ) from err
        raise StudyError(
            f"{name}: cannot decode {transfer_syntax_name(ds)} pixel data ({text}); the "
            "file is damaged or its header inconsistent, re-export it",
            path=path,
        ) from err
    except NotImplementedError as err:
        raise StudyError(
            f"{name}: {transfer_syntax_name(ds)} is not supported by the installed decoders "
            "(pylibjpeg, GDCM); convert the file to an uncompressed syntax, e.g. "
            "`gdcmconv --raw`",
            path=path,
        ) from err
    except BaseException as err:
        # A decoder written in Rust (pylibjpeg-rle) panics on some corrupt codestreams:
        # pyo3's PanicException derives from BaseException, and cannot be imported.
        if not isinstance(err, _DECODER_ERRORS) and type(err).__name__ != "PanicException":
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StudyError(
            f"{name}: cannot decode {transfer_syntax_name(ds)} pixel data: the codestream is "
            f"corrupt or unsupported ({first}); re-export the file uncompressed",
            path=path,
        ) from err
    del ds[_PIXEL_DATA]  # decoded once: free the raw bytes now, not when the read ends
    samples = int(ds.get("SamplesPerPixel") or 1)
    if frames == 1:
        array = array[np.newaxis, ...]
    if array.shape[0] != frames or (samples == 1 and array.ndim != 3):
        raise StudyError(
            f"{name}: decoded pixels have shape {array.shape}, expected {frames} frame(s) of "
            f"{ds.Rows}x{ds.Columns}; the file is inconsistent, re-export it",
            path=path,
        )
    return np.asarray(array)
