"""The holo server end to end: a real gRPC server on port 0, real TLS, real job processes.

Upload -> convert -> fetch round trips, coarse-first delivery, auth, bad requests. The
process-level cases (kill -9, SIGTERM, the CLI) are in ``test_server_process.py``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trimesh
from gltf import assert_valid_glb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls import TestPKI, make_pki

from holo.client import ClientError, HoloClient
from holo.errors import InvalidRequestError
from holo.server import ServerConfig
from holo.server.app import _credentials
from holo.server.auth import mint_token
from holo.testing import TestServer
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2

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
    assert len(seen) == len(manifest.lods)
    assert seen[0] >= complete[0]
    assert manifest.bounds.max.y > manifest.bounds.min.y  # a real box in the glTF frame


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
    study_id = knee_model["study"].study_id.value  # type: ignore[attr-defined]
    real, seen = own[study_id], public[study_id]
    assert real.patient_name and real.patient_id  # the sample's fake identity
    assert seen.patient_name == seen.patient_id == seen.study_description == ""
    assert seen.study_instance_uid.startswith("2.25.")
    assert seen.study_instance_uid != real.study_instance_uid
    for s_real, s_seen in zip(real.series, seen.series, strict=True):
        assert s_seen.series_instance_uid != s_real.series_instance_uid
    text = b"".join(m.SerializeToString() for m in manifests) + seen.SerializeToString()
    assert real.patient_name.encode() not in text and real.patient_id.encode() not in text
    # The model's own de-identified facts use the server's replacement UIDs too, so a
    # client can tell which catalogue study a model was made from.
    with client(server, pki, "observer") as observer:
        glb = observer.fetch_model(manifests[0].model_id.value).data
    assert real.patient_name.encode() not in glb and real.patient_id.encode() not in glb
    json_length = int.from_bytes(glb[12:16], "little")
    document = json.loads(glb[20 : 20 + json_length])
    facts = document["scenes"][0]["extras"]["holo"]["study"]
    assert facts["StudyInstanceUID"] == seen.study_instance_uid


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
        # The upload that got the bad chunks is intact and can still be finished.
        done = stub.UploadChunk(chunk(upload_id=status.upload_id, offset=0, data=data), metadata=md)
        assert done.complete
    with HoloClient(server.address, ca=pki.ca_pem) as anonymous:
        health = health_pb2_grpc.HealthStub(anonymous.channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="holo.v1.AssetService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


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
        HoloClient(server.address, token=token, insecure=True, retries=0) as c,
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
        with HoloClient(server.address, token=token, ca=pki.ca_pem, retries=0) as no_cert:
            with pytest.raises(ClientError) as err:
                no_cert.list_models()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
        with HoloClient(
            server.address, token=token, ca=pki.ca_pem, client_cert=(client_cert, client_key)
        ) as with_cert:
            assert with_cert.list_models() == []
