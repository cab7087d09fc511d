"""The server's PacsService (issue 19) against a real PACS (Orthanc from Debian,
``tests/orthanc_server.py``): a radiologist's ``StartPull`` fetches a study into the case
as the same kind of study an upload makes; progress streams, a pull cancels and resumes,
a PACS gone mid-pull fails it in one line and nothing is half-stored. Searches and pushes
go through the server too; every PACS method is the radiologist's alone, and pushes are
audited.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pydicom
import pytest
from orthanc_server import OrthancServer

from holo.cli.main import main
from holo.client import ClientError, HoloClient
from holo.pacs import PacsNode, PacsNodes
from holo.testing import TestServer
from holo.v1 import asset_pb2

CASE = "case-pacs"


@pytest.fixture(scope="module")
def orthanc(sample_ct: Path) -> Iterator[OrthancServer]:
    with OrthancServer() as pacs:
        pacs.store(sorted(sample_ct.iterdir()))
        yield pacs


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancServer
) -> Iterator[TestServer]:
    data = tmp_path_factory.mktemp("store")
    PacsNodes(data).add(_node("archive", orthanc, dimse=False))
    PacsNodes(data).add(_node("dimse", orthanc, web=False))
    with TestServer(data) as running:
        yield running


def _node(name: str, pacs: OrthancServer, *, web: bool = True, dimse: bool = True) -> PacsNode:
    return PacsNode(
        name,
        dicomweb=pacs.dicomweb if web else "",
        ae_title=pacs.ae_title if dimse else "",
        host="127.0.0.1" if dimse else "",
        port=pacs.dicom_port if dimse else 0,
    )


@pytest.fixture()
def radiologist(server: TestServer) -> Iterator[HoloClient]:
    with server.client("radiologist", CASE) as client:
        yield client


def _knee_uid(sample_ct: Path) -> str:
    return str(pydicom.dcmread(next(sample_ct.iterdir()), stop_before_pixels=True).StudyInstanceUID)


def _pull_folders(server: TestServer) -> list[Path]:
    root = server.data / "pacs-pulls"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _study_facts(study: asset_pb2.Study) -> tuple[object, ...]:
    series = sorted(
        (s.series_instance_uid, s.modality, s.kind, s.images, s.series_description)
        for s in study.series
    )
    return (study.study_instance_uid, tuple(series), study.patient_name, study.patient_id)


def test_search_through_the_server_is_the_radiologists_alone(
    server: TestServer, radiologist: HoloClient, sample_ct: Path
) -> None:
    assert [n.name for n in radiologist.pacs_nodes()] == ["archive", "dimse"]
    web = radiologist.find_pacs_studies("archive", modality="CT")
    dimse = radiologist.find_pacs_studies("dimse", modality="CT")
    assert [s.study_instance_uid for s in web] == [s.study_instance_uid for s in dimse]
    assert [s.study_instance_uid for s in web] == [_knee_uid(sample_ct)]
    assert web[0].instances == len(list(sample_ct.iterdir()))
    with pytest.raises(ClientError) as unknown:
        radiologist.find_pacs_studies("nowhere")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    for role in ("presenter", "expert", "observer"):
        with server.client(role, CASE) as other, pytest.raises(ClientError) as denied:
            other.find_pacs_studies("archive")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        with server.client(role, CASE) as other, pytest.raises(ClientError) as denied:
            other.start_pull("archive", _knee_uid(sample_ct))
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("node", ["archive", "dimse"])
def test_a_pulled_study_is_the_same_kind_as_an_uploaded_one_and_converts(
    server: TestServer, radiologist: HoloClient, sample_ct: Path, node: str
) -> None:
    pull = radiologist.start_pull(node, _knee_uid(sample_ct), convert_preset="bone")
    seen = []
    final = radiologist.wait_pull(pull.pull_id.value, on_update=seen.append)
    assert final.state == asset_pb2.JOB_STATE_SUCCEEDED, final.message
    assert final.via == ("dicomweb" if node == "archive" else "c-get")
    total = len(list(sample_ct.iterdir()))
    assert (final.instances_total, final.instances_fetched) == (total, total)
    assert final.bytes >= sum(p.stat().st_size for p in sample_ct.iterdir()) * 0.9
    assert "fetch" in [s.stage for s in seen] and "store" in [s.stage for s in seen]
    fetched = [s.instances_fetched for s in seen]
    assert fetched == sorted(fetched) and len(set(fetched)) > 2  # progress, in order
    assert not _pull_folders(server)  # stored by content: the pulled copies are gone
    pulled = next(s for s in radiologist.list_studies() if s.study_id.value == final.study_id.value)
    uploaded = radiologist.upload_study([sample_ct])
    assert _study_facts(pulled) == _study_facts(uploaded)
    with server.client("observer", CASE) as observer:
        seen_by_observer = {s.study_id.value: s for s in observer.list_studies()}
    public = seen_by_observer[final.study_id.value]
    assert not public.patient_name and not public.patient_id
    assert public.study_instance_uid != pulled.study_instance_uid  # a replacement UID
    assert _study_facts(public) == _study_facts(seen_by_observer[uploaded.study_id.value])
    job = radiologist.wait_job(final.job_id.value)
    assert job.state == asset_pb2.JOB_STATE_SUCCEEDED, job.message
    assert job.study_id.value == final.study_id.value
    audit = (server.data / "audit.jsonl").read_text()
    assert '"action":"study_pulled"' in audit and f'"pacs_node":"{node}"' in audit


def test_a_model_is_pushed_back_through_the_server_and_audited(
    server: TestServer, radiologist: HoloClient, sample_ct: Path, orthanc: OrthancServer
) -> None:
    """The objects' content is checked in test_pacs_push.py; here: the RPC, who may call
    it, what reaches the archive and the audit trail."""
    study_uid = _knee_uid(sample_ct)
    pull = radiologist.wait_pull(
        radiologist.start_pull("archive", study_uid, convert_preset="bone").pull_id.value
    )
    job = radiologist.wait_job(pull.job_id.value)
    assert job.state == asset_pb2.JOB_STATE_SUCCEEDED, job.message
    model_id = job.model_id.value
    with server.client("presenter", CASE) as presenter, pytest.raises(ClientError) as denied:
        presenter.push_model("archive", model_id)
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with (
        server.client("radiologist", "other-case") as stranger,
        pytest.raises(ClientError) as other,
    ):
        stranger.push_model("archive", model_id)
    assert other.value.code == grpc.StatusCode.PERMISSION_DENIED
    pushed = radiologist.push_model("archive", model_id)
    assert pushed.via == "dicomweb" and len(pushed.stl_sop_instance_uids) == 3
    again = radiologist.push_model("dimse", model_id)
    assert again.via == "dimse" and again.stl_series_instance_uid == pushed.stl_series_instance_uid
    from holo.pacs.query import web_client

    held = web_client(_node("check", orthanc, dimse=False)).search_for_series(
        study_instance_uid=study_uid
    )
    modalities = sorted(s["00080060"]["Value"][0] for s in held)
    assert modalities == ["CT", "M3D", "SEG"]  # one series each, pushed twice
    assert all(s["0020000D"]["Value"][0] == study_uid for s in held)
    audit = (server.data / "audit.jsonl").read_text().splitlines()
    pushes = [line for line in audit if '"action":"model_pushed"' in line]
    assert len(pushes) == 2 and all(model_id in line for line in pushes)
    patient = pydicom.dcmread(next(sample_ct.iterdir()), stop_before_pixels=True)
    assert str(patient.PatientName) not in "\n".join(audit)
    with pytest.raises(ClientError) as down:
        PacsNodes(server.data).add(PacsNode("gone", dicomweb="http://127.0.0.1:9/dicom-web"))
        radiologist.push_model("gone", model_id)
    assert down.value.code == grpc.StatusCode.UNAVAILABLE and "PACS node gone" in str(down.value)
    failed = [line for line in (server.data / "audit.jsonl").read_text().splitlines()
              if '"action":"model_push_failed"' in line]  # fmt: skip
    assert len(failed) == 1 and '"pacs_node":"gone"' in failed[0]


def test_a_cancelled_pull_keeps_what_arrived_and_the_next_resumes(
    server: TestServer, radiologist: HoloClient, sample_ct: Path
) -> None:
    pull = radiologist.start_pull("archive", _knee_uid(sample_ct))
    cancelled = None

    def cancel_after_ten(state: object) -> None:
        nonlocal cancelled
        if cancelled is None and getattr(state, "instances_fetched", 0) >= 10:
            cancelled = radiologist.cancel_pull(pull.pull_id.value)

    final = radiologist.wait_pull(pull.pull_id.value, on_update=cancel_after_ten)
    assert final.state == asset_pb2.JOB_STATE_CANCELLED, final.message
    assert cancelled is not None and cancelled.state == asset_pb2.JOB_STATE_CANCELLED
    assert "next pull of this study resumes" in final.message
    kept = len(_pull_folders(server))
    total = len(list(sample_ct.iterdir()))
    assert 10 <= kept < total
    assert not final.study_id.value
    again = radiologist.wait_pull(
        radiologist.start_pull("archive", _knee_uid(sample_ct)).pull_id.value
    )
    assert again.state == asset_pb2.JOB_STATE_SUCCEEDED, again.message
    # (the archive may hold more of the study by now: the objects a model pushed back)
    assert again.instances_total >= total
    assert (again.instances_held, again.instances_fetched) == (kept, again.instances_total - kept)
    assert not _pull_folders(server)


def test_a_pacs_gone_mid_pull_fails_in_one_line_stores_nothing_and_resumes(
    tmp_path: Path, sample_ct: Path
) -> None:
    # By C-GET: the knee's 3.9 MB come by WADO-RS as one multipart stream that is all in
    # the socket's buffers at once (test_pacs.py has the WADO-RS outage, instance by
    # instance); C-GET's instances come one sub-operation at a time.
    with OrthancServer() as pacs, TestServer(tmp_path / "store") as server:
        pacs.store(sorted(sample_ct.iterdir()))
        PacsNodes(server.data).add(_node("archive", pacs, web=False))
        with server.client("radiologist", CASE) as radiologist:
            pull = radiologist.start_pull("archive", _knee_uid(sample_ct))

            def stop_at_20(state: object) -> None:
                if getattr(state, "instances_fetched", 0) >= 20 and pacs.running:
                    pacs.stop(kill=True)  # the archive goes away mid-transfer

            failed = radiologist.wait_pull(pull.pull_id.value, on_update=stop_at_20)
            assert failed.state == asset_pb2.JOB_STATE_FAILED
            assert failed.message.startswith("PACS node archive") and "\n" not in failed.message
            assert radiologist.list_studies() == []  # nothing half-stored
            kept = len(_pull_folders(server))
            assert kept >= 20
            pacs.start()
            again = radiologist.wait_pull(
                radiologist.start_pull("archive", _knee_uid(sample_ct)).pull_id.value
            )
            assert again.state == asset_pb2.JOB_STATE_SUCCEEDED, again.message
            assert again.instances_held == kept
            assert again.instances_fetched == len(list(sample_ct.iterdir())) - kept
            assert len(radiologist.list_studies()) == 1


def test_refusals_are_one_line(radiologist: HoloClient, sample_ct: Path) -> None:
    for call, code, words in (
        (lambda: radiologist.start_pull("nowhere", "1.2.3"), grpc.StatusCode.NOT_FOUND, "nowhere"),
        (lambda: radiologist.start_pull("archive", "1.2/../3"), grpc.StatusCode.INVALID_ARGUMENT,
         "is not a DICOM UID"),
        (lambda: radiologist.start_pull("archive", _knee_uid(sample_ct), convert_preset="brain"),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown preset"),
        (lambda: radiologist.find_pacs_studies("archive", limit=5000),
         grpc.StatusCode.INVALID_ARGUMENT, "narrow the search"),
    ):  # fmt: skip
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.code == code and words in str(refused.value)
        assert "\n" not in str(refused.value)
    missing = radiologist.wait_pull(radiologist.start_pull("archive", "1.2.3.4").pull_id.value)
    assert missing.state == asset_pb2.JOB_STATE_FAILED
    assert "holds no instance of study 1.2.3.4" in missing.message


def test_malformed_instances_get_the_errors_an_upload_of_them_gets(
    tmp_path: Path, shared_data: Path
) -> None:
    """Studies a PACS takes but holo cannot convert (an NM image, an RT dose with bad VRs),
    pulled by WADO-RS and by C-GET and converted, fail as uploads of the same files do, in
    the same one line. A big-endian CT with undefined lengths that pydicom cannot read
    fails a WADO-RS pull in dicomweb-client's decoding: one line naming the instance and
    the node (Orthanc sends it transcoded by C-GET, which holo then reads)."""
    malformed = shared_data / "malformed_and_edge_cases"
    unreadable = malformed / "GH177_CT1_IVRLE_BigEndian_undefined_length.dcm"
    not_ct = [malformed / "JPEG2000-embedded-sequence-delimiter.dcm", malformed / "badVR.dcm"]
    with OrthancServer() as pacs, TestServer(tmp_path / "store") as server:
        pacs.store([unreadable, *not_ct])
        PacsNodes(server.data).add(_node("archive", pacs, dimse=False))
        PacsNodes(server.data).add(_node("dimse", pacs, web=False))
        with server.client("radiologist", CASE) as radiologist:
            found = {s.modalities[0]: s.study_instance_uid for s in
                     radiologist.find_pacs_studies("archive")}  # fmt: skip
            assert sorted(found) == ["CT", "NM", "RTDOSE"]

            def pull(node: str, study: str, preset: str = "") -> Any:
                started = radiologist.start_pull(node, study, convert_preset=preset)
                return radiologist.wait_pull(started.pull_id.value)

            by_web = pull("archive", found["CT"])
            assert by_web.state == asset_pb2.JOB_STATE_FAILED
            assert "not a readable DICOM file (No tag to read" in by_web.message
            assert "PACS node archive holds it so" in by_web.message
            assert "\n" not in by_web.message and radiologist.list_studies() == []

            for path, modality in zip(not_ct, ["NM", "RTDOSE"], strict=True):
                study = radiologist.upload_study([path])
                job = radiologist.start_conversion(study.study_id.value, preset="bone")
                uploaded = radiologist.wait_job(job.job_id.value)
                assert uploaded.state == asset_pb2.JOB_STATE_FAILED
                for node in ("archive", "dimse"):
                    pulled = pull(node, found[modality], "bone")
                    assert pulled.state == asset_pb2.JOB_STATE_SUCCEEDED, pulled.message
                    converted = radiologist.wait_job(pulled.job_id.value)
                    assert converted.state == asset_pb2.JOB_STATE_FAILED
                    # The same error, each naming the file as its study lists it.
                    assert converted.message.replace(f"{_sop(path)}.dcm", path.name) == (
                        uploaded.message
                    ), (converted.message, uploaded.message)


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_the_command_line_searches_pulls_and_pushes_through_the_server(
    server: TestServer, sample_ct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = server.token("radiologist", "case-cli")
    remote = ["pacs", "--server", server.address, "--insecure", "--token", token]
    assert main([*remote, "nodes"]) == 0
    assert "archive" in capsys.readouterr().out
    assert main([*remote, "find", "archive", "--modality", "CT", "--json"]) == 0
    [study] = json.loads(capsys.readouterr().out)
    assert study["study_uid"] == _knee_uid(sample_ct)
    assert main([*remote, "pull", "archive", study["study_uid"], "--series",
                 _series_uid(sample_ct), "--convert", "bone", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["pull"]["state"] == "JOB_STATE_SUCCEEDED" and out["job"]["model_id"]["value"]
    assert main([*remote, "push", "dimse", out["job"]["model_id"]["value"]]) == 0
    assert "3 STL instance(s)" in capsys.readouterr().out
    # What needs the server's folder says so, and a folder pull needs its folder.
    assert main([*remote, "add", "x", "--dicomweb", "https://pacs/dicom-web"]) == 2
    assert "give --data DIR" in capsys.readouterr().err
    assert main([*remote, "pull", "archive", study["study_uid"], "-o", "folder"]) == 2
    assert "for pulls into a folder (with --data DIR)" in capsys.readouterr().err
    observer = server.token("observer", "case-cli")
    assert main(["pacs", "--server", server.address, "--insecure", "--token", observer,
                 "find", "archive"]) != 0  # fmt: skip
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def _series_uid(sample_ct: Path) -> str:
    return str(
        pydicom.dcmread(next(sample_ct.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    )
