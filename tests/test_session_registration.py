"""Register: a model placed on the patient by registration, through a real server.

The truth is a known anchor (model frame -> room frame); landmarks picked on the sample
knee's mesh are "touched" where the truth puts them, with localisation noise of known size.
The registration must find the truth to within what that noise allows, everyone in the
session must see its errors, and one over the limits must be flagged, not applied, unless
the participant in control asks for it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.coords import gltf_from_lps, matrix_from_pose
from holo.export.meshes import level_meshes
from holo.session.records import Pose
from holo.testing import TestServer

# A quarter turn about up and a step to the table: where the knee lies in the room.
TRUTH = Pose((0.4, 0.9, -0.3), (0.0, math.sin(math.pi / 4), 0.0, math.cos(math.pi / 4)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    with TestServer(tmp_path_factory.mktemp("registration")) as running:
        yield running


@pytest.fixture(scope="module")
def knee_points(knee_glb: Path) -> np.ndarray:
    """The knee's full-detail vertices in its model frame (glTF metres)."""
    parts = level_meshes(knee_glb.read_bytes(), -1).values()
    return gltf_from_lps(np.concatenate([v for v, _, _ in parts]).astype(np.float64))


def landmarks(points: np.ndarray, n: int) -> np.ndarray:
    """``n`` well spread vertices: the extremes along each axis, then the centre's
    neighbour, as a radiologist would pick bony prominences."""
    picks = []
    for axis in range(3):
        picks += [points[np.argmin(points[:, axis])], points[np.argmax(points[:, axis])]]
    centre = points.mean(axis=0)
    picks.append(points[np.argmin(np.linalg.norm(points - centre, axis=1))])
    return np.array(picks[:n])


def in_room(points: np.ndarray, pose: Pose = TRUTH) -> np.ndarray:
    matrix = matrix_from_pose(pose.position, pose.rotation)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def pose_error(found: Pose, truth: Pose, points: np.ndarray) -> float:
    """The largest distance (mm) between where ``found`` and ``truth`` put ``points``."""
    return float(
        np.linalg.norm(in_room(points, found) - in_room(points, truth), axis=1).max() * 1e3
    )


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


def client(server: TestServer, role: str, case: str) -> SessionClient:
    return SessionClient(
        server.address, token=server.token(role, case, subject=role), insecure=True
    )


async def presenter_session(server: TestServer, case: str) -> tuple[SessionClient, str]:
    """The case's session, opened and joined by its presenter."""
    presenter = client(server, "presenter", case)
    session_id = (await presenter.create_session()).session_id.value
    await presenter.join(session_id)
    return presenter, session_id


def test_a_registration_places_the_model_and_everyone_sees_its_error(
    server: TestServer, knee_glb: Path, knee_points: np.ndarray
) -> None:
    """Six landmarks touched with 0.5 mm noise: applied (an anchor_committed event), the
    anchor within 2 mm of the truth over the whole knee, and an observer's state holds the
    registration with its FRE per landmark and its expected TRE at the knee's corners."""
    case = "case-registration"
    model_id = server.publish_model(case, knee_glb)
    rng = np.random.default_rng(7)
    picked = landmarks(knee_points, 6)
    touched = in_room(picked) + rng.normal(0, 0.5e-3, picked.shape)

    async def body() -> None:
        presenter, session_id = await presenter_session(server, case)
        await presenter.load_model(model_id)
        observer = client(server, "observer", case)
        await observer.join(session_id)
        seq, figures, pose = await presenter.register(model_id, picked, touched, fle_mm=0.5)
        assert seq > 0 and figures.accepted, figures.reasons
        assert pose_error(pose, TRUTH, knee_points) < 2.0
        assert len(figures.fiducial_errors_mm) == 6 and 0 < figures.fre_rms_mm < 1.0
        assert len(figures.expected_tre_mm) == 8  # the corners of the knee's bounds
        assert max(figures.tre95_mm) < 2.0 and figures.fle_mm == 0.5
        await observer.wait_for(lambda c: c.state.seq >= seq)
        shown = observer.state.models[model_id]
        assert shown.registration == figures
        assert pose_error(shown.anchor_pose, TRUTH, knee_points) < 2.0
        # A placement by hand afterwards is not a registration: its figures go.
        seq = await presenter.commit_anchor(model_id, TRUTH)
        await observer.wait_for(lambda c: c.state.seq >= seq)
        assert observer.state.models[model_id].registration is None
        await observer.close()
        await presenter.close()

    run(body)


