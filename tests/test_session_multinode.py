"""Sessions across nodes: a real redis-server and three ``holo serve --bus redis://``
processes; one node is killed (SIGKILL) mid-session and its clients fail over.

Every client's event sequence must be complete (gap-free from its join to the end, no
repeats) and identical to every other client's where they overlap, and every client ends
in the same state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer

from holo.auth import load_secret
from holo.client.retry import RetryPolicy
from holo.client.session import SessionClient
from holo.session.records import Pose
from holo.session.state import Event
from holo.testing import ServeProcess

CASE = "case-multi"
POSE = Pose((0.0, 1.1, -0.5), (0.0, 0.0, 0.0, 1.0))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[ServeProcess], Path]]:
    secret_dir = tmp_path / "secret"
    load_secret(secret_dir)
    secret = secret_dir / "secret.key"
    with RedisServer() as url:
        nodes = [ServeProcess(tmp_path / f"node{k}", bus=url, secret=secret) for k in range(3)]
        try:
            yield nodes, secret
        finally:
            for node in nodes:
                if node.process.poll() is None:
                    node.kill()


def test_three_nodes_one_killed_every_client_sees_every_event(
    cluster: tuple[list[ServeProcess], Path], sample_ct: Path
) -> None:
    nodes, _ = cluster
    with nodes[0].client("radiologist", CASE) as r:
        study = r.upload_study([sample_ct])
        job = r.wait_job(r.start_conversion(study.study_id.value).job_id.value)
    model = job.model_id.value
    assert model, job.message
    addresses = [n.address for n in nodes]

    async def body() -> None:
        logs: dict[str, list[Event]] = {}

        def client(role: str, name: str, start: int) -> SessionClient:
            order = addresses[start:] + addresses[:start]
            c = SessionClient(
                order,
                token=nodes[0].token(role, CASE, subject=name),  # the nodes share a secret
                insecure=True,
                on_event=lambda e: logs.setdefault(name, []).append(e),
            )
            return c

        presenter = client("presenter", "surgeon", 0)  # on node 0, which keeps the model
        session_id = (await presenter.create_session()).session_id.value
        await presenter.join(session_id)
        await presenter.load_model(model, POSE)
        crowd = {"surgeon": presenter}
        for i in range(2):
            crowd[f"expert{i}"] = client("expert", f"expert{i}", 1 + i)
        for i in range(9):
            crowd[f"observer{i}"] = client("observer", f"observer{i}", i % 3)
        for name, c in crowd.items():
            if name != "surgeon":
                await c.join(session_id)
        on_node1 = [n for n, c in crowd.items() if c.servers[0] == addresses[1]]
        assert on_node1, "no client started on the node to be killed"

        async def guide(k: int) -> None:
            await presenter.commit_anchor(model, Pose((0.01 * k, 1.1, -0.5), POSE.rotation))
            await crowd["expert0"].add_marker(f"m{k}", model, [0.0, 0.001 * k, 0.0])

        for k in range(10):
            await guide(k)
        nodes[1].kill()  # mid-session: its clients must fail over and resume
        for k in range(10, 25):
            await guide(k)
        final = presenter.state.seq
        for name, c in crowd.items():
            await c.wait_seq(final, timeout_s=30)
            assert not c.errors or all("stream" in e for e in c.errors), (name, c.errors)
        for name in on_node1:
            assert crowd[name].reconnects >= 1, f"{name} never failed over"
        # Complete and identical sequences.
        reference = {e.seq: (e.kind, e.data, e.t_ns) for e in logs["surgeon"]}
        for name, events in logs.items():
            seqs = [e.seq for e in events]
            assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{name}: gaps or repeats"
            assert seqs[-1] >= final
            for e in events:
                if e.seq in reference:
                    assert reference[e.seq] == (e.kind, e.data, e.t_ns), (name, e.seq)
        states = {name: c.state.public_dict() for name, c in crowd.items()}
        assert len({repr(s) for s in states.values()}) == 1
        markers = [a for a in presenter.state.annotations if a.startswith("m")]
        assert len(markers) == 25
        for c in crowd.values():
            await c.close()

    asyncio.run(asyncio.wait_for(body(), 120))


def test_a_dead_bus_is_unavailable_not_internal(tmp_path: Path, knee_glb: Path) -> None:
    import grpc

    from holo.client import ClientError
    from holo.testing import TestServer

    async def body(server: TestServer, model: str, redis: RedisServer) -> None:
        presenter = SessionClient(
            server.address,
            token=server.token("presenter", CASE),
            insecure=True,
            retry=RetryPolicy(attempts=1),
        )
        session_id = (await presenter.create_session()).session_id.value
        await presenter.join(session_id)
        await presenter.load_model(model, POSE)
        redis._process.kill()  # Redis goes away mid-session
        redis._process.wait(10)
        with pytest.raises(ClientError) as err:
            await presenter.commit_anchor(model, POSE)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE, err.value
        assert "bus" in str(err.value)
        await presenter.close()

    redis = RedisServer()
    with redis as url, TestServer(tmp_path / "store", bus=url) as server:
        model = server.publish_model(CASE, knee_glb)
        asyncio.run(asyncio.wait_for(body(server, model, redis), 60))
