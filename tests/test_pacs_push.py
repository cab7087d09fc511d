"""Pushing a model back to a PACS (issue 19): Encapsulated STL per structure and a
Segmentation, checked by dicom3tools' ``dciodvfy``, sent to a real Orthanc
(``tests/orthanc_server.py``) by STOW-RS and by C-STORE, and read back from it.

The model is the sample knee CT converted once per run (``knee_glb``), published in a
store as the server publishes one; the geometry read back is compared with the GLB as
trimesh loads it (an independent reader from holo's own), the Segmentation with the
label map :func:`segmentation.segmenter.segment` makes from the CT.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import trimesh
from orthanc_server import OrthancServer

from holo.cli.main import main
from holo.errors import InvalidRequestError, NotFoundError, UnavailableError
from holo.export.glb import lps_points_from_scene
from holo.export.meshes import full_detail_meshes
from holo.imaging import read_series
from holo.pacs import PacsNode, PacsNodes, model_objects, push_model
from holo.pacs.intake import store_study
from holo.pacs.objects import ENCAPSULATED_STL
from holo.pacs.query import web_client
from holo.pipeline import convert
from holo.store import Store
from segmentation.segmenter import segment

CASE = "case-push"
DCIODVFY = "/usr/bin/dciodvfy"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class Models:
    data: Path
    model_id: str
    radiograph_id: str
    glb: Path


def _publish(store: Store, files: list[Path], glb: Path) -> str:
    study = store_study(store, case_id=CASE, files=files, subject="test", salt="salt")
    job = store.create_job(study_id=study.study_id, case_id=CASE, preset="bone")
    sha = store.put_blob_file(glb)
    model = store.add_model(case_id=CASE, study_id=study.study_id, job_id=job.job_id,
                            sha256=sha, preset="bone", manifest={})  # fmt: skip
    return model.model_id


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, sample_ct: Path, sample_dx: Path, knee_glb: Path
) -> Iterator[Models]:
    """A store holding the knee's model and a radiograph's (a panel)."""
    data = tmp_path_factory.mktemp("push-data")
    panel = data.parent / "knee_dx.glb"
    convert(sample_dx, panel)
    store = Store(data)
    try:
        knee = _publish(store, sorted(sample_ct.iterdir()), knee_glb)
        radiograph = _publish(store, sorted(sample_dx.iterdir()), panel)
    finally:
        store.close()
    yield Models(data, knee, radiograph, knee_glb)


@pytest.fixture(scope="module")
def orthanc(sample_ct: Path) -> Iterator[OrthancServer]:
    with OrthancServer() as server:
        server.store(sorted(sample_ct.iterdir()))
        yield server


@pytest.fixture
def store(models: Models) -> Iterator[Store]:
    """The store, open for one test (a store is open in one place at a time: the command
    line opens it itself)."""
    store = Store(models.data)
    try:
        yield store
    finally:
        store.close()


def _node(orthanc: OrthancServer, name: str = "orthanc") -> PacsNode:
    return PacsNode(name, dicomweb=orthanc.dicomweb, ae_title=orthanc.ae_title,
                    host="127.0.0.1", port=orthanc.dicom_port)  # fmt: skip


def _orthanc_delete_series(orthanc: OrthancServer, series_uid: str) -> None:
    """Forget a series, so that what the next push sent is what is read back."""
    request = urllib.request.Request(f"{orthanc.rest}/tools/lookup", data=series_uid.encode(),
                                     method="POST")  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as reply:
        found = json.load(reply)
    for item in found:
        if item["Type"] == "Series":
            delete = urllib.request.Request(f"{orthanc.rest}/series/{item['ID']}",
                                            method="DELETE")  # fmt: skip
            urllib.request.urlopen(delete, timeout=10).close()


def _stl_triangles(data: bytes) -> np.ndarray:
    """Binary STL -> its triangles, shape (M, 9) float32, each row sorted-ready."""
    (count,) = np.frombuffer(data, dtype="<u4", count=1, offset=80)
    record = np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    assert len(data) == 84 + count * record.itemsize
    return np.frombuffer(data, dtype=record, count=count, offset=84)["v"].reshape(-1, 9)


def _sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def _glb_triangles(glb: Path) -> dict[str, np.ndarray]:
    """Each structure's full-detail triangles as trimesh loads the GLB (the finest scene,
    node transforms applied, then mapped back to LPS mm)."""
    scene = trimesh.load(glb, process=False)
    found = {}
    for node in scene.graph.nodes_geometry:
        geometry = scene.graph[node][1]
        points = lps_points_from_scene(scene, node).astype(np.float32)
        found[geometry.split(".lod")[0]] = points[scene.geometry[geometry].faces].reshape(-1, 9)
    return found


def test_the_objects_pass_dciodvfy(models: Models, store: Store, tmp_path: Path) -> None:
    if not Path(DCIODVFY).exists():
        pytest.skip(f"{DCIODVFY} not found; apt install dicom3tools (make setup does)")
    objects = model_objects(store, models.model_id)
    assert [ds.SOPClassUID for ds in objects.datasets] == [ENCAPSULATED_STL] * 3 + [SEG_CLASS]
    report = []
    for k, ds in enumerate(objects.datasets):
        path = tmp_path / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
        report += [f"{path.name}: {line}" for line in (run.stdout + run.stderr).splitlines()]
    errors = [line for line in report if "Error" in line]
    assert not errors, "\n".join(report)
    stl = objects.stl[0]
    assert stl.Modality == "M3D" and stl.MIMETypeOfEncapsulatedDocument == "model/stl"
    assert stl.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert stl.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    # Built again, the same instances: a repeated push does not make a second series.
    again = model_objects(store, models.model_id)
    assert [ds.SOPInstanceUID for ds in again.datasets] == [
        ds.SOPInstanceUID for ds in objects.datasets
    ]


@pytest.mark.parametrize("via", ["dicomweb", "dimse"])
def test_push_then_read_back_from_the_pacs(
    models: Models, store: Store, orthanc: OrthancServer, sample_ct: Path, via: str
) -> None:
    objects = model_objects(store, models.model_id)
    for series in (objects.stl_series_uid, objects.seg_series_uid):
        _orthanc_delete_series(orthanc, series)
    result = push_model(store, _node(orthanc), models.model_id, via=via, subject="test")
    assert result.protocol == {"dicomweb": "STOW-RS", "dimse": "C-STORE"}[via]
    assert result.stl_series_uid == objects.stl_series_uid
    assert result.sop_uids == tuple(ds.SOPInstanceUID for ds in objects.datasets)

    ct = pydicom.dcmread(sorted(sample_ct.iterdir())[0], stop_before_pixels=True)
    assert result.study_uid == ct.StudyInstanceUID
    client = web_client(_node(orthanc))
    as_stored = (("application/dicom", "*"),)  # no transcoding by Orthanc
    stls = client.retrieve_series(ct.StudyInstanceUID, result.stl_series_uid,
                                  media_types=as_stored)  # fmt: skip
    [seg] = client.retrieve_series(ct.StudyInstanceUID, result.seg_series_uid,
                                   media_types=as_stored)  # fmt: skip

    # Geometry: each structure's full detail, in LPS mm, as trimesh reads the GLB.
    expected = _glb_triangles(models.glb)
    assert sorted(str(ds.DocumentTitle) for ds in stls) == sorted(expected)
    for ds in [*stls, seg]:
        assert ds.PatientID == ct.PatientID and ds.PatientName == ct.PatientName
        assert ds.StudyInstanceUID == ct.StudyInstanceUID
        assert ds.AccessionNumber == ct.AccessionNumber
        assert ds.FrameOfReferenceUID == ct.FrameOfReferenceUID
    for ds in stls:
        assert ds.Modality == "M3D" and ds.SOPClassUID == ENCAPSULATED_STL
        [referenced] = ds.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == ct.SeriesInstanceUID
        assert len(referenced.ReferencedInstanceSequence) == len(list(sample_ct.iterdir()))
        document = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
        got = _sorted_rows(_stl_triangles(document))
        want = _sorted_rows(expected[str(ds.DocumentTitle)])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-3)  # mm: float32 at ~600 mm is 6e-5

    # Segmentation: the label map made again from the CT, slice by CT slice.
    import highdicom as hd

    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    volume = read_series(sample_ct)
    labels = segment(volume, "bone")
    segmentation = hd.seg.Segmentation.from_dataset(seg)
    numbered = {int(d.SegmentNumber): d.SegmentLabel for d in segmentation.SegmentSequence}
    assert numbered == labels.names
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(sample_ct.iterdir())]
    pixels = segmentation.get_pixels_by_source_instance(
        [str(s.SOPInstanceUID) for s in sources],
        combine_segments=True,  # each pixel its segment number: the label itself
        assert_missing_frames_are_empty=True,  # empty frames are not encoded
    )
    assert labels.labels.any()
    for source, frame in zip(sources, pixels, strict=True):
        # The CT slice's place in the label map: its position, as an index of the volume.
        index = volume.lps_to_index(np.asarray(source.ImagePositionPatient, dtype=float))
        k = round(float(index[0]))
        np.testing.assert_allclose(index, [k, 0, 0], atol=1e-3)
        np.testing.assert_array_equal(frame, labels.labels[k])


def test_a_push_again_keeps_one_series(
    models: Models, store: Store, orthanc: OrthancServer
) -> None:
    first = push_model(store, _node(orthanc), models.model_id, via="dimse")
    second = push_model(store, _node(orthanc), models.model_id, via="dicomweb")
    assert first.sop_uids == second.sop_uids
    client = web_client(_node(orthanc))
    found = client.search_for_series(first.study_uid, search_filters={"Modality": "M3D"})
    assert len(found) == 1


def test_refusals_are_one_line(models: Models, store: Store, orthanc: OrthancServer) -> None:
    refusals: list[tuple[type[Exception], str, Any]] = [
        (NotFoundError, "mdl_nothere", _node(orthanc)),
        (InvalidRequestError, models.radiograph_id, _node(orthanc)),
    ]
    for error, model_id, node in refusals:
        with pytest.raises(error) as refused:
            push_model(store, node, model_id)
        assert "\n" not in str(refused.value)
    assert "radiograph panel" in str(refused.value)
    web_only = PacsNode("web", dicomweb=orthanc.dicomweb)
    with pytest.raises(InvalidRequestError, match="PACS node web has no AE title"):
        push_model(store, web_only, models.model_id, via="dimse")


@pytest.mark.parametrize("via", ["dicomweb", "dimse"])
def test_a_node_that_is_down_is_one_line(models: Models, store: Store, via: str) -> None:
    gone = PacsNode("gone", dicomweb="http://127.0.0.1:9/dicom-web", ae_title="X",
                    host="127.0.0.1", port=9)  # fmt: skip
    with pytest.raises(UnavailableError) as down:
        push_model(store, gone, models.model_id, via=via)
    message = str(down.value)
    assert message.startswith("PACS node gone (") and "does not answer" in message
    assert "\n" not in message


def test_the_command_line_pushes_and_audits(
    models: Models, orthanc: OrthancServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(models.data)
    PacsNodes(data).add(_node(orthanc, "archive"), replace=True)
    assert main(["pacs", "--data", data, "push", "archive", models.model_id, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "STOW-RS" and len(result["sop_uids"]) == 4
    assert main(["pacs", "--data", data, "push", "archive", models.model_id, "--via", "dimse"]) == 0
    assert "pushed to archive by C-STORE: 3 STL instance(s)" in capsys.readouterr().out
    lines = (models.data / "audit.jsonl").read_text().splitlines()
    pushes = [json.loads(line) for line in lines if '"model_pushed"' in line]
    assert len(pushes) == 2
    assert pushes[0]["pacs_node"] == "archive" and pushes[0]["model_id"] == models.model_id
    assert pushes[0]["case_id"] == CASE and pushes[0]["subject"].startswith("cli:")
    assert "PHANTOM" not in "\n".join(lines)  # never the patient's name
    assert main(["pacs", "--data", data, "push", "archive", models.radiograph_id]) != 0
    assert "radiograph panel" in capsys.readouterr().err


def test_full_detail_meshes_agree_with_trimesh(models: Models) -> None:
    meshes = full_detail_meshes(models.glb.read_bytes())
    expected = _glb_triangles(models.glb)
    assert list(meshes) == ["bone_1", "bone_2", "bone_3"]
    for name, (vertices, faces) in meshes.items():
        np.testing.assert_allclose(
            _sorted_rows(vertices[faces].reshape(-1, 9)), _sorted_rows(expected[name]), atol=1e-3
        )
