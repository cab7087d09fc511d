"""PACS nodes kept, checked and searched (issue 19, first part) against a real PACS: Orthanc
from Debian with its DICOMweb plugin (``tests/orthanc_server.py``), holding the sample knee
CT and a CR chest X-ray from ``../shared/data``. Searches go by QIDO-RS and by C-FIND and
must find the same studies.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from engines import free_port
from orthanc_server import OrthancServer

from holo.cli.main import main
from holo.errors import InvalidRequestError, NotFoundError, UnavailableError
from holo.pacs import PacsNode, PacsNodes, echo, find_studies, pull_study


@pytest.fixture(scope="module")
def orthanc(sample_ct: Path, shared_data: Path) -> Iterator[OrthancServer]:
    # holo's AE title maps to a free port, where a C-MOVE pull listens.
    with OrthancServer(holo_port=free_port()) as server:
        server.store(sorted(sample_ct.iterdir()))
        server.store([shared_data / "xray_cr_chest_monochrome1_wg04_rg1" / "RG1_J2KI.dcm"])
        yield server


def test_nodes_are_kept_privately_and_shown_without_their_password(tmp_path: Path) -> None:
    nodes = PacsNodes(tmp_path)
    assert nodes.list() == []
    nodes.add(PacsNode("archive", dicomweb="https://pacs.example/dicom-web", username="holo",
                       password="s3cret"))  # fmt: skip
    nodes.add(PacsNode("scanner", ae_title="CT1", host="10.0.0.5", port=104))
    assert [n.name for n in nodes.list()] == ["archive", "scanner"]
    assert stat.S_IMODE(nodes.path.stat().st_mode) == 0o600
    assert nodes.get("archive").public()["password"] == "set"
    assert "s3cret" not in json.dumps([n.public() for n in nodes.list()])
    with pytest.raises(InvalidRequestError, match="exists already"):
        nodes.add(PacsNode("archive", dicomweb="https://other/dicom-web"))
    nodes.add(PacsNode("archive", dicomweb="https://other/dicom-web"), replace=True)
    assert nodes.get("archive").dicomweb == "https://other/dicom-web"
    nodes.remove("scanner")
    with pytest.raises(NotFoundError):
        nodes.get("scanner")


@pytest.mark.parametrize(
    ("node", "complaint"),
    [
        (PacsNode("x"), "give --dicomweb URL, or --ae-title"),
        (PacsNode("x", dicomweb="ftp://pacs"), "is not an http(s) URL"),
        (PacsNode("x", ae_title="A" * 17, host="h", port=104), "AE title"),
        (PacsNode("x", ae_title="CT1", host="h"), "needs --ae-title, --host and --port"),
        (PacsNode("bad name", dicomweb="https://pacs"), "is not allowed"),
        (PacsNode("x", dicomweb="https://pacs", ca_file="/nowhere.pem"), "no such file"),
    ],
)
def test_a_malformed_node_is_refused_in_one_line(
    tmp_path: Path, node: PacsNode, complaint: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        PacsNodes(tmp_path).add(node)
    assert complaint in str(refused.value) and "\n" not in str(refused.value)
    assert not PacsNodes(tmp_path).path.exists()


def _node(orthanc: OrthancServer, *, web: bool = True, dimse: bool = True) -> PacsNode:
    return PacsNode(
        "orthanc",
        dicomweb=orthanc.dicomweb if web else "",
        ae_title=orthanc.ae_title if dimse else "",
        host="127.0.0.1" if dimse else "",
        port=orthanc.dicom_port if dimse else 0,
    )


def test_echo_checks_each_protocol_a_node_has(orthanc: OrthancServer) -> None:
    assert echo(_node(orthanc)) == [("DICOMweb", "ok"), ("C-ECHO", "ok")]
    gone = PacsNode("gone", dicomweb="http://127.0.0.1:9/dicom-web", ae_title="X",
                    host="127.0.0.1", port=9)  # fmt: skip
    results = dict(echo(gone))
    assert "PACS node gone (http://127.0.0.1:9/dicom-web) does not answer" in results["DICOMweb"]
    assert "PACS node gone (X@127.0.0.1:9) does not answer" in results["C-ECHO"]


@pytest.mark.parametrize("protocol", ["QIDO-RS", "C-FIND"])
def test_find_by_patient_modality_and_date(
    orthanc: OrthancServer, sample_ct: Path, protocol: str
) -> None:
    node = _node(orthanc, web=protocol == "QIDO-RS", dimse=protocol == "C-FIND")
    knee = pydicom.dcmread(sorted(sample_ct.iterdir())[0], stop_before_pixels=True)
    everything = find_studies(node)
    assert len(everything) == 2
    assert len(find_studies(node, limit=1)) == 1  # the rest is not waited for
    [found] = find_studies(node, patient_id=str(knee.PatientID))
    assert found.study_uid == str(knee.StudyInstanceUID)
    assert found.modalities == ("CT",) and found.instances == len(list(sample_ct.iterdir()))
    assert [s.study_uid for s in find_studies(node, modality="CT")] == [found.study_uid]
    assert len(find_studies(node, modality="CR")) == 1
    assert find_studies(node, patient_id="nobody") == []
    assert find_studies(node, date=f"{knee.StudyDate}-") != []
    with pytest.raises(InvalidRequestError, match="not a DICOM date"):
        find_studies(node, date="31/01/2024")


def test_the_command_line_adds_checks_and_searches(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    add = ["pacs", "--data", data, "add", "orthanc", "--dicomweb", orthanc.dicomweb,
           "--ae-title", orthanc.ae_title, "--host", "127.0.0.1", "--port",
           str(orthanc.dicom_port)]  # fmt: skip
    assert main(add) == 0
    assert main(["pacs", "--data", data, "echo", "orthanc"]) == 0
    assert "DICOMweb: ok" in capsys.readouterr().out
    assert main(["pacs", "--data", data, "find", "orthanc", "--modality", "CT", "--json"]) == 0
    [study] = json.loads(capsys.readouterr().out)
    assert study["modalities"] == ["CT"]
    assert main(["pacs", "--data", data, "nodes"]) == 0
    assert "orthanc" in capsys.readouterr().out
    study_uid = study["study_uid"]
    pulled = tmp_path / "pulled"
    assert main(["pacs", "--data", data, "pull", "orthanc", study_uid, "-o", str(pulled),
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["fetched"] == len(list(pulled.rglob("*.dcm")))
    no_listen = ["pacs", "--data", data, "pull", "orthanc", study_uid, "-o", str(pulled),
                 "--via", "c-move", "--ae-title", "HOLO"]  # fmt: skip
    assert main(no_listen) == 2
    assert "a C-MOVE pull needs --listen HOST:PORT" in capsys.readouterr().err
    assert main(["pacs", "--data", data, "find", "nowhere"]) == 2
    assert "no PACS node with id 'nowhere'" in capsys.readouterr().err.replace('"', "'")


def _via(orthanc: OrthancServer, protocol: str) -> dict[str, str]:
    """pull_study's arguments for ``protocol``."""
    if protocol != "C-MOVE":
        return {}
    return {"via": "c-move", "move_listen": f"127.0.0.1:{orthanc.holo_port}"}


