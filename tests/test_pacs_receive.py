"""The DICOM port of ``holo serve`` (issue 19): a real PACS (Orthanc, ``tests/orthanc_server.py``)
sends a study to a real in-process server, which stores it as an upload of the same files
would be and converts it by rule; unknown senders are rejected, malformed instances
refused without anything half-stored, and a sender that keeps its association open gets
its study stored after the quiet period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from orthanc_server import OrthancServer
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from holo.errors import HoloError, InvalidRequestError
from holo.pacs.intake import store_study
from holo.pacs.rules import ConvertRule
from holo.store import Store
from holo.testing import TestServer
from holo.v1 import asset_pb2

MALFORMED = "malformed_and_edge_cases"


def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _scratch_files(server: TestServer) -> list[Path]:
    assert server.running is not None
    return [p for p in (server.running.store.tmp_dir / "dicom-received").rglob("*") if p.is_file()]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestServer]:
    with TestServer(
        tmp_path / "data", dicom_allow=("ORTHANC",), dicom_convert=("modality=CT",)
    ) as started:
        yield started


def _association(server: TestServer, calling: str, contexts: list[tuple[str, list[str]]]) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    return ae.associate("127.0.0.1", server.dicom_port, ae_title="HOLO")


def test_a_study_orthanc_sends_is_stored_like_an_upload_and_converted(
    server: TestServer, sample_ct: Path
) -> None:
    files = sorted(sample_ct.iterdir())
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with OrthancServer(holo_port=server.dicom_port) as pacs:
        pacs.store(files)
        sent = pacs.send(study_uid)
    assert sent["InstancesCount"] == len(files) and sent["FailedInstancesCount"] == 0
    inbox = server.client("radiologist", "inbox")
    [received] = _wait("the received study", inbox.list_studies)
    uploaded = server.client("radiologist", "case-1").upload_study(files)
    for field in ("study_instance_uid", "study_description", "series", "patient_name",
                  "patient_id"):  # fmt: skip
        assert getattr(received, field) == getattr(uploaded, field), field
    assert server.running is not None
    store = server.running.store
    stored = store.get_study(received.study_id.value)
    assert stored.summary == store.get_study(uploaded.study_id.value).summary
    # Kept as sent: the same data sets in the same transfer syntax (the file meta is the
    # receiver's own, as PS3.10 has it: 32 bytes shorter here, so size_bytes differs).
    originals = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
    assert len(stored.files) == len(files)
    for name, sha256 in stored.files[::20]:
        kept = pydicom.dcmread(store.blob_path(sha256))
        original = originals[name.removesuffix(".dcm")]
        assert kept == original
        assert kept.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert not _scratch_files(server)  # the scratch copy went once the study was stored
    # modality=CT: the knee's one CT series converts, without anyone asking.
    [job] = _wait("the rule's conversion", inbox.list_jobs)
    assert inbox.wait_job(job.job_id.value).state == asset_pb2.JOB_STATE_SUCCEEDED
    audit = (server.data / "audit.jsonl").read_text()
    assert '"action":"study_received"' in audit and '"subject":"dicom:ORTHANC"' in audit


def test_unknown_callers_and_wrong_called_titles_are_rejected(server: TestServer) -> None:
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    stranger = _association(server, "STRANGER", [(Verification, [ExplicitVRLittleEndian])])
    assert stranger.is_rejected
    from pynetdicom import AE

    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(Verification)
    wrong = ae.associate("127.0.0.1", server.dicom_port, ae_title="NOT-HOLO")
    assert wrong.is_rejected
    known = _association(server, "ORTHANC", [(Verification, [ExplicitVRLittleEndian])])
    assert known.is_established
    assert known.send_c_echo().Status == 0x0000
    known.release()


def _no_image(study_uid: str) -> Dataset:
    """A data set with every UID but no image: a Basic Text SR without content."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_malformed_instances_are_refused_and_nothing_is_half_stored(
    server: TestServer, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from pynetdicom import _config
    from pynetdicom.dsutils import split_dataset

    # Sent as the files hold them (not decoded by the sender: it could not either).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    unreadable = [
        shared_data / MALFORMED / "GH177_CT1_IVRLE_BigEndian_undefined_length.dcm",
        shared_data / MALFORMED / "emri_small_jpeg_2k_lossless_too_short.dcm",  # no data set
    ]
    metas = [split_dataset(p)[0] for p in unreadable]  # pydicom cannot read the rest
    contexts = [(str(m.MediaStorageSOPClassUID), [str(m.TransferSyntaxUID)]) for m in metas]
    report = _no_image(generate_uid())
    contexts.append((report.SOPClassUID, [ExplicitVRLittleEndian]))
    assoc = _association(server, "ORTHANC", contexts)
    assert assoc.is_established
    for path in unreadable:
        status = assoc.send_c_store(path)
        assert status.Status == 0xC210, path.name  # "cannot understand"
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    assert assoc.send_c_store(report).Status == 0x0000  # readable: judged as a study
    assoc.release()
    # The study of the report is refused with the error an upload of it gets.
    copy = tmp_path / f"{report.SOPInstanceUID}.dcm"
    report.save_as(copy, enforce_file_format=True)
    with Store(tmp_path / "other") as other, pytest.raises(HoloError) as upload_error:
        store_study(other, case_id="c", files=[copy], subject="t", salt="s")
    refusal = f"refused a study of 1 file(s) from ORTHANC: {upload_error.value.message}"
    _wait("the refusal", lambda: refusal in caplog.text, 30)
    assert caplog.text.count("refused an instance from ORTHANC") == 2
    assert server.client("radiologist", "inbox").list_studies() == []
    assert server.running is not None and not _scratch_files(server)
    for record in caplog.records:  # nothing of a patient, and one line each
        assert "\n" not in record.getMessage()


