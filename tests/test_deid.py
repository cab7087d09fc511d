"""De-identification (PS3.15 Annex E basic profile, as an allowlist) of outward metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from holo.imaging import deidentify_dataset, public_metadata, read_series

IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StudyID",
    "StationName",
    "DeviceSerialNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)


def _secrets(ds: pydicom.Dataset) -> set[str]:
    out = set()
    for kw in IDENTIFYING:
        value = ds.get(kw)
        if value is None:
            continue
        values = value if isinstance(value, pydicom.multival.MultiValue) else [value]
        out |= {str(v) for v in values if len(str(v).strip()) >= 4}
    return out


def _text(ds: pydicom.Dataset) -> str:
    parts = [repr(elem.value) for elem in ds.iterall() if elem.tag != 0x7FE00010]
    return "\n".join(parts)


def _identified_files(shared_data: Path, sample_ct: Path) -> list[Path]:
    return [
        shared_data / "xray_dx_feline_thorax_deid" / "cat.dcm",
        shared_data / "ct_skull_phantom_philips_bone_1mm" / "I10.dcm",
        shared_data / "ct_chest_missing_and_duplicate_slices" / "CT2.dcm",
        shared_data / "xray_cr_hip_wg04_rg2" / "RG2_UNC.dcm",
        *sorted(sample_ct.glob("*.dcm"))[:1],
    ]


def test_no_identity_survives_dataset_deidentification(shared_data: Path, sample_ct: Path) -> None:
    files = _identified_files(shared_data, sample_ct)
    assert len(files) == 5, "the sample CT is missing: run `make sample-data`"
    for path in files:
        ds = pydicom.dcmread(path)
        secrets = _secrets(ds)
        assert secrets, f"{path.name} has no identity to remove; the test would prove nothing"
        clean = deidentify_dataset(ds, salt="test-salt")
        text = _text(clean) + repr(clean.file_meta)
        leaked = {s for s in secrets if s in text}
        assert not leaked, f"{path.name}: {leaked}"
        assert not any(elem.tag.is_private for elem in clean.iterall())
        assert clean.PatientIdentityRemoved == "YES"
        assert clean.PatientName == "" and clean.PatientID == ""  # Z: present, empty
        assert clean.Modality == ds.Modality and clean.Rows == ds.Rows
        assert clean.PixelData == ds.PixelData
        assert "PatientName" in ds, "the input must not be modified"


def test_uids_replaced_consistently_per_salt(shared_data: Path) -> None:
    folder = shared_data / "ct_skull_phantom_philips_bone_1mm"
    a, b = (pydicom.dcmread(folder / n) for n in ("I10.dcm", "I20.dcm"))
    ca, cb = (deidentify_dataset(d, salt="s1") for d in (a, b))
    assert ca.SeriesInstanceUID == cb.SeriesInstanceUID != a.SeriesInstanceUID
    assert ca.FrameOfReferenceUID == cb.FrameOfReferenceUID != a.FrameOfReferenceUID
    assert ca.SOPInstanceUID != cb.SOPInstanceUID
    assert ca.SeriesInstanceUID.startswith("2.25.")
    other = deidentify_dataset(a, salt="s2")
    assert other.SeriesInstanceUID != ca.SeriesInstanceUID


def test_public_metadata_of_a_volume_has_no_identity(sample_ct: Path) -> None:
    volume = read_series(sample_ct)
    source = pydicom.dcmread(sorted(sample_ct.glob("*.dcm"))[0], stop_before_pixels=True)
    public = public_metadata(volume.metadata, salt="k")
    text = json.dumps(public)
    for secret in _secrets(source):
        assert secret not in text, secret
    assert public["PatientIdentityRemoved"] == "YES"
    assert public["Modality"] == "CT"
    assert (
        public["FrameOfReferenceUID"]
        == public_metadata(volume.metadata, salt="k")["FrameOfReferenceUID"]
    )
    assert "StudyDescription" not in public and "InstitutionName" not in public


@pytest.mark.parametrize("keyword", ["SeriesDescription", "StudyDescription", "AccessionNumber"])
def test_descriptions_and_accession_never_pass(keyword: str) -> None:
    public = public_metadata({keyword: "DOE JOHN knee left", "Modality": "CT"})
    assert "DOE JOHN" not in json.dumps(public)