@pytest.mark.parametrize("protocol", ["WADO-RS", "C-GET", "C-MOVE"])
def test_a_pull_fetches_the_study_as_stored_and_resumes(
    orthanc: OrthancServer, sample_ct: Path, tmp_path: Path, protocol: str
) -> None:
    node = _node(orthanc, web=protocol == "WADO-RS", dimse=protocol != "WADO-RS")
    originals = {}
    for path in sample_ct.iterdir():
        ds = pydicom.dcmread(path)
        originals[str(ds.SOPInstanceUID)] = ds
    study_uid = str(next(iter(originals.values())).StudyInstanceUID)
    folder = tmp_path / "pulled"
    first = pull_study(node, study_uid, folder, **_via(orthanc, protocol))
    assert (first.listed, first.fetched, first.already_held) == (len(originals),) * 2 + (0,)
    pulled = {p.stem: pydicom.dcmread(p) for p in folder.rglob("*.dcm")}
    assert pulled.keys() == originals.keys()
    for uid, ds in pulled.items():  # the same pixels and geometry as sent to the PACS
        assert ds.pixel_array.tobytes() == originals[uid].pixel_array.tobytes()
        assert ds.ImagePositionPatient == originals[uid].ImagePositionPatient
    # Cut short: a third of the files gone; the next pull fetches only those.
    gone = sorted(folder.rglob("*.dcm"))[::3]
    for path in gone:
        path.unlink()
    again = pull_study(node, study_uid, folder, **_via(orthanc, protocol))
    assert (again.fetched, again.already_held) == (len(gone), len(originals) - len(gone))
    assert {p.stem for p in folder.rglob("*.dcm")} == originals.keys()
    assert not [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    from holo.imaging import read_series

    volume = read_series(folder)  # holo convert FOLDER reads it as any study folder
    assert volume.array.shape[0] == len(originals)


def test_pulling_what_the_node_does_not_hold_says_so(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError, match=r"holds no instance of study 1\.2\.3"):
        pull_study(_node(orthanc), "1.2.3", tmp_path / "x")
    with pytest.raises(InvalidRequestError, match="is not a DICOM UID"):
        pull_study(_node(orthanc), "1.2.3/../..", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("protocol", ["WADO-RS", "C-GET", "C-MOVE"])
def test_a_pacs_gone_mid_pull_is_a_clear_error_and_the_pull_resumes(
    sample_ct: Path, tmp_path: Path, protocol: str
) -> None:
    with OrthancServer(holo_port=free_port()) as pacs:
        sent = pacs.store(sorted(sample_ct.iterdir()))
        study_uid = str(pydicom.dcmread(next(sample_ct.iterdir())).StudyInstanceUID)
        node = _node(pacs, web=protocol == "WADO-RS", dimse=protocol != "WADO-RS")
        folder = tmp_path / "pulled"

        def stop_at_30(done: int, total: int) -> None:
            # A whole series comes in one request: progress may step past 30.
            if done >= 30 and pacs.running:
                pacs.stop(kill=True)  # the archive goes away mid-transfer

        if protocol == "WADO-RS":
            # A whole series comes as one multipart stream, and the knee's 3.9 MB is all in
            # the socket's buffers before the 30th instance is written: a pull that already
            # holds one instance goes instance by instance, and meets the outage.
            first = sorted(sample_ct.iterdir())[0]
            ds = pydicom.dcmread(first, stop_before_pixels=True)
            held = folder / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
            held.parent.mkdir(parents=True)
            held.write_bytes(first.read_bytes())
        with pytest.raises(UnavailableError) as gone:
            pull_study(node, study_uid, folder, progress=stop_at_30, **_via(pacs, protocol))
        message = str(gone.value)
        assert message.startswith("PACS node orthanc") and "\n" not in message, message
        kept = list(folder.rglob("*.dcm"))
        assert len(kept) >= 30
        for path in kept:  # nothing half-stored: every file there is a whole instance
            assert pydicom.dcmread(path).pixel_array.size > 0
        assert not [p for p in folder.rglob("*") if p.is_file() and p.suffix != ".dcm"]
        pacs.start()
        again = pull_study(node, study_uid, folder, **_via(pacs, protocol))
        assert again.already_held == len(kept) and again.fetched == sent - len(kept)
        assert len(list(folder.rglob("*.dcm"))) == sent