def test_the_quiet_period_completes_a_study_on_an_open_association(
    tmp_path: Path, shared_data: Path
) -> None:
    ct = pydicom.dcmread(shared_data / MALFORMED / "CT_small.dcm")
    with TestServer(tmp_path / "data", dicom_allow=("SCANNER",), dicom_quiet_s=0.5) as server:
        assoc = _association(
            server, "SCANNER", [(ct.SOPClassUID, [str(ct.file_meta.TransferSyntaxUID)])]
        )
        assert assoc.send_c_store(ct).Status == 0x0000
        inbox = server.client("radiologist", "inbox")
        [study] = _wait("the quiet period", inbox.list_studies, 30)
        assert assoc.is_established  # stored while the sender still holds the association
        assert study.study_instance_uid == str(ct.StudyInstanceUID)
        assoc.release()


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ("modality", "'modality' is not KEY=GLOB"),
        ("colour=red", "unknown key 'colour'"),
        ("modality=CT:marble", "unknown preset 'marble'"),
    ],
)
def test_a_malformed_rule_is_refused_at_start_in_one_line(
    tmp_path: Path, rule: str, complaint: str
) -> None:
    server = TestServer(tmp_path / "data", dicom_allow=("ORTHANC",), dicom_convert=(rule,))
    with pytest.raises(InvalidRequestError) as refused:
        server.start()
    server.stop()
    assert complaint in str(refused.value) and "\n" not in str(refused.value)


def test_rules_match_series_attributes_case_insensitively() -> None:
    rule = ConvertRule.parse("modality=CT,body_part=knee*:bone")
    assert rule.preset == "bone"
    assert rule.match({"Modality": "ct", "BodyPartExamined": "KNEE"})
    assert not rule.match({"Modality": "CT", "BodyPartExamined": "HIP"})
    assert ConvertRule.parse("description=*a:b*").match({"SeriesDescription": "A:B bone"})


def test_a_taken_dicom_port_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = TestServer(tmp_path / "data", dicom_allow=("ORTHANC",))
        server.config.dicom_listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(InvalidRequestError) as clash:
            server.start()
        server.stop()
    message = str(clash.value)
    assert "cannot listen on 127.0.0.1:" in message and "--dicom-listen" in message
    assert "\n" not in message
