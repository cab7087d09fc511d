"""The holo server end to end: a real gRPC server on port 0, real TLS, real job processes.

Upload -> convert -> fetch round trips, coarse-first delivery, auth, bad requests. The
process-level cases (kill -9, SIGTERM, the CLI) are in ``test_server_process.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import signal
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import trimesh
from gltf import assert_valid_glb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls import TestPKI, make_pki

from holo.auth import ROLES, deid_salt, load_secret, mint_token, verify_token
from holo.client import ClientError, HoloClient
from holo.client.assets import _check_level
from holo.client.retry import RetryPolicy
from holo.errors import AuthError, InvalidRequestError
from holo.jobs import JobRunner
from holo.server import ServerConfig, app
from holo.server.app import _credentials, start_server
from holo.server.asset_service import _end_within
from holo.server.interceptors import METHOD_ROLES
from holo.store import Store
from holo.testing import TestServer, start_test_server
from holo.v1 import (
    asset_pb2,
    asset_pb2_grpc,
    clock_pb2,
    common_pb2,
    pacs_pb2,
    session_pb2,
    video_pb2,
)

CASE = "case-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("store"), tls=(pki.cert, pki.key)) as running:
        yield running


def client(server: TestServer, pki: TestPKI, role: str, case_id: str = CASE) -> HoloClient:
    return server.client(role, case_id, ca=pki.ca_pem)


@pytest.fixture(scope="module")
def knee_model(server: TestServer, pki: TestPKI, sample_ct: Path) -> dict[str, object]:
    """The sample knee uploaded by a radiologist and converted: the study, job states, model."""
    with client(server, pki, "radiologist") as radiologist:
        study = radiologist.upload_study([sample_ct])
        job = radiologist.start_conversion(study.study_id.value, preset="bone")
        states = list(radiologist.watch_job(job.job_id.value))
        models = radiologist.list_models()
    return {"study": study, "job": job, "states": states, "models": models}


def _status(err: pytest.ExceptionInfo[ClientError]) -> grpc.StatusCode:
    return err.value.code


# --- round trip ----------------------------------------------------------------------------


def test_conversion_job_reports_every_stage_and_succeeds(knee_model: dict[str, object]) -> None:
    states = knee_model["states"]
    assert isinstance(states, list)
    assert states[-1].state == asset_pb2.JOB_STATE_SUCCEEDED, states[-1].message
    stages = [s.stage for s in states if s.state == asset_pb2.JOB_STATE_RUNNING]
    for stage in ("read", "segment", "mesh", "decimate", "write"):
        assert stage in stages, f"WatchJob never reported {stage}: {stages}"
    assert states[-1].model_id.value
    assert states[-1].finished_unix_ns >= states[-1].created_unix_ns > 0


def test_fetched_model_is_byte_identical_valid_and_loads(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object], tmp_path: Path
) -> None:
    model_id = knee_model["states"][-1].model_id.value  # type: ignore[index]
    with client(server, pki, "observer") as observer:
        result = observer.fetch_model(model_id, tmp_path / "knee.glb")
    assert server.running is not None
    stored = server.running.store.blob_path(result.manifest.sha256).read_bytes()
    fetched = (tmp_path / "knee.glb").read_bytes()
    assert fetched == stored
    assert hashlib.sha256(fetched).hexdigest() == result.manifest.sha256
    assert_valid_glb(tmp_path / "knee.glb")
    scene = trimesh.load(tmp_path / "knee.glb", force="scene")
    assert len(scene.geometry) > 0
    # The sample knee has a femur, a tibia and a patella (sample_data/truth.json): one each.
    assert len(result.manifest.structures) == 3
    assert [lod.index for lod in result.manifest.lods] == list(range(len(result.manifest.lods)))


def test_manifest_comes_first_and_coarse_lod_completes_early(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object]
) -> None:
    model_id = knee_model["states"][-1].model_id.value  # type: ignore[index]
    with client(server, pki, "presenter") as presenter:
        replies = list(
            presenter.assets.GetModel(
                asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value=model_id)),
                metadata=presenter._metadata,
            )
        )
        seen: list[int] = []
        presenter.fetch_model(model_id, on_lod=lambda k, prefix: seen.append(len(prefix)))
    assert replies[0].HasField("manifest")
    assert all(r.HasField("data") for r in replies[1:])
    assert all(len(r.data.data) <= 1 << 20 for r in replies[1:])
    manifest = replies[0].manifest
    complete = [lod.complete_at_bytes for lod in manifest.lods]
    assert complete == sorted(complete) and complete[-1] == manifest.size_bytes
    assert complete[0] < manifest.size_bytes  # the coarse level is a strict prefix
    # Messages break at every LOD boundary: a level is complete with the message ending it.
    ends = {r.data.offset + len(r.data.data) for r in replies[1:]}
    assert set(complete) <= ends
    glb = b"".join(r.data.data for r in replies[1:])
    for lod in manifest.lods:  # each level's prefix can be checked alone
        assert lod.prefix_sha256 == hashlib.sha256(glb[: lod.complete_at_bytes]).hexdigest()
    assert len(seen) == len(manifest.lods)
    assert seen[0] >= complete[0]
    # A level whose bytes are not what was published is refused before it is shown.
    spoiled = bytearray(glb[: complete[0]])
    spoiled[-1] ^= 0xFF
    with pytest.raises(ClientError, match="level lod0 does not match its checksum") as err:
        _check_level(model_id, manifest.lods[0], bytes(spoiled))
    assert _status(err) == grpc.StatusCode.DATA_LOSS
    _check_level(model_id, manifest.lods[0], glb[: complete[0]])
    assert manifest.bounds.max.y > manifest.bounds.min.y  # a real box in the glTF frame


def test_a_triangle_budget_ends_the_stream_after_its_level(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object]
) -> None:
    model_id = knee_model["states"][-1].model_id.value  # type: ignore[index]

    def stream(max_triangles: int, offset: int = 0) -> tuple[asset_pb2.ModelManifest, bytes]:
        request = asset_pb2.GetModelRequest(
            model_id=common_pb2.ModelId(value=model_id), offset=offset, max_triangles=max_triangles
        )
        with client(server, pki, "observer") as viewer:
            replies = list(viewer.assets.GetModel(request, metadata=viewer._metadata))
        return replies[0].manifest, b"".join(r.data.data for r in replies[1:])

    manifest, whole = stream(0)
    lods = manifest.lods
    assert len(whole) == manifest.size_bytes
    for budget, last in (
        (lods[0].triangles - 1, 0),  # under the coarse level: the coarse level all the same
        (lods[1].triangles - 1, 0),
        (lods[1].triangles, 1),
        (lods[-1].triangles, len(lods) - 1),
    ):
        _, data = stream(budget)
        assert data == whole[: lods[last].complete_at_bytes], (budget, last)
    # A resumed stream ends at the same place.
    _, rest = stream(lods[1].triangles, offset=1000)
    assert rest == whole[1000 : lods[1].complete_at_bytes]


def test_a_model_without_level_checksums_is_sent_whole() -> None:
    """Published before holo recorded prefix_sha256: a partial copy could not be checked."""
    lods = [
        {"triangles": 10, "complete_at_bytes": 100},
        {"triangles": 30, "complete_at_bytes": 300},
    ]
    assert _end_within(lods, 20) == 0
    assert _end_within([{**lod, "prefix_sha256": "ab"} for lod in lods], 20) == 100
    assert _end_within([{**lod, "prefix_sha256": "ab"} for lod in lods], 0) == 0


def test_resume_from_offset_and_cached_copy(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object], tmp_path: Path
) -> None:
    model_id = knee_model["states"][-1].model_id.value  # type: ignore[index]
    with client(server, pki, "expert") as expert:
        whole = expert.fetch_model(model_id, tmp_path / "m.glb")
        offset = whole.manifest.size_bytes // 3
        tail = b"".join(
            r.data.data
            for r in expert.assets.GetModel(
                asset_pb2.GetModelRequest(
                    model_id=common_pb2.ModelId(value=model_id), offset=offset
                ),
                metadata=expert._metadata,
            )
            if r.HasField("data")
        )
        assert tail == whole.data[offset:]
        again = expert.fetch_model(model_id, tmp_path / "m.glb")
    assert again.cached and again.bytes_received == 0


def test_real_ct_zip_round_trip(
    server: TestServer, pki: TestPKI, shared_data: Path, tmp_path: Path
) -> None:
    folder = shared_data / "ct_head_ge_gantry_tilt_variable_spacing"
    archive = tmp_path / "head.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() == ".dcm" or f.name.startswith(("CT", "IM")):
                zf.write(f, f.name)
    with client(server, pki, "radiologist") as radiologist:
        study = radiologist.upload_study([archive])
        assert study.series and study.series[0].modality == "CT"
        job = radiologist.start_conversion(study.study_id.value)
        final = radiologist.wait_job(job.job_id.value)
        assert final.state == asset_pb2.JOB_STATE_SUCCEEDED, final.message
        result = radiologist.fetch_model(final.model_id.value, tmp_path / "head.glb")
    assert server.running is not None
    stored = server.running.store.blob_path(result.manifest.sha256).read_bytes()
    assert (tmp_path / "head.glb").read_bytes() == stored
    assert_valid_glb(tmp_path / "head.glb")
    assert result.manifest.lods[-1].triangles > result.manifest.lods[0].triangles


def test_identical_content_is_stored_once(
    server: TestServer, pki: TestPKI, sample_dx: Path, tmp_path: Path
) -> None:
    with client(server, pki, "radiologist") as radiologist:
        first = radiologist.upload_file(next(sample_dx.iterdir()))
        again = radiologist.uploads.StartUpload(
            asset_pb2.StartUploadRequest(
                name="copy.dcm", size_bytes=first.size_bytes, sha256=first.sha256
            ),
            metadata=radiologist._metadata,
        )
    assert again.complete and again.offset == again.size_bytes
    assert server.running is not None
    blobs = list((server.data / "blobs").rglob("*"))
    assert sum(1 for b in blobs if b.is_file() and b.name.endswith(first.sha256[2:])) == 1


def test_a_hash_alone_does_not_reach_another_cases_file(
    server: TestServer, pki: TestPKI, sample_dx: Path
) -> None:
    file = next(sample_dx.iterdir())
    content = file.read_bytes()
    with client(server, pki, "radiologist") as owner:
        first = owner.upload_file(file)
    with client(server, pki, "radiologist", case_id="case-hash") as other:
        stub, md = other.uploads, other._metadata
        claimed = stub.StartUpload(
            asset_pb2.StartUploadRequest(
                name="guess.dcm", size_bytes=first.size_bytes, sha256=first.sha256
            ),
            metadata=md,
        )
        # Announcing case 1's hash is not enough: the bytes must come, or there is no study.
        assert not claimed.complete and claimed.offset == 0
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateStudy(asset_pb2.CreateStudyRequest(uploads=[claimed.upload_id]), metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        status = claimed
        while not status.complete:
            status = stub.UploadChunk(
                asset_pb2.UploadChunkRequest(
                    upload_id=claimed.upload_id,
                    offset=status.offset,
                    data=content[status.offset : status.offset + (1 << 20)],
                ),
                metadata=md,
            )
        assert status.complete and status.sha256 == first.sha256
        study = stub.CreateStudy(
            asset_pb2.CreateStudyRequest(uploads=[claimed.upload_id]), metadata=md
        )
        assert study.case_id == "case-hash"
    blobs = [b for b in (server.data / "blobs").rglob("*") if b.is_file()]
    assert sum(1 for b in blobs if b.parent.name + b.name == first.sha256) == 1  # stored once


def test_failed_conversion_reports_the_error(
    server: TestServer, pki: TestPKI, shared_data: Path
) -> None:
    gappy = shared_data / "ct_chest_missing_and_duplicate_slices"
    with client(server, pki, "radiologist") as radiologist:
        study = radiologist.upload_study([gappy])
        final = radiologist.wait_job(
            radiologist.start_conversion(study.study_id.value).job_id.value
        )
    assert final.state == asset_pb2.JOB_STATE_FAILED
    assert "missing slices" in final.message and "--allow-gaps" in final.message


def test_cancel_a_running_job(server: TestServer, pki: TestPKI, sample_ct: Path) -> None:
    with client(server, pki, "radiologist") as radiologist:
        study = radiologist.upload_study([sample_ct])
        job = radiologist.start_conversion(study.study_id.value, preset="skin")
        cancelled = radiologist.cancel_job(job.job_id.value)
        final = radiologist.wait_job(job.job_id.value)
        listed = {j.job_id.value: j for j in radiologist.list_jobs()}
    assert cancelled.state == final.state == asset_pb2.JOB_STATE_CANCELLED
    assert listed[job.job_id.value].state == asset_pb2.JOB_STATE_CANCELLED
    assert not final.model_id.value


def test_cancel_during_the_conversion_publishes_nothing_and_stops_the_worker(
    server: TestServer, pki: TestPKI, sample_ct: Path
) -> None:
    assert server.running is not None
    with client(server, pki, "radiologist") as radiologist:
        study = radiologist.upload_study([sample_ct])
        job_id = radiologist.start_conversion(study.study_id.value, preset="skin").job_id.value
        pid = None
        for state in radiologist.watch_job(job_id):
            process = server.running.jobs._processes.get(job_id)
            pid = pid or (process.pid if process is not None else None)
            if state.state == asset_pb2.JOB_STATE_RUNNING and state.stage not in ("", "read"):
                break  # the worker is converting
        else:
            raise AssertionError("the job ended before it was seen converting")
        cancelled = radiologist.cancel_job(job_id)
        final = radiologist.wait_job(job_id)
        assert pid is not None
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), "the worker was not stopped and reaped"
        models = radiologist.list_models()
        listed = {j.job_id.value: j for j in radiologist.list_jobs()}
    assert cancelled.state == final.state == asset_pb2.JOB_STATE_CANCELLED
    assert listed[job_id].state == asset_pb2.JOB_STATE_CANCELLED and not final.model_id.value
    assert all(m.study_id.value != study.study_id.value for m in models)


def test_conversions_and_published_models_are_audited(
    server: TestServer, knee_model: dict[str, object]
) -> None:
    final = knee_model["states"][-1]  # type: ignore[index]
    job_id, model_id = final.job_id.value, final.model_id.value
    study_id = knee_model["study"].study_id.value  # type: ignore[attr-defined]
    records = [
        json.loads(line)
        for line in (server.data / "audit.jsonl").read_text().splitlines()
        if f'"{job_id}"' in line
    ]
    started = [r for r in records if r["action"] == "conversion_started"]
    published = [r for r in records if r["action"] == "model_published"]
    assert len(started) == len(published) == 1
    expected = {"case_id": CASE, "study_id": study_id, "job_id": job_id, "subject": "tester"}
    assert started[0].items() >= expected.items() and started[0]["preset"] == "bone"
    assert published[0] == {**expected, "action": "model_published", "model_id": model_id,
                            "t_ns": published[0]["t_ns"]}  # fmt: skip
    assert published[0]["t_ns"] >= started[0]["t_ns"] > 0


def _study_in_store(store: Store, case_id: str = "case-1") -> str:
    data = f"a study of {case_id}".encode()
    upload = store.start_upload(
        case_id=case_id,
        name="s.dcm",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        subject="t",
    )
    if not upload.complete:
        store.append_chunk(upload.upload_id, 0, data)
    return store.create_study(case_id=case_id, upload_ids=[upload.upload_id], summary={}).study_id


def test_a_watcher_gets_a_final_state_published_while_it_handles_the_last_one(
    tmp_path: Path,
) -> None:
    async def scenario() -> list[str]:
        with Store(tmp_path / "store") as store:
            study_id = _study_in_store(store)
            job = store.create_job(study_id=study_id, case_id="case-1", preset="bone")
            runner = JobRunner(store, deid_salt="test")
            try:
                watch = runner.watch(job.job_id)
                seen = [(await anext(watch)).state]
                # The watcher holds the first state (not waiting yet) when the job ends.
                await runner.cancel(job.job_id)
                seen.append((await asyncio.wait_for(anext(watch), 10)).state)
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(anext(watch), 10)
                return seen
            finally:
                await runner.close()

    assert asyncio.run(scenario()) == ["queued", "cancelled"]


def test_close_stops_every_worker_even_if_a_job_finished_meanwhile(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")

    async def scenario(store: Store) -> list[multiprocessing.process.BaseProcess]:
        study_id = _study_in_store(store)
        jobs = [store.create_job(study_id=study_id, case_id="case-1", preset="bone") for _ in "ab"]
        runner = JobRunner(store, deid_salt="test")
        workers = []
        for job in jobs:  # as if converting: a live task and a worker process each
            worker = context.Process(target=time.sleep, args=(120,), daemon=True)
            worker.start()
            workers.append(worker)
            runner._processes[job.job_id] = worker
            runner._tasks[job.job_id] = asyncio.create_task(asyncio.sleep(120))
        store.update_job(jobs[0].job_id, state="cancelled")  # the first one ended meanwhile
        await runner.close()
        return workers

    with Store(tmp_path / "store") as store:
        workers = asyncio.run(scenario(store))
        for worker in workers:
            worker.join(20)
        assert [w.exitcode for w in workers] == [-signal.SIGTERM, -signal.SIGTERM]
        first, second = store.list_jobs("case-1")[::-1]
        assert first.state == "cancelled"
        assert second.state == "failed" and "the server stopped" in second.message


def test_stopping_the_server_tells_watchers_their_job_stopped(
    tmp_path: Path, sample_ct: Path
) -> None:
    server = start_test_server(tmp_path / "store")
    states: list[asset_pb2.Job] = []
    errors: list[BaseException] = []
    running = threading.Event()
    try:
        with server.client("radiologist") as radiologist:
            study = radiologist.upload_study([sample_ct])
            job = radiologist.start_conversion(study.study_id.value, preset="skin")

            def watch() -> None:
                try:
                    for state in radiologist.watch_job(job.job_id.value, timeout_s=120):
                        states.append(state)
                        if state.state == asset_pb2.JOB_STATE_RUNNING:
                            running.set()
                except BaseException as err:
                    errors.append(err)
                finally:
                    running.set()

            watcher = threading.Thread(target=watch)
            watcher.start()
            assert running.wait(60)
            server.stop()
            watcher.join(30)
    finally:
        server.stop()
    assert errors == [] and states, errors
    assert states[-1].state == asset_pb2.JOB_STATE_FAILED
    assert "the server stopped" in states[-1].message


# --- auth and de-identification ---------------------------------------------------------------


def test_calls_without_a_valid_token_are_unauthenticated(
    server: TestServer, pki: TestPKI, tmp_path: Path
) -> None:
    forged = mint_token(b"x" * 32, role="radiologist", case_id=CASE, subject="eve", ttl_s=60)
    expired = mint_token(
        (server.data / "secret.key").read_bytes(),
        role="radiologist",
        case_id=CASE,
        subject="old",
        ttl_s=60,
        now=1_000_000,
    )
    for token in ("", "not-a-token", forged, expired):
        with HoloClient(server.address, token=token, ca=pki.ca_pem) as anonymous:
            with pytest.raises(ClientError) as err:
                anonymous.list_models()
            assert _status(err) == grpc.StatusCode.UNAUTHENTICATED, token
            assert "token" in str(err.value)


def test_roles_and_cases_are_enforced(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object], sample_dx: Path
) -> None:
    model_id = knee_model["states"][-1].model_id.value  # type: ignore[index]
    study_id = knee_model["study"].study_id.value  # type: ignore[attr-defined]
    for role in ("presenter", "expert", "observer"):
        with client(server, pki, role) as user:
            with pytest.raises(ClientError) as err:
                user.upload_file(next(sample_dx.iterdir()))
            assert _status(err) == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(ClientError) as err:
                user.start_conversion(study_id)
            assert _status(err) == grpc.StatusCode.PERMISSION_DENIED
            assert user.fetch_model(model_id).data  # their own case's model: allowed
    with client(server, pki, "observer", case_id="case-2") as stranger:
        assert stranger.list_models() == []
        with pytest.raises(ClientError) as err:
            stranger.fetch_model(model_id)
        assert _status(err) == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(ClientError) as err:
            stranger.list_models(case_id=CASE)
        assert _status(err) == grpc.StatusCode.PERMISSION_DENIED
    with client(server, pki, "radiologist", case_id="case-2") as other:
        with pytest.raises(ClientError) as err:
            other.start_conversion(study_id)
        assert _status(err) == grpc.StatusCode.PERMISSION_DENIED


def test_non_radiologists_see_de_identified_studies(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object]
) -> None:
    with client(server, pki, "radiologist") as radiologist:
        own = {s.study_id.value: s for s in radiologist.list_studies()}
    with client(server, pki, "observer") as observer:
        public = {s.study_id.value: s for s in observer.list_studies()}
        manifests = observer.list_models()
        glbs = [observer.fetch_model(m.model_id.value).data for m in manifests]
    study_id = knee_model["study"].study_id.value  # type: ignore[attr-defined]
    real, seen = own[study_id], public[study_id]
    assert real.patient_name and real.patient_id  # the sample's fake identity
    assert seen.patient_name == seen.patient_id == seen.study_description == ""
    assert seen.study_instance_uid.startswith("2.25.")
    assert seen.study_instance_uid != real.study_instance_uid
    for s_real, s_seen in zip(real.series, seen.series, strict=True):
        assert s_seen.series_instance_uid != s_real.series_instance_uid
    # No patient of the case (other tests add studies to it) shows in anything an observer
    # gets: the studies, every model's manifest, every model's GLB.
    identities = {v.encode() for s in own.values() for v in (s.patient_name, s.patient_id) if v}
    assert identities
    seen_by_observer = [
        *(s.SerializeToString() for s in public.values()),
        *(m.SerializeToString() for m in manifests),
        *glbs,
    ]
    for identity in identities:
        assert not any(identity in blob for blob in seen_by_observer), identity
    # The model's own de-identified facts use the server's replacement UIDs too, so a
    # client can tell which catalogue study a model was made from.
    (glb,) = (g for m, g in zip(manifests, glbs, strict=True) if m.study_id.value == study_id)
    json_length = int.from_bytes(glb[12:16], "little")
    document = json.loads(glb[20 : 20 + json_length])
    facts = document["scenes"][0]["extras"]["holo"]["study"]
    assert facts["StudyInstanceUID"] == seen.study_instance_uid


#: The holo.v1 services of upload, conversion and delivery, and what each method's "other
#: case" request is: an object of case "matrix-1" (or a case_id naming it) asked for with a
#: token of case "matrix-2".
_SERVICES = ("UploadService", "ConversionService", "AssetService")
OWNER, STRANGER = "matrix-1", "matrix-2"


@pytest.fixture(scope="module")
def matrix(server: TestServer, knee_model: dict[str, object]) -> dict[str, Any]:
    """Objects of case matrix-1: an unfinished and a complete upload, a study, a finished
    job and a model (the knee's GLB), made in the store directly."""
    assert server.running is not None
    store = server.running.store
    knee_id = knee_model["states"][-1].model_id.value  # type: ignore[index]
    glb = store.blob_path(store.get_model(knee_id).sha256)
    model = store.get_model(server.publish_model(OWNER, glb))
    unfinished = store.start_upload(
        case_id=OWNER, name="half.dcm", size_bytes=10, sha256="1" * 64, subject="t"
    )
    data = b"matrix upload"
    complete = store.start_upload(
        case_id=OWNER, name="m.dcm", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        subject="t",
    )  # fmt: skip
    store.append_chunk(complete.upload_id, 0, data)
    return {
        "unfinished": asset_pb2.UploadId(value=unfinished.upload_id),
        "complete": asset_pb2.UploadId(value=complete.upload_id),
        "study": asset_pb2.StudyId(value=model.study_id),
        "job": asset_pb2.JobId(value=model.job_id),
        "model": common_pb2.ModelId(value=model.model_id),
        "sha256": model.sha256,
    }


def _matrix_request(method: str, objects: dict[str, Any]) -> Any:
    """A request about matrix-1's objects that passes every check but the role and case
    ones (or fails later, harmlessly: a wrong offset, not DICOM, an unknown preset)."""
    a = asset_pb2
    return {
        "StartUpload": a.StartUploadRequest(
            case_id=OWNER, name="new.dcm", size_bytes=5, sha256="2" * 64
        ),
        "UploadChunk": a.UploadChunkRequest(upload_id=objects["unfinished"], offset=999, data=b"x"),
        "GetUpload": a.GetUploadRequest(upload_id=objects["complete"]),
        # No case_id: the refusal must come from the upload's case.
        "CreateStudy": a.CreateStudyRequest(uploads=[objects["complete"]]),
        "ListStudies": a.ListStudiesRequest(case_id=OWNER),
        "StartConversion": a.StartConversionRequest(study_id=objects["study"], preset="none"),
        "WatchJob": a.WatchJobRequest(job_id=objects["job"]),
        "CancelJob": a.CancelJobRequest(job_id=objects["job"]),
        "ListJobs": a.ListJobsRequest(case_id=OWNER),
        "ListModels": a.ListModelsRequest(case_id=OWNER),
        "GetModel": a.GetModelRequest(model_id=objects["model"], have_sha256=objects["sha256"]),
    }[method]


_ASSET_METHODS = [
    (service, method.name)
    for service in _SERVICES
    for method in asset_pb2.DESCRIPTOR.services_by_name[service].methods
]


@pytest.mark.parametrize("whose", ["own", "other"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("service", "method"), _ASSET_METHODS, ids=[m for _, m in _ASSET_METHODS])
def test_the_role_matrix_and_the_case_are_enforced_on_every_call(
    server: TestServer,
    pki: TestPKI,
    matrix: dict[str, Any],
    service: str,
    method: str,
    role: str,
    whose: str,
) -> None:
    allowed = role in METHOD_ROLES[f"/holo.v1.{service}/{method}"] and whose == "own"
    request = _matrix_request(method, matrix)
    with client(server, pki, role, OWNER if whose == "own" else STRANGER) as caller:
        stub = {
            "UploadService": caller.uploads,
            "ConversionService": caller.conversions,
            "AssetService": caller.assets,
        }[service]
        call = getattr(stub, method)
        streaming = asset_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        try:
            reply = call(request, metadata=caller._metadata, timeout=30)
            if streaming.server_streaming:
                list(reply)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
    if allowed:
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
        assert code in (
            grpc.StatusCode.OK,
            grpc.StatusCode.FAILED_PRECONDITION,  # UploadChunk at a wrong offset
            grpc.StatusCode.INVALID_ARGUMENT,  # CreateStudy of a non-DICOM file, no preset
        ), code
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_every_rpc_has_exactly_one_role_entry() -> None:
    rpcs = [
        f"/{service.full_name}/{method.name}"
        for module in (asset_pb2, session_pb2, clock_pb2, video_pb2, pacs_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert len(rpcs) == len(set(rpcs))
    assert sorted(METHOD_ROLES) == sorted(rpcs)
    assert all(roles and roles <= set(ROLES) for roles in METHOD_ROLES.values())


@pytest.mark.parametrize(
    "token",
    ["holo1.é.x", "holo1.abc.sïg", "holo1." + "a" * 5000 + ".sig", "\udcff"],
    ids=["non-ascii-claims", "non-ascii-signature", "over-4096", "surrogate"],
)
def test_odd_tokens_are_auth_errors(tmp_path: Path, token: str) -> None:
    with pytest.raises(AuthError, match="malformed"):
        verify_token(load_secret(tmp_path), token)


def test_odd_tokens_are_unauthenticated_by_the_server(server: TestServer, pki: TestPKI) -> None:
    with (
        HoloClient(server.address, token="holo1." + "a" * 5000 + ".x", ca=pki.ca_pem) as odd,
        pytest.raises(ClientError) as err,
    ):
        odd.list_models()
    assert _status(err) == grpc.StatusCode.UNAUTHENTICATED
    # gRPC clients refuse to send non-ASCII metadata, other HTTP/2 clients need not: the
    # interceptor itself is given one.
    from holo.server.interceptors import AuthInterceptor

    class RefusedError(Exception):
        pass

    class Context:
        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise RefusedError(code, details)

    async def refusal() -> tuple[Any, ...]:
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)

        async def continuation(details: Any) -> grpc.RpcMethodHandler:
            return handler

        call = SimpleNamespace(
            method="/holo.v1.AssetService/ListModels",
            invocation_metadata=(("authorization", "Bearer holo1.\u00e9.x"),),
        )
        wrapped = await AuthInterceptor(load_secret(server.data)).intercept_service(
            continuation, call
        )
        with pytest.raises(RefusedError) as refused:
            await wrapped.unary_unary(asset_pb2.ListModelsRequest(), Context())
        return refused.value.args

    code, details = asyncio.run(refusal())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "malformed" in details


def test_replacement_uids_are_keyed_by_the_deid_key_not_the_secret(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object]
) -> None:
    from holo.imaging.deid import public_metadata

    study_id = knee_model["study"].study_id.value  # type: ignore[attr-defined]
    with client(server, pki, "radiologist") as radiologist:
        (real,) = (s for s in radiologist.list_studies() if s.study_id.value == study_id)
    with client(server, pki, "observer") as observer:
        (seen,) = (s for s in observer.list_studies() if s.study_id.value == study_id)
    secret = load_secret(server.data)
    uids = {"StudyInstanceUID": real.study_instance_uid}
    key = (server.data / "deid.key").read_text()
    assert secret.hex() not in key and app.load_deid_salt(server.data) == key
    assert public_metadata(uids, salt=key)["StudyInstanceUID"] == seen.study_instance_uid
    # A fresh data folder's key is its own: not derived from the secret (rotating the
    # secret changes no replacement UID; tests/test_tokens.py).
    for other in (secret.hex(), deid_salt(secret)):
        assert public_metadata(uids, salt=other)["StudyInstanceUID"] != seen.study_instance_uid


# --- bad requests --------------------------------------------------------------------------


def test_malformed_requests_get_their_status_and_the_server_keeps_serving(
    server: TestServer, pki: TestPKI
) -> None:
    data = b"holo" * 1000
    sha = hashlib.sha256(data).hexdigest()
    with client(server, pki, "radiologist") as r:
        stub, md = r.uploads, r._metadata

        def code_of(call: object, request: object) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as err:
                call(request, metadata=md)  # type: ignore[operator]
            return err.value.code()  # type: ignore[attr-defined, no-any-return]

        start = asset_pb2.StartUploadRequest(name="x.dcm", size_bytes=len(data), sha256=sha)
        status = stub.StartUpload(start, metadata=md)
        chunk = asset_pb2.UploadChunkRequest
        assert code_of(
            stub.UploadChunk, chunk(upload_id=status.upload_id, offset=7, data=data)
        ) == (grpc.StatusCode.FAILED_PRECONDITION)
        oversize = b"\0" * ((1 << 20) + 1)
        assert (
            code_of(stub.UploadChunk, chunk(upload_id=status.upload_id, offset=0, data=oversize))
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        huge = b"\0" * (3 << 20)  # refused by gRPC's message limit before any handler
        assert (
            code_of(stub.UploadChunk, chunk(upload_id=status.upload_id, offset=0, data=huge))
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        wrong = asset_pb2.StartUploadRequest(name="y.dcm", size_bytes=len(data), sha256="0" * 64)
        bad = stub.StartUpload(wrong, metadata=md)
        assert (
            code_of(stub.UploadChunk, chunk(upload_id=bad.upload_id, offset=0, data=data))
            == grpc.StatusCode.DATA_LOSS
        )
        assert (
            code_of(
                stub.StartUpload, asset_pb2.StartUploadRequest(name="z", size_bytes=1, sha256="abc")
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert (
            code_of(
                stub.StartUpload,
                asset_pb2.StartUploadRequest(name="../z", size_bytes=1, sha256=sha),
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        unknown = asset_pb2.UploadId(value="up_nope")
        assert code_of(stub.GetUpload, asset_pb2.GetUploadRequest(upload_id=unknown)) == (
            grpc.StatusCode.NOT_FOUND
        )
        assert (
            code_of(stub.CreateStudy, asset_pb2.CreateStudyRequest(uploads=[status.upload_id]))
            == grpc.StatusCode.INVALID_ARGUMENT
        )  # not complete yet
        not_dicom = r.upload_bytes(b"plain text, not DICOM", "notes.txt")
        assert (
            code_of(stub.CreateStudy, asset_pb2.CreateStudyRequest(uploads=[not_dicom.upload_id]))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        with pytest.raises(ClientError) as err:
            r.fetch_model("mdl_missing")
        assert _status(err) == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ClientError) as err:
            r.start_conversion("st_missing")
        assert _status(err) == grpc.StatusCode.NOT_FOUND
        stub.UploadChunk(chunk(upload_id=status.upload_id, offset=0, data=data[:100]), metadata=md)
        with pytest.raises(grpc.RpcError) as wrong_offset:
            stub.UploadChunk(chunk(upload_id=status.upload_id, offset=7, data=data), metadata=md)
        trailers = dict(wrong_offset.value.trailing_metadata())  # type: ignore[attr-defined]
        assert trailers["holo-expected-offset"] == "100"  # where to resume
        with pytest.raises(grpc.RpcError) as err:
            list(
                r.conversions.WatchJob(
                    asset_pb2.WatchJobRequest(job_id=asset_pb2.JobId(value="job_missing")),
                    metadata=md,
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        # The upload that got the bad chunks is intact and can still be finished.
        done = stub.UploadChunk(
            chunk(upload_id=status.upload_id, offset=100, data=data[100:]), metadata=md
        )
        assert done.complete
    with HoloClient(server.address, ca=pki.ca_pem) as anonymous:
        health = health_pb2_grpc.HealthStub(anonymous.channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="holo.v1.AssetService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_an_offset_past_the_end_of_a_model_is_out_of_range(
    server: TestServer, pki: TestPKI, knee_model: dict[str, object]
) -> None:
    model_id = knee_model["states"][-1].model_id.value  # type: ignore[index]
    assert server.running is not None
    size = server.running.store.get_model(model_id).size_bytes
    with client(server, pki, "observer") as observer:
        past = asset_pb2.GetModelRequest(
            model_id=common_pb2.ModelId(value=model_id), offset=size + 1
        )
        with pytest.raises(grpc.RpcError) as err:
            list(observer.assets.GetModel(past, metadata=observer._metadata))
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE  # type: ignore[attr-defined]
        assert "past the end" in (err.value.details() or "")  # type: ignore[attr-defined]
        at_end = asset_pb2.GetModelRequest(model_id=common_pb2.ModelId(value=model_id), offset=size)
        replies = list(observer.assets.GetModel(at_end, metadata=observer._metadata))
    assert [r.WhichOneof("part") for r in replies] == ["manifest"]  # nothing left to send


def test_a_taken_port_is_reported_and_the_store_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        config = ServerConfig(data=tmp_path / "store", listen=listen, insecure=True)
        with pytest.raises(InvalidRequestError, match=r"cannot listen on 127\.0\.0\.1:.*in use"):
            asyncio.run(start_server(config))
        # gRPC's own bind failure (a clash after the check) is reported the same way, and
        # what was opened before it is closed again.
        monkeypatch.setattr(app, "_check_free", lambda listen: None)
        with pytest.raises(InvalidRequestError, match=r"cannot listen on 127\.0\.0\.1:"):
            asyncio.run(start_server(config))
    Store(tmp_path / "store").close()  # the failed starts released the store


def test_plain_text_is_refused_beyond_loopback(tmp_path: Path) -> None:
    for listen in ("0.0.0.0:0", "[::]:0"):
        with pytest.raises(InvalidRequestError, match="not a loopback address"):
            _credentials(ServerConfig(data=tmp_path, listen=listen, insecure=True))
    with pytest.raises(InvalidRequestError, match="--insecure"):
        _credentials(ServerConfig(data=tmp_path, listen="127.0.0.1:0"))
    assert _credentials(ServerConfig(data=tmp_path, listen="127.0.0.1:0", insecure=True)) is None


def test_a_plain_text_client_cannot_talk_to_the_tls_server(server: TestServer) -> None:
    token = server.token("observer")
    with (
        HoloClient(server.address, token=token, insecure=True, retry=RetryPolicy(attempts=0)) as c,
        pytest.raises(ClientError) as err,
    ):
        c.list_models()
    assert _status(err) == grpc.StatusCode.UNAVAILABLE


def test_reflection_lists_the_services(server: TestServer, pki: TestPKI) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with HoloClient(server.address, ca=pki.ca_pem) as anonymous:
        stub = reflection_pb2_grpc.ServerReflectionStub(anonymous.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(stub.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in reply.list_services_response.service}
    assert {"holo.v1.UploadService", "holo.v1.ConversionService", "holo.v1.AssetService"} <= names
    assert asset_pb2_grpc.AssetServiceStub  # the generated client the SDK wraps


def test_unexpected_exceptions_become_internal_without_internals() -> None:
    import asyncio

    from grpc import aio

    from holo.server.interceptors import ErrorInterceptor

    async def explode(request: bytes, context: aio.ServicerContext) -> bytes:
        raise ValueError("/srv/holo/secret-path went wrong")

    async def run() -> tuple[grpc.StatusCode, str]:
        server = aio.server(interceptors=[ErrorInterceptor()])
        handler = grpc.unary_unary_rpc_method_handler(explode)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("holo.test.Boom", {"Explode": handler})]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/holo.test.Boom/Explode")
                try:
                    await call(b"")
                except aio.AioRpcError as err:
                    return err.code(), err.details() or ""
                raise AssertionError("the call did not fail")
        finally:
            await server.stop(None)

    code, details = asyncio.run(run())
    assert code == grpc.StatusCode.INTERNAL
    assert "internal error (ref " in details
    assert "secret-path" not in details and "ValueError" not in details


def test_an_upload_over_the_size_limit_is_refused(server: TestServer, pki: TestPKI) -> None:
    request = asset_pb2.StartUploadRequest(name="huge.zip", size_bytes=9 << 30, sha256="a" * 64)
    with client(server, pki, "radiologist") as radiologist, pytest.raises(grpc.RpcError) as err:
        radiologist.uploads.StartUpload(request, metadata=radiologist._metadata)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "9663676416" in (err.value.details() or "")  # type: ignore[attr-defined]


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, pki: TestPKI) -> None:
    from tls import make_client_cert

    client_cert, client_key = make_client_cert(pki, tmp_path / "client")
    mutual = TestServer(tmp_path / "store", tls=(pki.cert, pki.key), client_ca=pki.ca_pem)
    with mutual as server:
        token = server.token("observer")
        with HoloClient(
            server.address, token=token, ca=pki.ca_pem, retry=RetryPolicy(attempts=0)
        ) as no_cert:
            with pytest.raises(ClientError) as err:
                no_cert.list_models()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        with HoloClient(
            server.address, token=token, ca=pki.ca_pem, client_cert=(client_cert, client_key)
        ) as with_cert:
            assert with_cert.list_models() == []
