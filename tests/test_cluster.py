"""Three ``holo serve`` processes sharing one store and one session bus (issue 18), on real
engines: PostgreSQL (``tests/postgres_server.py``), SeaweedFS's S3 gateway
(``tests/s3_server.py``) and Redis (``tests/redis_server.py``), each test on a database
and a bucket prefix of its own.

What a user of several sites sees: a model converted on one node is listed and fetched
byte-identical on the others and can be loaded into a session they watch; a node killed
mid-conversion has its job finished by another, with one model; an upload resumes on
another node at the acknowledged offset; a stopped engine is UNAVAILABLE, named, in the
calls and in health, and everything works again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from postgres_server import PostgresServer
from redis_server import RedisServer
from s3_server import S3Server

from holo.auth import load_secret
from holo.client import ClientError
from holo.client.retry import RetryPolicy
from holo.client.session import SessionClient
from holo.session.records import Pose
from holo.testing import ServeProcess
from holo.v1 import asset_pb2

CASE = "case-1"
POSE = Pose((0.0, 1.1, -0.5), (0.0, 0.0, 0.0, 1.0))
LEASE_S = 3  # a killed node's job is taken over within seconds, not the default 30


class Engines:
    """The engines of the module, started once."""

    def __init__(self) -> None:
        self.postgres = PostgresServer()
        self.s3 = S3Server()
        self.redis = RedisServer()
        self.s3_endpoint = ""
        self.redis_url = ""

    def __enter__(self) -> Engines:
        self.postgres.__enter__()
        self.s3_endpoint = self.s3.__enter__()
        self.redis_url = self.redis.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for engine in (self.redis, self.s3, self.postgres):
            engine.__exit__(None, None, None)


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    with Engines() as made:
        yield made


class Cluster:
    """Three nodes of one site group: the same store, bus and token secret."""

    def __init__(self, engines: Engines, tmp_path: Path, count: int = 3) -> None:
        self.database = engines.postgres.database()
        secret_dir = tmp_path / "secret"
        load_secret(secret_dir)
        secret = secret_dir / "secret.key"
        options = (
            "--store", self.database,
            "--blobs", f"s3://holo-cluster/{uuid.uuid4().hex[:8]}",
            "--s3-endpoint", engines.s3_endpoint,
            "--job-lease", str(LEASE_S),
        )  # fmt: skip
        self.nodes: list[ServeProcess] = []
        for k in range(count):
            self.nodes.append(
                ServeProcess(
                    tmp_path / f"node{k}",
                    bus=engines.redis_url,
                    secret=secret,
                    verbose=True,
                    options=(*options, "--node", f"node{k}"),
                )
            )

    def job_row(self, job_id: str) -> dict[str, object]:
        """The job as the catalog holds it: which node runs it, how often it was started."""
        with psycopg.connect(self.database) as conn:
            row = conn.execute(
                "SELECT state, stage, node, attempts, message FROM jobs WHERE job_id = %s",
                (job_id,),
            ).fetchone()
        assert row is not None
        return dict(zip(("state", "stage", "node", "attempts", "message"), row, strict=True))

    def converting(self, job_id: str) -> int:
        """Wait until a node's worker converts the job (past reading the study); its index."""
        deadline = time.monotonic() + 120
        while (row := self.job_row(job_id))["stage"] in ("", "read"):
            assert row["state"] in ("queued", "running"), row
            assert time.monotonic() < deadline, f"the job never got going: {row}"
            time.sleep(0.1)
        return int(str(row["node"]).removeprefix("node"))

    def audit(self, about: str) -> list[dict[str, object]]:
        """The shared audit trail's records that name ``about`` (an id), oldest first."""
        with psycopg.connect(self.database) as conn:
            rows = conn.execute("SELECT line FROM audit ORDER BY seq").fetchall()
        records = [json.loads(line) for (line,) in rows]
        return [r for r in records if about in r.values()]

    def close(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.stop()


@pytest.fixture
def cluster(engines: Engines, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(engines, tmp_path)
    try:
        yield made
    finally:
        made.close()


def _convert(node: ServeProcess, study_dir: Path) -> tuple[str, str]:
    """Upload a study at ``node`` and start its conversion; (study id, job id)."""
    with node.client("radiologist") as radiologist:
        study = radiologist.upload_study([study_dir])
        job = radiologist.start_conversion(study.study_id.value)
    return study.study_id.value, job.job_id.value


def test_a_model_converted_at_one_site_is_there_at_every_site(
    cluster: Cluster, sample_ct: Path, tmp_path: Path
) -> None:
    a, b, c = cluster.nodes
    _, job_id = _convert(a, sample_ct)
    with b.client("radiologist") as on_b:
        done = on_b.wait_job(job_id)  # watched from another node than the one converting
    assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
    model_id = done.model_id.value
    fetched = {}
    for name, node in (("b", b), ("c", c)):
        with node.client("observer") as observer:
            assert [m.model_id.value for m in observer.list_models()] == [model_id]
            result = observer.fetch_model(model_id, tmp_path / f"{name}.glb")
            fetched[name] = (tmp_path / f"{name}.glb").read_bytes()
            assert hashlib.sha256(fetched[name]).hexdigest() == result.manifest.sha256
    assert fetched["b"] == fetched["c"]
    # One trail, whichever node served: started on A, published where the job ran.
    trail = cluster.audit(job_id)
    assert [r["action"] for r in trail] == ["conversion_started", "model_published"], trail
    assert {r["subject"] for r in trail} == {"tester"} and trail[1]["model_id"] == model_id

    async def session() -> None:
        presenter = SessionClient(a.address, token=a.token("presenter"), insecure=True)
        session_id = (await presenter.create_session()).session_id.value
        await presenter.join(session_id)
        observers = [
            SessionClient(n.address, token=n.token("observer", subject=f"o{k}"), insecure=True)
            for k, n in enumerate((b, c))
        ]
        for observer in observers:
            await observer.join(session_id)
        seq = await presenter.load_model(model_id, POSE)
        for observer in observers:
            await observer.wait_seq(seq, timeout_s=30)
            assert model_id in observer.state.models  # the event reached B and C
        for client in (presenter, *observers):
            await client.close()

    asyncio.run(asyncio.wait_for(session(), 60))
    joined = [r for r in cluster.audit(CASE) if r["action"] == "joined"]
    assert {r["subject"] for r in joined} == {"tester", "o0", "o1"}  # from A, B and C


def test_a_node_killed_mid_conversion_has_its_job_finished_by_another(
    cluster: Cluster, sample_ct: Path
) -> None:
    study_id, job_id = _convert(cluster.nodes[0], sample_ct)
    victim = cluster.converting(job_id)
    cluster.nodes[victim].kill()  # mid-conversion, no chance to hand the job back
    survivor = cluster.nodes[(victim + 1) % 3]
    with survivor.client("radiologist") as radiologist:
        done = radiologist.wait_job(job_id)
        assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
        models = [m for m in radiologist.list_models() if m.study_id.value == study_id]
    assert [m.model_id.value for m in models] == [done.model_id.value]  # exactly one
    final = cluster.job_row(job_id)
    assert final["attempts"] == 2 and final["node"] != f"node{victim}", final
    log = "".join(cluster.nodes[(victim + 1) % 3].lines + cluster.nodes[(victim + 2) % 3].lines)
    assert f"claimed by node {final['node']} (attempt 2)" in log
    trail = cluster.audit(job_id)  # published once, by the node that took it over...
    assert [r["action"] for r in trail] == ["conversion_started", "model_published"], trail
    assert trail[1]["subject"] == "tester"  # ...in the name of who started it


def test_a_node_stopping_cleanly_hands_its_job_to_another(
    cluster: Cluster, sample_ct: Path
) -> None:
    study_id, job_id = _convert(cluster.nodes[0], sample_ct)
    victim = cluster.converting(job_id)
    assert cluster.nodes[victim].stop() == 0  # SIGTERM: a rolling restart, say
    assert f"job {job_id} handed back to the queue" in "".join(cluster.nodes[victim].lines)
    survivor = cluster.nodes[(victim + 1) % 3]
    with survivor.client("radiologist") as radiologist:
        done = radiologist.wait_job(job_id)
        models = [m for m in radiologist.list_models() if m.study_id.value == study_id]
    assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
    assert [m.model_id.value for m in models] == [done.model_id.value]
    final = cluster.job_row(job_id)
    # Handed back, not taken over: the stopped node's start does not count against the job.
    assert final["attempts"] == 1 and final["node"] != f"node{victim}", final


def test_an_upload_resumes_on_another_node_when_its_node_is_killed(
    cluster: Cluster,
) -> None:
    a, b, _ = cluster.nodes
    data = os.urandom(3 * (1 << 20) + 1234)  # 4 chunks of at most 1 MiB
    sha = hashlib.sha256(data).hexdigest()
    with a.client("radiologist") as on_a:
        status = on_a.uploads.StartUpload(
            asset_pb2.StartUploadRequest(name="knee.zip", size_bytes=len(data), sha256=sha),
            metadata=on_a._metadata,
        )
        for _ in range(2):
            status = on_a.uploads.UploadChunk(
                asset_pb2.UploadChunkRequest(
                    upload_id=status.upload_id,
                    offset=status.offset,
                    data=data[status.offset : status.offset + (1 << 20)],
                ),
                metadata=on_a._metadata,
            )
    acknowledged = status.offset
    assert acknowledged == 2 << 20
    a.kill()
    with b.client("radiologist") as on_b:  # the same caller, failing over to B
        done = on_b.upload_bytes(data, "knee.zip")
        resumed = on_b.uploads.GetUpload(
            asset_pb2.GetUploadRequest(upload_id=done.upload_id), metadata=on_b._metadata
        )
    assert done.upload_id == status.upload_id  # resumed, not started again
    assert done.complete and resumed.offset == len(data)
    log = "".join(b.lines)
    upload_id = status.upload_id.value
    assert f"upload {upload_id} resumed at {acknowledged} of {len(data)} bytes" in log
    assert f"upload {upload_id} complete: blob {sha}" in log


def _health(node: ServeProcess, service: str = "") -> int:
    with grpc.insecure_channel(node.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)


def _wait_health(node: ServeProcess, status: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (now := _health(node)) != status:
        assert time.monotonic() < deadline, f"health stays {now}, not {status}: " + "".join(
            node.lines[-20:]
        )
        time.sleep(0.2)


def test_a_stopped_engine_is_unavailable_and_named_until_it_is_back(
    engines: Engines, tmp_path: Path, sample_ct: Path
) -> None:
    cluster = Cluster(engines, tmp_path, count=2)
    stack = contextlib.ExitStack()
    try:
        a, b = cluster.nodes
        _, job_id = _convert(a, sample_ct)
        with a.client("radiologist") as on_a:
            model_id = on_a.wait_job(job_id).model_id.value
        assert model_id
        once = RetryPolicy(attempts=1)
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

        # An upload under way when the engines stop: what was acknowledged stays acknowledged.
        data = os.urandom(3 << 20)
        sha = hashlib.sha256(data).hexdigest()
        uploader = b.client("radiologist", retry=once)
        stack.callback(uploader.close)
        upload = uploader.uploads.StartUpload(
            asset_pb2.StartUploadRequest(name="late.zip", size_bytes=len(data), sha256=sha),
            metadata=uploader._metadata,
        )

        def chunk(offset: int) -> asset_pb2.UploadStatus:
            request = asset_pb2.UploadChunkRequest(
                upload_id=upload.upload_id, offset=offset, data=data[offset : offset + (1 << 20)]
            )
            return uploader.uploads.UploadChunk(request, metadata=uploader._metadata)

        assert chunk(0).offset == 1 << 20

        engines.postgres.stop()
        with pytest.raises(grpc.RpcError) as pg:
            chunk(1 << 20)  # put in the bucket, but the offset cannot be committed
        assert pg.value.code() == grpc.StatusCode.UNAVAILABLE
        with b.client("observer", retry=once) as observer, pytest.raises(ClientError) as down:
            observer.list_models()
        assert down.value.code == grpc.StatusCode.UNAVAILABLE, down.value
        assert "store database" in str(down.value) and "does not answer" in str(down.value)
        _wait_health(b, not_serving)
        assert _health(b, "holo.v1.SessionService") == serving  # procedures go on
        engines.postgres.start()
        _wait_health(b, serving)
        with b.client("observer") as observer:
            assert [m.model_id.value for m in observer.list_models()] == [model_id]

        engines.s3.stop()
        # B never fetched the model: it is not in B's cache.
        with b.client("observer", retry=once) as observer, pytest.raises(ClientError) as gone:
            observer.fetch_model(model_id)
        assert gone.value.code == grpc.StatusCode.UNAVAILABLE, gone.value
        assert "object store" in str(gone.value), gone.value
        _wait_health(b, not_serving)
        with a.client("observer") as observer:  # A made it: its cache still serves
            assert observer.fetch_model(model_id).manifest.model_id.value == model_id
        with pytest.raises(grpc.RpcError) as s3:
            chunk(1 << 20)
        assert s3.value.code() == grpc.StatusCode.UNAVAILABLE
        engines.s3.start()
        _wait_health(b, serving, timeout_s=60)
        with a.client("radiologist") as radiologist:  # the same caller, on another node
            done = radiologist.upload_bytes(data, "late.zip")
        assert done.upload_id == upload.upload_id and done.complete
        assert f"upload {upload.upload_id.value} resumed at {1 << 20} of" in "".join(a.lines)
        with b.client("observer") as observer:
            result = observer.fetch_model(model_id, tmp_path / "after.glb")
        digest = hashlib.sha256((tmp_path / "after.glb").read_bytes()).hexdigest()
        assert digest == result.manifest.sha256
    finally:
        stack.close()
        cluster.close()


def test_a_hung_database_turns_health_not_serving_and_back(
    engines: Engines, tmp_path: Path
) -> None:
    """A server that keeps its connections open and answers nothing (SIGSTOP): the health
    check is bounded, so health says so instead of hanging with it."""
    cluster = Cluster(engines, tmp_path, count=1)
    node = cluster.nodes[0]
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        _wait_health(node, serving)
        engines.postgres.freeze()
        try:
            _wait_health(node, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert _health(node, "holo.v1.SessionService") == serving
        finally:
            engines.postgres.thaw()
        _wait_health(node, serving)
        assert "did not answer within 5 s" in "".join(node.lines)
    finally:
        cluster.close()
