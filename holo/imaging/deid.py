"""De-identification of everything about a study that leaves the server.

Follows the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, applied
as an allowlist, which the profile permits and which is the stricter reading: an attribute
survives only if it is listed in :data:`KEPT_KEYWORDS` (technical image facts that Table
E.1-1 does not list) or in :data:`EMPTIED_KEYWORDS` / :data:`REPLACED_UID_KEYWORDS`, where
the profile's actions are Z (keep, empty) and U (replace with a consistent new UID).
Everything else, all private attributes included, is removed (action X); the few sequences
kept (functional-group geometry, LUTs) have their items filtered by the same rules.

Not covered here: identity burned into the pixels. (0028,0301) Burned In Annotation is kept
so a viewer can warn when a source says its pixels carry text.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from holo.errors import StudyError
from holo.imaging.index import MAX_SEQUENCE_DEPTH, sequence_depth

__all__ = [
    "DEIDENTIFICATION_METHOD",
    "EMPTIED_KEYWORDS",
    "KEPT_KEYWORDS",
    "REPLACED_UID_KEYWORDS",
    "deidentify_dataset",
    "public_metadata",
]

# (0012,0063) is LO: at most 64 characters.
DEIDENTIFICATION_METHOD = "DICOM PS3.15 E.1 Basic Application Confidentiality Profile"

#: Table E.1-1 action U: replaced by a new UID, the same for the same input and salt, so
#: series and frames of reference still line up after de-identification.
REPLACED_UID_KEYWORDS = frozenset(
    {
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "MediaStorageSOPInstanceUID",
    }
)

#: Table E.1-1 action Z (type 2 attributes kept, empty) for the ones holo keeps.
EMPTIED_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    }
)

#: Attributes not in Table E.1-1: image geometry, pixel encoding and acquisition technique.
#: None of them names or dates a person or an institution.
KEPT_KEYWORDS = frozenset(
    {
        # identity of the object type, not the patient
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "Modality",
        "ImageType",
        "BodyPartExamined",
        "PatientPosition",
        "ViewPosition",
        "ImageLaterality",
        "Laterality",
        "PatientOrientation",
        "PresentationIntentType",
        "BurnedInAnnotation",
        # geometry
        "Rows",
        "Columns",
        "NumberOfFrames",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "NominalScannedPixelSpacing",
        "EstimatedRadiographicMagnificationFactor",
        "PixelSpacingCalibrationType",
        "SliceThickness",
        "SpacingBetweenSlices",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "GantryDetectorTilt",
        "MeasuredGantryTiltDegrees",
        "FrameTime",
        # pixel encoding and display
        "SamplesPerPixel",
        "PlanarConfiguration",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "PresentationLUTShape",
        # technique
        "Manufacturer",
        "ManufacturerModelName",
        "KVP",
        "ConvolutionKernel",
        # image geometry and display of enhanced multi-frame objects and LUT-based images:
        # kept as sequences whose items are filtered by these same rules
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "PlanePositionSequence",
        "PlaneOrientationSequence",
        "PixelMeasuresSequence",
        "PixelValueTransformationSequence",
        "FrameVOILUTSequence",
        "ModalityLUTSequence",
        "VOILUTSequence",
        "LUTDescriptor",
        "LUTData",
        "ModalityLUTType",
        # what this profile adds
        "PatientIdentityRemoved",
        "DeidentificationMethod",
    }
)

_PROCESS_SALT = secrets.token_hex(16)


def _new_uid(uid: str, salt: str) -> str:
    # A 2.25.<128-bit integer> UID (PS3.5 B.2) from a keyed hash of the original: the same
    # for one salt, not reversible without it. (pydicom's generate_uid ignores its entropy
    # sources when the prefix is 2.25, so it cannot give consistent replacements.)
    digest = hmac.new(salt.encode(), uid.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _allowed(keyword: str) -> bool:
    return (
        keyword in KEPT_KEYWORDS or keyword in EMPTIED_KEYWORDS or keyword in REPLACED_UID_KEYWORDS
    )


def public_metadata(metadata: Mapping[str, Any], *, salt: str | None = None) -> dict[str, Any]:
    """De-identify a keyword -> value mapping (e.g. ``Volume.metadata``) for clients.

    Parameters
    ----------
    metadata
        DICOM keywords to values, as holo keeps them on a Volume or Radiograph.
    salt
        Secret that keys the UID replacement; the server passes its own so UIDs stay
        consistent across restarts. Default: a random value fixed for this process.

    Returns
    -------
    dict
        Only allowlisted keywords; Z attributes present but empty; UIDs replaced;
        ``PatientIdentityRemoved = "YES"`` and ``DeidentificationMethod`` added.
    """
    salt = _PROCESS_SALT if salt is None else salt
    out: dict[str, Any] = {}
    for keyword, value in metadata.items():
        if keyword in REPLACED_UID_KEYWORDS:
            out[keyword] = _new_uid(str(value), salt) if value else ""
        elif keyword in EMPTIED_KEYWORDS:
            out[keyword] = ""
        elif keyword in KEPT_KEYWORDS:
            out[keyword] = value
    out["PatientIdentityRemoved"] = "YES"
    out["DeidentificationMethod"] = DEIDENTIFICATION_METHOD
    return out


def _filtered(ds: Dataset, salt: str) -> Dataset:
    """Allowlisted elements of one data set; sequences recursed, items filtered alike."""
    out = Dataset()
    for elem in ds:
        keyword = elem.keyword
        if elem.tag == 0x7FE00010:
            out.add(copy.deepcopy(elem))
        elif elem.tag.is_private or not keyword or not _allowed(keyword):
            continue
        elif elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", [_filtered(item, salt) for item in elem.value])
        elif keyword in REPLACED_UID_KEYWORDS:
            out.add_new(elem.tag, elem.VR, _new_uid(str(elem.value), salt) if elem.value else "")
        elif keyword in EMPTIED_KEYWORDS:
            out.add_new(elem.tag, elem.VR, "")
        else:
            out.add(copy.deepcopy(elem))
    return out


def deidentify_dataset(ds: Dataset, *, salt: str | None = None) -> Dataset:
    """Return a de-identified copy of a DICOM data set (the input is not changed).

    Pixel data are kept as they are (see the module note on burned-in text); every
    attribute outside the allowlist and all private attributes are removed; the geometry
    and LUT sequences in the allowlist keep their items, filtered by the same rules.
    """
    # _filtered recurses per level: bounded first, for a data set that did not come
    # through the index (read or built by the caller).
    if sequence_depth(ds, MAX_SEQUENCE_DEPTH) > MAX_SEQUENCE_DEPTH:
        name = getattr(ds, "filename", None) or "the data set"
        raise StudyError(
            f"{name}: nested sequences deeper than {MAX_SEQUENCE_DEPTH} levels; no image "
            "needs that many: export the image again from its source",
            path=name if name != "the data set" else None,
        )
    salt = _PROCESS_SALT if salt is None else salt
    out = _filtered(ds, salt)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.ensure_file_meta()
        for elem in meta:
            if elem.keyword == "MediaStorageSOPInstanceUID":
                out.file_meta.MediaStorageSOPInstanceUID = UID(_new_uid(str(elem.value), salt))
            elif elem.keyword in ("MediaStorageSOPClassUID", "TransferSyntaxUID"):
                out.file_meta.add(copy.deepcopy(elem))
    return out