def test_a_registration_over_the_limits_is_flagged_not_applied(
    server: TestServer, knee_glb: Path, knee_points: np.ndarray
) -> None:
    """Landmarks touched 6 mm off: the answer says why it is flagged and nothing changes in
    the session; asked again with apply_flagged, it is applied and shown flagged."""
    case = "case-registration-flagged"
    model_id = server.publish_model(case, knee_glb)
    rng = np.random.default_rng(8)
    picked = landmarks(knee_points, 4)
    touched = in_room(picked) + rng.normal(0, 6e-3, picked.shape)

    async def body() -> None:
        presenter, _session_id = await presenter_session(server, case)
        loaded = await presenter.load_model(model_id)
        seq, figures, _ = await presenter.register(model_id, picked, touched)
        assert seq == 0 and not figures.accepted and figures.reasons
        assert all("mm" in reason for reason in figures.reasons), figures.reasons
        assert presenter.state.seq == loaded  # nothing appended
        assert presenter.state.models[model_id].anchor_pose == Pose.IDENTITY
        seq, again, _ = await presenter.register(model_id, picked, touched, apply_flagged=True)
        assert seq > loaded and not again.accepted
        await presenter.wait_for(lambda c: c.state.seq >= seq)
        assert presenter.state.models[model_id].registration == again
        await presenter.close()

    run(body)


def test_surface_points_refine_a_registration(
    server: TestServer, knee_glb: Path, knee_points: np.ndarray
) -> None:
    """Four noisy landmarks (2 mm) and 400 points painted on the bone (0.3 mm noise, 10 %
    lifted off it by 2-4 cm): the refinement uses the bone points, rejects the lifted ones,
    and lands closer to the truth than the landmarks alone."""
    case = "case-registration-surface"
    model_id = server.publish_model(case, knee_glb)
    rng = np.random.default_rng(9)
    picked = landmarks(knee_points, 4)
    touched = in_room(picked) + rng.normal(0, 2e-3, picked.shape)
    painted = knee_points[rng.choice(len(knee_points), 400, replace=False)]
    surface = in_room(painted) + rng.normal(0, 0.3e-3, painted.shape)
    lifted = rng.choice(400, 40, replace=False)
    surface[lifted] += rng.normal(size=(40, 3)) * rng.uniform(0.02, 0.04, (40, 1))

    async def body() -> None:
        presenter, _session_id = await presenter_session(server, case)
        await presenter.load_model(model_id)
        _, paired, paired_pose = await presenter.register(
            model_id, picked, touched, apply_flagged=True
        )
        _, refined, refined_pose = await presenter.register(
            model_id, picked, touched, surface_points=surface, apply_flagged=True
        )
        assert paired.surface_points_used == 0
        assert refined.surface_points_used >= 340 and refined.surface_points_rejected >= 30
        assert refined.surface_rms_mm < 1.0
        assert pose_error(refined_pose, TRUTH, knee_points) < pose_error(
            paired_pose, TRUTH, knee_points
        )
        assert pose_error(refined_pose, TRUTH, knee_points) < 1.5
        await presenter.close()

    run(body)


def test_who_may_register_and_what_is_refused(
    server: TestServer, knee_glb: Path, knee_points: np.ndarray
) -> None:
    """Only the participant in control (an expert without it is refused before any work);
    collinear landmarks, mismatched counts and a model not loaded are refused in one line."""
    case = "case-registration-refused"
    model_id = server.publish_model(case, knee_glb)
    picked = landmarks(knee_points, 4)
    touched = in_room(picked)

    async def body() -> None:
        presenter, session_id = await presenter_session(server, case)
        with pytest.raises(ClientError, match=r"INVALID_ARGUMENT.*not loaded.*load it first"):
            await presenter.register(model_id, picked, touched)
        await presenter.load_model(model_id)
        expert = client(server, "expert", case)
        await expert.join(session_id)
        with pytest.raises(ClientError, match="PERMISSION_DENIED"):
            await expert.register(model_id, picked, touched)
        line = np.array([[0.0, 0.0, 0.01 * k] for k in range(4)])
        cases = [(line, in_room(line), "collinear|line"), (picked, touched[:3], "3|4")]
        for model_points, room_points, why in cases:
            with pytest.raises(ClientError, match="INVALID_ARGUMENT") as refused:
                await presenter.register(model_id, model_points, room_points)
            message = str(refused.value)
            assert "\n" not in message and any(w in message for w in why.split("|")), message
        await expert.close()
        await presenter.close()

    run(body)
