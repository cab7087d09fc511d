"""Index DICOM files by study and series from their headers, without decoding pixels.

Headers are read once, with large values (pixel data above all) deferred: pydicom records
where they are in the file and reads them only when a series is chosen and decoded. So
``holo studies`` on a large folder costs one header parse per file, and reading a series
costs that plus the pixel bytes, with no second parse.

Sequence nesting is bounded here, where every file comes in (:data:`MAX_SEQUENCE_DEPTH`):
pydicom parses a sequence, and everything that walks a data set (de-identification, a
copy, a save) handles it, by recursion, so a crafted file 20,000 levels deep raised
RecursionError in whatever touched it. A deeper file is skipped with a one-line reason.
"""

from __future__ import annotations

import logging
import struct
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import pydicom
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from holo.errors import StudyError, quote_id
from holo.imaging.sources import NamedFile

__all__ = [
    "MAX_SEQUENCE_DEPTH",
    "RADIOGRAPH_MODALITIES",
    "STUDY_KEYWORDS",
    "VOLUME_MODALITIES",
    "Instance",
    "SeriesEntry",
    "StudyIndex",
    "header_values",
    "index_files",
    "sequence_depth",
]

logger = logging.getLogger(__name__)

#: Modalities whose images stack into a volume.
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})
#: Projection X-ray modalities read as a 2-D radiograph (or a cine when multi-frame).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "XA", "RF", "MG", "IO", "PX"})
#: Study and series attributes kept with every image read (server side only: they may
#: identify the patient; see holo.imaging.deid for what leaves the server).
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "SeriesDescription",
    "AccessionNumber",
    "InstitutionName",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
)
#: Sequences within sequences an image header may have. Images nest a few levels (an
#: enhanced CT's functional groups: 2; a segmentation's: 3; structured reports, which are
#: not images, tens at most). pydicom spends 5-6 Python frames per level reading an
#: undefined-length sequence (its reader read 150 levels and failed at 200 under the
#: interpreter's 1,000-frame limit), so 64 leaves room for a server thread's own stack.
MAX_SEQUENCE_DEPTH = 64
_TOO_DEEP = (
    f"nested sequences deeper than {MAX_SEQUENCE_DEPTH} levels; no image needs that many: "
    "export the image again from its source"
)
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image
_DEFER_BYTES = 4096  # values larger than this are read on demand
#: Pixel-layout attributes every reader turns into an int: one number >= 0 each, or absent.
_COUNT_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "PixelRepresentation",
)
#: File meta attributes indexing and the pixel decoders read.
_META_KEYWORDS = ("MediaStorageSOPClassUID", "TransferSyntaxUID")
#: What the pixel decoders and the volume and X-ray readers read besides the index keys:
#: a damaged one skips the file (any other damaged value is dropped).
_NEEDED_KEYWORDS = frozenset(
    {
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "RescaleSlope",
        "RescaleIntercept",
        "RescaleType",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "SliceThickness",
        "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
        "ModalityLUTSequence",
        "PixelData",
        "FloatPixelData",
    }
)
#: The needed values that are not bulk data (sequences are skipped below anyway).
_SMALL_NEEDED = _NEEDED_KEYWORDS - {"PixelData", "FloatPixelData"}
_INDEX_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "SeriesDescription",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "InstanceNumber",
    "ImageType",
)


