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
from orthanc_server import OrthancServer

from holo.cli.main import main
from holo.errors import InvalidRequestError, NotFoundError
from holo.pacs import PacsNode, PacsNodes, echo, find_studies


@pytest.fixture(scope="module")
def orthanc(sample_ct: Path, shared_data: Path) -> Iterator[OrthancServer]:
    with OrthancServer() as server:
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
    assert main(["pacs", "--data", data, "find", "nowhere"]) == 2
    assert "no PACS node with id 'nowhere'" in capsys.readouterr().err.replace('"', "'")
