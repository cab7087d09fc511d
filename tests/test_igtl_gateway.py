"""The OpenIGTLink gateway against the reference C++ library, on a real holo server.

A real server on port 0 (TestServer), the sample knee published as a model, a presenter
and an expert from the SDK, the gateway in this event loop (the expert's token), and
``tests/igtl_client/client.cxx`` built against Debian's libopenigtlink-dev as the peer:
POLYDATA equals the model's mesh in RAS, anchors arrive as TRANSFORMs in RAS, tracker
poses become the gateway's pointer in the room frame, annotations arrive as POINTs, and
bad input drops only the connection that sent it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from igtl_peer import IgtlPeer, build_client

from holo.client.session import SessionClient
from holo.coords import (
    gltf_from_lps,
    gltf_from_ras,
    matrix_from_pose,
    ras_from_gltf,
    ras_from_lps,
    ras_transform_from_gltf,
)
from holo.export.meshes import level_meshes
from holo.igtl import (
    GatewayConfig,
    IgtlGateway,
    LandmarkCollector,
    TrackerSample,
    register_from_tracker,
)
from holo.igtl.messages import pack_position, pack_transform
from holo.server.ratelimit import RateLimits
from holo.session.records import Pose, Ray
from holo.testing import TestServer

POSE_A = Pose((0.1, 1.2, -0.4), (0.0, 0.0, 0.0, 1.0))
POSE_B = Pose((0.3, 1.0, -0.5), (0.0, 0.70710678, 0.0, 0.70710678))  # 90 degrees about up


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    # Tracker poses arrive at tracker rates: the per-user intent limit is tested elsewhere.
    limits = RateLimits().replaced(["intent_per_s=0", "intent_burst=0"])
    with TestServer(tmp_path_factory.mktemp("igtl"), rate_limits=limits) as running:
        yield running


@pytest.fixture(scope="module")
def client_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_client(tmp_path_factory.mktemp("igtl-client"))


@pytest.fixture
def case(request: pytest.FixtureRequest) -> str:
    return f"case-{request.node.name[5:40]}".replace("_", "-").replace("[", "-").rstrip("]")


@dataclass
class Scene:
    """A session with the knee loaded at POSE_A, and the gateway serving it."""

    server: TestServer
    case: str
    model_id: str
    presenter: SessionClient
    gateway: IgtlGateway

    def participant(self, role: str, name: str) -> SessionClient:
        token = self.server.token(role, self.case, subject=name)
        return SessionClient(self.server.address, token=token, insecure=True, display_name=name)


@asynccontextmanager
async def scene(
    server: TestServer, glb: Path, case: str, *, level: int = -1
) -> AsyncIterator[Scene]:
    model_id = server.publish_model(case, glb)
    presenter = SessionClient(server.address, token=server.token("presenter", case), insecure=True)
    info = await presenter.create_session()
    await presenter.join(info.session_id.value)
    await presenter.load_model(model_id, POSE_A)
    gateway = IgtlGateway(
        server.address,
        token=server.token("expert", case, subject="igtl-gateway"),
        insecure=True,
        config=GatewayConfig(port=0, level=level),
    )
    await gateway.start()  # finds the case's open session itself
    try:
        yield Scene(server, case, model_id, presenter, gateway)
    finally:
        await gateway.stop()
        await presenter.close()


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 120))


def expected_mesh(glb: Path, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's structures merged as the gateway sends them, in RAS mm."""
    vertices, faces, normals, offset = [], [], [], 0
    for v, f, n in level_meshes(glb.read_bytes(), level).values():
        vertices.append(ras_from_lps(v))
        faces.append(f + offset)
        normals.append(ras_from_lps(n))
        offset += len(v)
    return np.concatenate(vertices), np.concatenate(faces), np.concatenate(normals)