@dataclass(eq=False)
class Instance:
    """One DICOM file: its path, its name in messages, and its header; pixel data stay in
    the file until decoded."""

    path: Path
    dataset: Dataset
    truncated: str | None = None  # why the file is known to be incomplete, if it is
    name: str = ""  # as messages name it (default: the path)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = str(self.path)

    @property
    def short_name(self) -> str:
        """The last part of the name, for messages that name several files."""
        return PurePath(self.name).name

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.get("SOPInstanceUID", ""))

    @property
    def frames(self) -> int:
        try:
            return max(1, int(self.dataset.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def instance_number(self) -> int:
        try:
            return int(self.dataset.get("InstanceNumber") or 0)
        except (TypeError, ValueError):
            return 0


@dataclass(eq=False)
class SeriesEntry:
    """All instances that share one (0020,000E) SeriesInstanceUID within one study."""

    series_uid: str
    study_uid: str
    modality: str
    description: str
    instances: list[Instance] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``"volume"``, ``"radiograph"``, ``"cine"`` or ``"other"``."""
        if self.modality in VOLUME_MODALITIES:
            return "volume"
        if self.modality in RADIOGRAPH_MODALITIES:
            return "cine" if any(i.frames > 1 for i in self.instances) else "radiograph"
        return "other"

    @property
    def image_count(self) -> int:
        """Number of 2-D images: files, or frames of multi-frame files."""
        return sum(i.frames for i in self.instances)

    @property
    def first(self) -> Dataset:
        return self.instances[0].dataset

    def summary(self) -> dict[str, Any]:
        """Technical facts about the series (no patient identity)."""
        ds = self.first
        return {
            "SeriesInstanceUID": self.series_uid,
            "StudyInstanceUID": self.study_uid,
            "Modality": self.modality,
            "SeriesDescription": self.description,
            "kind": self.kind,
            "files": len(self.instances),
            "images": self.image_count,
            "Rows": int(ds.get("Rows") or 0),
            "Columns": int(ds.get("Columns") or 0),
            "TransferSyntaxUID": _transfer_syntax(ds),
        }


@dataclass
class StudyIndex:
    """The series found in a set of files, plus the files that were not usable, and why."""

    series: list[SeriesEntry]
    skipped: list[tuple[NamedFile, str]]
    source: str = "the input"  # how messages name what was indexed

    def volume_series(self, series_uid: str | None = None) -> SeriesEntry:
        """Choose the series to read as a volume.

        Parameters
        ----------
        series_uid
            Read exactly this series (any volume modality). When None, the CT series with
            the most images is chosen, localizers excluded.
        """
        if series_uid is not None:
            for s in self.series:
                if s.series_uid == series_uid:
                    if s.kind != "volume":
                        raise StudyError(
                            f"series {series_uid} is {s.modality} ({s.kind}), not a CT/MR/PT "
                            "volume; read it as a radiograph or pick another series "
                            "(`holo studies PATH` lists them)",
                            series_uid=series_uid,
                        )
                    return s
            raise StudyError(
                f"{self.source}: series {series_uid} is not there; `holo studies PATH` "
                f"lists the {len(self.series)} series found",
                series_uid=series_uid,
            )
        candidates = [s for s in self.series if s.modality == "CT" and not _is_localizer(s.first)]
        if not candidates:
            raise StudyError(f"{self.source}: no CT series ({self.describe()}); {self._hint()}")
        return max(candidates, key=lambda s: (s.image_count, s.series_uid))

    def radiograph_instances(self) -> list[tuple[SeriesEntry, Instance]]:
        """Every projection X-ray instance (single-frame or cine), in index order."""
        return [
            (s, i) for s in self.series if s.kind in ("radiograph", "cine") for i in s.instances
        ]

    def describe(self) -> str:
        """One line: what the input holds, e.g. ``"found CR (1 image), MR (1 series)"``."""
        if not self.series:
            reasons = "; ".join(f"{f.short_name}: {r}" for f, r in self.skipped[:3])
            more = f" (+{len(self.skipped) - 3} more)" if len(self.skipped) > 3 else ""
            return f"no DICOM images; {len(self.skipped)} files skipped: {reasons}{more}"
        by_mod: dict[str, int] = defaultdict(int)
        for s in self.series:
            by_mod[s.modality or "unknown"] += 1
        parts = ", ".join(f"{m} ({n} series)" for m, n in sorted(by_mod.items()))
        return f"found {parts}"

    def _hint(self) -> str:
        if any(s.kind in ("radiograph", "cine") for s in self.series):
            return "X-ray images are read with read_radiograph() (`holo read` does it for you)"
        if any(s.kind == "volume" for s in self.series):
            return "to read an MR or PT volume name it with --series UID"
        return "point at the folder or zip of a CT study"


def header_values(ds: Dataset, keywords: Iterable[str]) -> dict[str, Any]:
    """The named attributes that are present and non-empty, as str or list of str."""
    out: dict[str, Any] = {}
    for kw in keywords:
        try:
            value = ds.get(kw)
        except Exception:  # a damaged optional value is left out, not fatal
            # The file is not named: on a server its name is an upload's, often the patient's.
            logger.warning("ignoring an unreadable %s in a file's header", kw)
            continue
        if value is None or value == "":
            continue
        out[kw] = [str(v) for v in value] if isinstance(value, MultiValue) else str(value)
    return out


def sequence_depth(ds: Dataset, limit: int) -> int:
    """How deep sequences nest in ``ds`` (0: none), counted up to ``limit + 1``.

    Iterative, so any depth is measured without recursion; a sequence with a defined
    length is parsed one level at a time as it is reached (pydicom reads it on first
    access), and one that cannot be parsed is left to whoever uses it, as before.
    """
    deepest = 0
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        for tag in list(current.keys()):
            raw = current.get_item(tag, keep_deferred=True)  # deferred values stay unread
            vr = raw.VR
            if vr is None:  # implicit VR, not converted yet: the dictionary's
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    continue
            if vr != "SQ":
                continue
            deepest = max(deepest, depth + 1)
            if deepest > limit:
                return deepest
            try:
                items = current[tag].value
            except RecursionError:  # undefined-length sequences inside, parsed now
                return limit + 1
            except Exception:  # damaged: tolerated until used, like any other value
                continue
            stack.extend((item, depth + 1) for item in items)
    return deepest


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(ts) if ts else ""


def _is_localizer(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type


def _looks_like_headerless_dicom(head: bytes) -> bool:
    """A data set without the 128-byte preamble starts with a group 0x0002 element (file
    meta, as pydicom writes a new data set) or a group 0x0008 one (ACR-NEMA style), both
    little endian."""
    return len(head) >= 8 and head[0:2] in (b"\x02\x00", b"\x08\x00")


class _SkipError(Exception):
    """A file that is not a usable DICOM image; indexing records why and goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: What pydicom's reader raises on a file that is not DICOM or is damaged (a value whose
#: length does not fit its VR: BytesLengthException, a RuntimeError; an unknown VR in the
#: file meta it reads at once: NotImplementedError; a file cut off inside an explicit VR
#: element's 4-byte length, after its VR: struct.error).
_READ_ERRORS = (
    InvalidDicomError,
    struct.error,
    BytesLengthException,
    NotImplementedError,
    OSError,
    ValueError,
    KeyError,
    EOFError,
)


def _check_values(ds: Dataset) -> None:
    """Convert the values indexing and the readers use, skipping a file whose values
    pydicom cannot convert at all (an unknown VR, say) or whose pixel layout is not one
    number per attribute. Values are converted on first access; done here, pydicom's
    complaints about non-conformant values (tolerated) are captured by the caller."""
    try:
        for keyword in _INDEX_KEYWORDS:
            ds.get(keyword)
        counts = {keyword: ds.get(keyword) for keyword in _COUNT_KEYWORDS}
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for keyword in _META_KEYWORDS:
                meta.get(keyword)
    except Exception as err:  # pydicom raises many types for damaged values
        raise _SkipError(f"damaged header ({type(err).__name__}: {err})") from err
    # Every other top-level value a reader might touch, converted now (deferred ones, the
    # pixel data above all, stay in the file): one pydicom cannot convert would fail the
    # read later with its own exception. Tolerant when decoding: a damaged value no reader
    # needs is dropped; one the pixels or the geometry depend on skips the file.
    for tag in list(ds.keys()):
        keyword = dictionary_keyword(tag) if dictionary_has_tag(tag) else ""
        raw = ds.get_item(tag, keep_deferred=True)
        # Deferred: bulk data stays in the file; any other value a reader needs is read now,
        # however long, so that a damaged one skips the file here and not in that reader.
        deferred = isinstance(raw, RawDataElement) and raw.value is None
        if deferred and keyword not in _SMALL_NEEDED:
            continue
        vr = raw.VR or (dictionary_VR(tag) if dictionary_has_tag(tag) else None)
        if vr == "SQ":
            continue  # measured by sequence_depth, read by whoever needs it
        try:
            ds[tag]
        except Exception as err:
            if keyword in _NEEDED_KEYWORDS:
                raise _SkipError(f"damaged header ({type(err).__name__}: {err})") from err
            logger.debug("dropping an unreadable %s: %s", tag, err)
            del ds[tag]
    for keyword, value in counts.items():
        # One number each (US): several values, text or (with its VR changed) a negative
        # number would fail every reader later.
        if value not in (None, "") and not (isinstance(value, int) and value >= 0):
            raise _SkipError(
                f"damaged header: {keyword} is {quote_id(value, limit=32)}, not one number"
            )


def _read_header(path: Path) -> Instance:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as err:
        raise _SkipError(f"cannot be read ({err.strerror})") from err
    has_preamble = head[128:132] == b"DICM"
    if not has_preamble and not _looks_like_headerless_dicom(head):
        raise _SkipError("not DICOM (no 'DICM' prefix and no ACR-NEMA header)")
    truncated = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=not has_preamble)
        except _READ_ERRORS as err:
            raise _SkipError(f"not a readable DICOM file ({err})") from err
        except RecursionError as err:  # undefined-length sequences are parsed as read
            raise _SkipError(_TOO_DEEP) from err
        _check_values(ds)
    for w in caught:
        text = str(w.message)
        if "End of file reached" in text or "truncated" in text.lower():
            truncated = text.split(" in file")[0]
        else:
            logger.debug("%s: %s", path, text)
    if len(ds) == 0 and truncated:
        # pydicom gives an empty data set when encapsulated pixel data run off the end of
        # the file; the header before it is intact, so keep it and remember the damage.
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_preamble)
        except _READ_ERRORS as err:
            raise _SkipError(f"not a readable DICOM file ({err})") from err
        except RecursionError as err:
            raise _SkipError(_TOO_DEEP) from err
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported by the first read
            _check_values(ds)
    if sequence_depth(ds, MAX_SEQUENCE_DEPTH) > MAX_SEQUENCE_DEPTH:
        raise _SkipError(_TOO_DEEP)
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if _DIRECTORY_SOP_CLASS in (str(ds.get("SOPClassUID", "")), media_class):
        raise _SkipError("DICOMDIR (a media index, not an image)")
    if "Rows" not in ds and "PixelData" not in ds and not truncated:
        raise _SkipError("no image in it (no (0028,0010) Rows and no (7FE0,0010) Pixel Data)")
    if not has_preamble or not _transfer_syntax(ds):
        # Legacy files carry no (0002,0010) Transfer Syntax UID: record the encoding pydicom
        # detected so the pixel decoders know it.
        implicit, little = ds.original_encoding
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        if little is False:
            raise _SkipError(
                "big-endian data set without a transfer syntax; convert it with dcmconv"
            )
        ds.ensure_file_meta()
        ds.file_meta.TransferSyntaxUID = UID(ts)
    return Instance(path=path, dataset=ds, truncated=truncated)


def index_files(files: Iterable[NamedFile | Path], *, source: str = "the input") -> StudyIndex:
    """Read the header of every file and group the images by study and series.

    Files that are not DICOM images (readme files, DICOMDIR, reports without pixels,
    unreadable files) are skipped with a reason, never fatal here.
    """
    groups: dict[tuple[str, str], SeriesEntry] = {}
    skipped: list[tuple[NamedFile, str]] = []
    for item in files:
        named = item if isinstance(item, NamedFile) else NamedFile(item, str(item))
        try:
            inst = _read_header(named.path)
        except _SkipError as skip:
            logger.debug("skipping %s: %s", named.name, skip.reason)
            skipped.append((named, skip.reason))
            continue
        inst.name = named.name
        ds = inst.dataset
        key = (str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")))
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = SeriesEntry(
                series_uid=key[1],
                study_uid=key[0],
                modality=str(ds.get("Modality", "") or "").upper(),
                description=str(ds.get("SeriesDescription", "") or ""),
            )
        entry.instances.append(inst)
    return StudyIndex(series=list(groups.values()), skipped=skipped, source=source)
