"""The DICOM objects a model goes back to the PACS as: Encapsulated STL and a Segmentation.

A model in the store (:class:`holo.store.ModelRecord`) becomes, in its source study:

* one **Encapsulated STL** instance per structure (SOP Class 1.2.840.10008.5.1.4.1.1.104.3,
  PS3.3 A.85), all in one new series of Modality ``M3D``: the full-detail mesh of the
  model's GLB (:func:`holo.export.meshes.full_detail_meshes`) as binary STL in patient LPS
  millimetres, in the CT's FrameOfReferenceUID, so a planning or printing system places it
  on the CT without registration;
* one **Segmentation** (SEG, BINARY, one segment per structure), made by highdicom from the
  label map :func:`segmentation.segmenter.segment` makes again from the CT series the
  model was converted from (it is deterministic), with the CT's instances as its source
  images. It is its own series: a series has one Modality (PS3.3 C.7.3.1), and a SEG's
  is ``SEG``.

Both copy the patient and study attributes of the CT, identity included: they go back to
the patient's record in the hospital's archive, where the CT came from (what leaves holo
for anyone else goes through :mod:`holo.imaging.deid`). Both reference the CT series.

UIDs are derived from the model (its id and GLB digest) and holo's version, so pushing the
same model again, after a push cut short, sends the same instances and the PACS keeps one
series rather than two half ones; a new holo version, which could segment differently,
makes new ones. Nothing of DICOM's encoding is written here: pydicom encodes the STL
datasets, highdicom builds the SEG.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import platform
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from holo import __version__
from holo.errors import InvalidRequestError, PipelineError
from holo.extras import need
from holo.store import ModelRecord, Store

__all__ = ["ENCAPSULATED_STL", "ModelObjects", "encapsulated_stl", "model_objects", "stl_bytes"]

logger = logging.getLogger(__name__)

#: Encapsulated STL Storage (PS3.4 B.5; PS3.3 A.85.1).
ENCAPSULATED_STL = "1.2.840.10008.5.1.4.1.1.104.3"
#: Series numbers of the new series: after the scanner's own (1-99 on most scanners),
#: recognisable in a viewer's series list.
STL_SERIES_NUMBER = 9901
SEG_SERIES_NUMBER = 9902
MANUFACTURER = "holo"

# Patient (C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2) attributes copied
# from the CT. The Type 2 ones are written empty when the CT lacks them.
_PATIENT_STUDY = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDescription",
    "PhysiciansOfRecord", "ProcedureCodeSequence", "PatientAge", "PatientSize",
    "PatientWeight",
)  # fmt: skip
_TYPE_2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip

# The segmented property of each preset's structures (CID 7150 category, CID 7151 type).
_PROPERTY = {
    "bone": ("85756007", "Tissue", "272673000", "Bone"),
    "skin": ("85756007", "Tissue", "39937001", "Skin"),
    "soft_tissue": ("85756007", "Tissue", "87784001", "Soft tissue"),
}


@dataclass(frozen=True)
class ModelObjects:
    """A model's DICOM objects, ready to send (see the module).

    Attributes
    ----------
    study_uid, ct_series_uid
        The source study and the CT series the model was made from.
    stl_series_uid, seg_series_uid
        The two new series.
    stl
        One Encapsulated STL dataset per structure, in the model's order.
    seg
        The Segmentation dataset.
    """

    study_uid: str
    ct_series_uid: str
    stl_series_uid: str
    seg_series_uid: str
    stl: list[Any]
    seg: Any

    @property
    def datasets(self) -> list[Any]:
        """Every object to send: the STL instances, then the SEG."""
        return [*self.stl, self.seg]


def stl_bytes(vertices: npt.NDArray[Any], faces: npt.NDArray[Any], name: str) -> bytes:
    """A binary STL of a triangle mesh (vertices ``(N, 3)`` in mm, faces ``(M, 3)``).

    The 80-byte header names the structure and never starts with ``solid`` (readers take
    such a file for ASCII STL). Facet normals are computed from the counter-clockwise
    winding; coordinates are written as float32, as binary STL holds them.
    """
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    header = f"holo {__version__} {name} LPS mm".encode("ascii", "replace")[:80]
    out = io.BytesIO()
    mesh.export(out, file_type="stl")
    data = bytearray(out.getvalue())
    data[:80] = header.ljust(80, b" ")
    return bytes(data)


def _uid(*parts: str) -> str:
    # 2.25.<a name-based (version 5) UUID of the parts> (PS3.5 B.2): the same parts, the same
    # UID. pydicom's generate_uid ignores its entropy sources under the 2.25 root (it draws
    # a random UUID), so the UUID is made here.
    name = "/".join(("holo", __version__, *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}"


def _copy_patient_study(source: Any, target: Any) -> None:
    for keyword in ("SpecificCharacterSet", *_PATIENT_STUDY):
        if keyword in source:
            target[keyword] = source[keyword]
    for keyword in _TYPE_2:
        if keyword not in target:
            setattr(target, keyword, "")


def _code(value: str, scheme: str, meaning: str) -> Any:
    from pydicom import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def encapsulated_stl(
    ct: Sequence[Any],
    stl: bytes,
    *,
    name: str,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    created: dt.datetime,
    device_serial_number: str,
) -> Any:
    """One Encapsulated STL instance (PS3.3 A.85.1) of the structure ``name``.

    Parameters
    ----------
    ct
        The CT series' datasets (headers suffice): patient, study and FrameOfReferenceUID
        are copied from the first, and every instance is referenced as a source.
    stl
        Binary STL (:func:`stl_bytes`), patient LPS millimetres in the CT's frame.
    created
        The content date and time: when the model was made.
    """
    from pydicom import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    first = ct[0]
    ds = Dataset()
    _copy_patient_study(first, ds)
    # SOP Common (C.12.1)
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_STL, sop_uid
    # Encapsulated Document Series (C.24.1)
    ds.Modality = "M3D"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = STL_SERIES_NUMBER
    ds.SeriesDescription = "holo 3-D model (STL)"
    # Frame of Reference (C.7.4.1): the CT's, so the mesh sits on the CT as it is.
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    # General and Enhanced General Equipment (C.7.5.1, C.7.5.2)
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.DeviceSerialNumber = device_serial_number
    ds.SoftwareVersions = __version__
    # Encapsulated Document (C.24.2)
    ds.InstanceNumber = instance_number
    ds.ContentDate = created.strftime("%Y%m%d")
    ds.ContentTime = created.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = name
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "model/stl"
    sources = []
    for image in ct:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        sources.append(item)
    ds.SourceInstanceSequence = sources
    # Common Instance Reference (C.12.2): the same instances, by series (the CT series,
    # in this study).
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedInstanceSequence = [Dataset(item) for item in sources]
    ds.ReferencedSeriesSequence = [series]
    # The document's length before the even-length padding DICOM adds (C.24.2.1).
    ds.EncapsulatedDocumentLength = len(stl)
    ds.EncapsulatedDocument = stl + b"\0" * (len(stl) % 2)
    # Manufacturing 3D Model (C.36.x): the STL's coordinates are millimetres (UCUM).
    ds.MeasurementUnitsCodeSequence = [_code("mm", "UCUM", "millimeter")]

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # A Part 10 file wherever it is written: dicomweb-client's STOW-RS encodes with
    # pydicom's defaults, which write the 128-byte preamble and "DICM" only if there is one
    # (Orthanc then stores a file that starts with its meta group, unreadable as Part 10).
    ds.preamble = b"\0" * 128
    return ds


def segmentation(
    ct: Sequence[Any],
    labels: Any,
    *,
    preset: str,
    series_uid: str,
    sop_uid: str,
    device_serial_number: str,
) -> Any:
    """The Segmentation (BINARY, one segment per label) of ``labels`` over the CT series.

    Parameters
    ----------
    ct
        The CT series' datasets (headers suffice), in any order: highdicom matches the
        label map's slices to them by position.
    labels
        :class:`segmentation.labelmap.LabelMap` on the grid of the volume read from ``ct``:
        shape ``(slice, row, col)``, its affine index -> patient LPS mm; values 1..N.
    """
    need("server", "highdicom", feature="pushing a model's Segmentation")
    import highdicom as hd
    from pydicom.sr.coding import Code

    if sorted(labels.names) != list(range(1, len(labels.names) + 1)):
        raise PipelineError(
            f"label values {sorted(labels.names)} are not 1..{len(labels.names)}; "
            "a Segmentation numbers its segments from 1"
        )
    category, category_meaning, kind, kind_meaning = _PROPERTY.get(preset, _PROPERTY["bone"])
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"holo {preset} preset",
        version=__version__,
        family=Code("110001", "DCM", "Image Processing"),
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=label,
            segment_label=name,
            segmented_property_category=Code(category, "SCT", category_meaning),
            segmented_property_type=Code(kind, "SCT", kind_meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for label, name in labels.names.items()
    ]
    volume = hd.Volume(
        array=np.ascontiguousarray(labels.labels),
        affine=labels.affine,
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(ct[0].FrameOfReferenceUID),
    )
    return hd.seg.Segmentation(
        source_images=list(ct),
        pixel_array=volume,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=__version__,
        device_serial_number=device_serial_number,
        series_description=f"holo {preset} segmentation",
    )


def model_objects(store: Store, model_id: str, *, device_serial_number: str = "") -> ModelObjects:
    """Build the DICOM objects of a stored model (see the module).

    The CT series is read again from the study's files, as the conversion read it (the
    job's series, or the CT series with the most images), and segmented again with the
    model's preset.

    Parameters
    ----------
    device_serial_number
        (0018,1000) of the objects, Type 1 where holo is the equipment; default this
        machine's host name.

    Raises
    ------
    NotFoundError
        No model ``model_id``.
    InvalidRequestError
        A radiograph model: a panel, no meshes to send.
    StudyError, PipelineError
        The study cannot be read again, or no longer gives the model's structures.
    """
    from holo.export.meshes import full_detail_meshes

    model = store.get_model(model_id)
    meshes = full_detail_meshes(store.blob_path(model.sha256).read_bytes())
    if not meshes:
        raise InvalidRequestError(
            f"model {model_id} is a radiograph panel, not a 3-D model: it has no meshes to "
            "push; push a model converted from a CT study"
        )
    serial = (device_serial_number or platform.node() or "holo")[:64]
    from holo.imaging.index import index_files
    from holo.imaging.series import assemble_volume
    from holo.imaging.sources import NamedFile, expand_inputs
    from segmentation.segmenter import segment

    job = store.get_job(model.job_id)
    files = [NamedFile(path, name) for name, path in store.study_files(model.study_id)]
    with expand_inputs(files, scratch=store.tmp_dir) as named:
        series = index_files(named, source=f"study {model.study_id}").volume_series(
            job.series_uid or None
        )
        volume = assemble_volume(series)
        labels = segment(volume, model.preset)
        if set(labels.names.values()) != set(meshes):
            raise PipelineError(
                f"model {model_id}: its study segments into {sorted(labels.names.values())} "
                f"now, not the model's {sorted(meshes)}; convert the study again and push "
                "the new model"
            )
        ct = [instance.dataset for instance in series.instances]
        return _objects(model, ct, meshes, labels, serial)


def _objects(
    model: ModelRecord, ct: list[Any], meshes: dict[str, Any], labels: Any, serial: str
) -> ModelObjects:
    created = dt.datetime.fromtimestamp(model.created_unix_ns / 1e9, dt.UTC)
    key = (model.model_id, model.sha256)
    stl_series = _uid(*key, "stl-series")
    seg_series = _uid(*key, "seg-series")
    stl = [
        encapsulated_stl(
            ct,
            stl_bytes(vertices, faces, name),
            name=name,
            series_uid=stl_series,
            sop_uid=_uid(*key, "stl", name),
            instance_number=number,
            created=created,
            device_serial_number=serial,
        )
        for number, (name, (vertices, faces)) in enumerate(meshes.items(), start=1)
    ]
    seg = segmentation(
        ct,
        labels,
        preset=model.preset,
        series_uid=seg_series,
        sop_uid=_uid(*key, "seg"),
        device_serial_number=serial,
    )
    first = ct[0]
    logger.info("model %s: %d STL instance(s) and a SEG built", model.model_id, len(stl))
    return ModelObjects(
        study_uid=str(first.StudyInstanceUID),
        ct_series_uid=str(first.SeriesInstanceUID),
        stl_series_uid=stl_series,
        seg_series_uid=seg_series,
        stl=stl,
        seg=seg,
    )