@pytest.mark.parametrize("level", [-1, 0])
def test_polydata_received_equals_the_models_mesh_in_ras(
    server: TestServer, knee_glb: Path, client_binary: Path, case: str, level: int
) -> None:
    async def body() -> None:
        async with scene(server, knee_glb, case, level=level) as s:
            peer = await IgtlPeer.connect(client_binary, s.gateway.port)
            try:
                polydata = await peer.message("POLYDATA", s.model_id)
            finally:
                await peer.close()
        assert polydata["crc"], "the reference library's CRC-64 check failed"
        vertices, faces, normals = expected_mesh(knee_glb, level)
        points = np.asarray(polydata["points"], dtype=np.float64)
        # float32 on the wire, printed with 9 significant digits: exact to float32.
        np.testing.assert_allclose(points, vertices.astype(np.float32), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(polydata["polygons"]), faces)
        (attribute,) = polydata["attributes"]
        assert (attribute["name"], attribute["type"], attribute["components"]) == (
            "Normals",
            0x02,  # POINT_DATA / Normals
            3,
        )
        received = np.asarray(attribute["data"])
        assert received.shape == vertices.shape
        np.testing.assert_allclose(np.linalg.norm(received, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(received, normals, atol=1e-5)
        # RAS, not LPS: the knee's points have the sign of RAS x (Right = -Left).
        lps_x = np.concatenate(
            [v for v, _, _ in level_meshes(knee_glb.read_bytes(), level).values()]
        )[:, 0]
        np.testing.assert_allclose(points[:, 0], -lps_x, atol=1e-4)

    run(body)


def test_anchor_transform_is_correct_in_ras_after_the_presenter_moves_the_model(
    server: TestServer, knee_glb: Path, client_binary: Path, case: str
) -> None:
    async def body() -> None:
        async with scene(server, knee_glb, case) as s:
            peer = await IgtlPeer.connect(client_binary, s.gateway.port)
            try:
                first = await peer.message("TRANSFORM", s.model_id)
                np.testing.assert_allclose(first["matrix"], ras_matrix(POSE_A), atol=1e-4)
                await s.presenter.commit_anchor(s.model_id, POSE_B)
                moved = await peer.message("TRANSFORM", s.model_id)
                dragged_pose = Pose((0.0, 1.5, 0.0), POSE_B.rotation)
                await s.presenter.drag(s.model_id, dragged_pose)
                dragged = await peer.message("TRANSFORM", s.model_id)
            finally:
                await peer.close()
        assert moved["crc"]
        matrix = np.asarray(moved["matrix"])
        np.testing.assert_allclose(matrix, ras_matrix(POSE_B), atol=1e-4)
        # Landmarks: the room point (0.3, 1.0, -0.5) m is 300 mm to the room's left (RAS
        # x -300), 1000 mm up (S +1000) and 500 mm back (A -500).
        np.testing.assert_allclose(matrix[:3, 3], [-300.0, -500.0, 1000.0], atol=1e-3)
        # 90 degrees about up (glTF +Y) is 90 degrees about Superior: Right -> Anterior... as
        # glTF's rotation turns Left (+X) to Posterior (-Z), RAS's turns -R to -A.
        np.testing.assert_allclose(matrix[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)
        np.testing.assert_allclose(dragged["matrix"], ras_matrix(dragged_pose), atol=1e-4)

    run(body)


def ras_matrix(pose: Pose) -> np.ndarray:
    return ras_transform_from_gltf(matrix_from_pose(pose.position, pose.rotation))


# The tool at RAS (100, 50, 200) mm, turned 90 degrees about R: its -z axis (the
# pointing axis) then points Anterior.
TOOL = [[1, 0, 0, 100], [0, 0, -1, 50], [0, 1, 0, 200], [0, 0, 0, 1]]


async def pointer_of(observer: SessionClient, participant_id: str, origin: np.ndarray) -> Ray:
    """The participant's pointer as ``observer`` sees it, once it reaches ``origin``."""

    def there(c: SessionClient) -> bool:
        update = c.latest.get((participant_id, "pointer"))
        return (
            update is not None
            and isinstance(update.value, Ray)
            and np.allclose(update.value.origin, origin, atol=1e-6)
        )

    await observer.wait_for(there, 20)
    ray = observer.latest[(participant_id, "pointer")].value
    assert isinstance(ray, Ray)
    return ray


def test_a_tracker_transform_from_the_reference_client_becomes_the_gateways_pointer(
    server: TestServer, knee_glb: Path, client_binary: Path, case: str
) -> None:
    async def body() -> None:
        async with scene(server, knee_glb, case) as s:
            observer = s.participant("observer", "student")
            await observer.join(s.gateway.session_id)
            # The hook registration will use: a sink of its own gets every sample, and a
            # sink that fails costs neither the pointer nor the other sinks.
            samples: list[TrackerSample] = []

            def broken(sample: TrackerSample) -> None:
                raise RuntimeError("a sink with a bug")

            s.gateway.add_tracker_sink(broken)
            s.gateway.add_tracker_sink(samples.append)
            peer = await IgtlPeer.connect(client_binary, s.gateway.port)
            try:
                await peer.send_transform("Stylus", TOOL)
                ray = await pointer_of(
                    observer, s.gateway.session.participant_id, gltf_from_ras([100, 50, 200])
                )
                # Room frame: 100 mm to the right is -X, 200 mm up +Y, 50 mm anterior +Z.
                np.testing.assert_allclose(ray.origin, [-0.1, 0.2, 0.05], atol=1e-6)
                np.testing.assert_allclose(ray.direction, [0, 0, 1], atol=1e-6)  # anterior
                # POSITION (position + quaternion) from the same library: the tool
                # untilted at RAS (-20, 0, 10): pointing Inferior, glTF -Y.
                await peer.send_position("Stylus", (-20, 0, 10), (0, 0, 0, 1))
                ray = await pointer_of(
                    observer, s.gateway.session.participant_id, gltf_from_ras([-20, 0, 10])
                )
                np.testing.assert_allclose(ray.direction, [0, -1, 0], atol=1e-6)
            finally:
                await peer.close()
                await observer.close()
        assert s.gateway.samples == 2
        first, second = samples
        assert (first.device_name, first.message_type) == ("Stylus", "TRANSFORM")
        np.testing.assert_allclose(first.matrix_ras, TOOL, atol=1e-6)
        np.testing.assert_allclose(first.pose.position, [-0.1, 0.2, 0.05], atol=1e-6)
        assert second.message_type == "POSITION"
        np.testing.assert_allclose(second.pose.position, gltf_from_ras([-20, 0, 10]), atol=1e-6)

    run(body)


def test_an_experts_annotation_arrives_as_point(
    server: TestServer, knee_glb: Path, client_binary: Path, case: str
) -> None:
    async def body() -> None:
        async with scene(server, knee_glb, case) as s:
            expert = s.participant("expert", "dr-remote")
            await expert.join(s.gateway.session_id)
            peer = await IgtlPeer.connect(client_binary, s.gateway.port)
            try:
                await peer.message("POLYDATA", s.model_id)
                await expert.add_marker("m1", s.model_id, [0.01, 0.03, 0.02])
                marker = await peer.message("POINT", s.model_id)
                await expert.add_stroke("s1", s.model_id, [[0, 0, 0], [0, 0.01, 0]])
                both = await peer.message("POINT", s.model_id)
                await expert.remove_annotation("m1")
                after = await peer.message("POINT", s.model_id)
            finally:
                await peer.close()
                await expert.close()
        assert marker["crc"]
        (point,) = marker["points"]
        # The owner stays empty: holo's 20-character model ids are one byte too many for the
        # reference library's POINT reader (holo.igtl.scene says why); the message's device
        # name is the model's.
        assert (point["name"], point["group"], point["owner"]) == ("m1", "marker", "")
        assert len(s.model_id) == 20
        # (0.01, 0.03, 0.02) m in the model frame: 10 mm left, 30 mm superior, 20 mm
        # anterior: RAS (-10, 20, 30).
        np.testing.assert_allclose(point["position"], [-10.0, 20.0, 30.0], atol=1e-4)
        assert [p["name"] for p in both["points"]] == ["m1", "s1#0", "s1#1"]
        np.testing.assert_allclose(both["points"][2]["position"], ras_from_gltf([0, 0.01, 0]))
        assert [p["name"] for p in after["points"]] == ["s1#0", "s1#1"]

    run(body)


# Bad input -------------------------------------------------------------------------------


def _header(kind: bytes, size: int, crc: int = 0, *, version: int = 1) -> bytes:
    return struct.pack(">H12s20sQQQ", version, kind, b"PATIENT-DOE-1937", 0, size, crc)


def _wrong_crc() -> bytes:
    data = bytearray(pack_transform("PATIENT-DOE-1937", np.eye(4)))
    data[-3] ^= 0x40
    return bytes(data)


def _short_transform() -> bytes:
    from pyigtl.messages import CRC64

    body = b"\x01" * 40
    return _header(b"TRANSFORM", len(body), CRC64(body)) + body


BAD_INPUT = {
    "garbage instead of a header": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\xff" * 40,
    "unknown header version": _header(b"TRANSFORM", 48, version=9) + b"\0" * 48,
    "a type that is no name": _header(b"\x01\x02\xfe", 0),
    "a wrong CRC": _wrong_crc(),
    "a huge body size": _header(b"IMAGE", 1 << 40),
    "a TRANSFORM body of the wrong size": _short_transform(),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_drops_only_that_connection(
    server: TestServer,
    knee_glb: Path,
    client_binary: Path,
    case: str,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="holo.igtl")

    async def body() -> None:
        async with scene(server, knee_glb, case) as s:
            good = await IgtlPeer.connect(client_binary, s.gateway.port)
            await good.message("POLYDATA", s.model_id)
            reader, writer = await asyncio.open_connection("127.0.0.1", s.gateway.port)
            writer.write(BAD_INPUT[name])
            await writer.drain()
            # The gateway closes the bad connection (after what it had sent it).
            while await asyncio.wait_for(reader.read(1 << 20), 10):
                pass
            writer.close()
            assert s.gateway.dropped == 1
            # The good peer is still served, and new peers are too.
            await s.presenter.commit_anchor(s.model_id, POSE_B)
            await good.message("TRANSFORM", s.model_id)
            again = await IgtlPeer.connect(client_binary, s.gateway.port)
            await again.message("POLYDATA", s.model_id)
            for peer in (good, again):
                await peer.close()

    run(body)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "\n" not in dropped[0], dropped
    assert "PATIENT" not in caplog.text  # device names are never logged


def test_messages_of_types_it_does_not_take_are_skipped(
    server: TestServer, knee_glb: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="holo.igtl")
    from pyigtl.messages import CRC64

    status = b"\0\x01" + b"\0" * 8 + b"\0" * 20 + b"OK\0"  # a STATUS body
    skipped = _header(b"STATUS", len(status), CRC64(status)) + status

    async def body() -> None:
        async with scene(server, knee_glb, case) as s:
            observer = s.participant("observer", "student")
            await observer.join(s.gateway.session_id)
            _reader, writer = await asyncio.open_connection("127.0.0.1", s.gateway.port)
            writer.write(skipped * 3 + pack_position("Tool", (1, 2, 3), (0, 0, 0, 1)))
            await writer.drain()
            await pointer_of(observer, s.gateway.session.participant_id, gltf_from_ras([1, 2, 3]))
            assert s.gateway.dropped == 0
            writer.close()
            await observer.close()

    run(body)
    assert sum("skipping STATUS" in r.getMessage() for r in caplog.records) == 1


def test_the_holo_igtl_command_serves_a_session_and_leaves_it_on_sigterm(
    server: TestServer, knee_glb: Path, client_binary: Path, case: str
) -> None:
    async def body() -> None:
        model_id = server.publish_model(case, knee_glb)
        presenter = SessionClient(
            server.address, token=server.token("presenter", case), insecure=True
        )
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        await presenter.load_model(model_id, POSE_A)
        command = [sys.executable, "-m", "holo.cli", "igtl", "--server", server.address]
        command += ["--token", server.token("expert", case, subject="igtl"), "--insecure"]
        command += ["--session", info.session_id.value, "--listen", "127.0.0.1:0", "--lod", "0"]
        process = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        found = re.search(r"serving OpenIGTLink on 127\.0\.0\.1:(\d+) for session (\S+)", line)
        assert found, line
        assert found.group(2) == info.session_id.value
        peer = await IgtlPeer.connect(client_binary, int(found.group(1)))
        polydata = await peer.message("POLYDATA", model_id)
        coarse = level_meshes(knee_glb.read_bytes(), 0).values()
        assert len(polydata["polygons"]) == sum(len(f) for _, f, _ in coarse)  # --lod 0
        joined = {p.display_name for p in presenter.state.participants.values()}
        assert "OpenIGTLink gateway" in joined
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        await peer.next(lambda m: m.get("event") == "closed")
        await peer.close()
        await presenter.wait_for(
            lambda c: all(
                p.display_name != "OpenIGTLink gateway" for p in c.state.participants.values()
            )
        )
        await presenter.close()

    run(body)


def test_landmarks_touched_with_a_tracked_pointer_register_the_model(
    server: TestServer, knee_glb: Path, client_binary: Path, case: str
) -> None:
    """The reference client plays a tracked pointer: held on each of five landmarks of the
    knee where it lies at POSE_B (a passing sample first, which must not count), then the
    gateway, given control, registers the model with them: it moves from POSE_A to POSE_B
    and the session shows the registration."""
    knee = np.concatenate([v for v, _, _ in level_meshes(knee_glb.read_bytes(), -1).values()])
    model_points = gltf_from_lps(
        knee[
            [
                np.argmin(knee[:, 0]),
                np.argmax(knee[:, 0]),
                np.argmin(knee[:, 2]),
                np.argmax(knee[:, 2]),
                np.argmax(knee[:, 1]),
            ]
        ].astype(np.float64)
    )
    anchor = matrix_from_pose(POSE_B.position, POSE_B.rotation)
    room_points = model_points @ anchor[:3, :3].T + anchor[:3, 3]
    rng = np.random.default_rng(11)

    async def body() -> None:
        async with scene(server, knee_glb, case) as s:
            collector = LandmarkCollector("Stylus", samples=5, max_spread_mm=1.0)
            s.gateway.add_tracker_sink(collector)
            await s.presenter.grant_control(s.gateway.session.participant_id)
            peer = await IgtlPeer.connect(client_binary, s.gateway.port)

            async def touch(k: int) -> None:
                tip = np.eye(4)
                tip[:3, 3] = ras_from_gltf(room_points[k]) + np.array([30.0, 0, 0])  # passing by
                await peer.send_transform("Stylus", tip)
                for _ in range(5):  # held on the landmark, 0.1 mm jitter
                    tip[:3, 3] = ras_from_gltf(room_points[k]) + rng.normal(0, 0.1, 3)
                    await peer.send_transform("Stylus", tip)

            touching: list[asyncio.Task[None]] = []
            try:
                seq, figures, pose = await register_from_tracker(
                    s.gateway.session,
                    s.model_id,
                    [tuple(p) for p in model_points],
                    collector,
                    before_each=lambda k: touching.append(asyncio.create_task(touch(k))),
                    timeout_s=20,
                    fle_mm=0.3,
                )
            finally:
                await asyncio.gather(*touching)
                await peer.close()
            assert seq > 0 and figures.accepted, figures.reasons
            assert figures.fre_rms_mm < 0.5
            np.testing.assert_allclose(pose.position, POSE_B.position, atol=1e-3)
            await s.presenter.wait_for(lambda c: c.state.seq >= seq)
            shown = s.presenter.state.models[s.model_id]
            assert shown.registration == figures
            np.testing.assert_allclose(shown.anchor_pose.position, POSE_B.position, atol=1e-3)

    run(body)
