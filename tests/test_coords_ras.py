"""RAS (3D Slicer, OpenIGTLink) <-> LPS <-> glTF, checked with anatomical landmarks.

A point known to be patient-left-anterior-superior must land on the left, anterior and
superior side in every frame, each axis in its own convention; rotations survive the trip
RAS -> glTF -> RAS, and poses survive 4x4 matrices.
"""

from __future__ import annotations

import numpy as np
import pytest

from holo.coords import (
    GLTF_FROM_RAS,
    RAS_FROM_GLTF,
    gltf_from_lps,
    gltf_from_ras,
    gltf_transform_from_ras,
    matrix_from_pose,
    pose_from_matrix,
    ras_from_gltf,
    ras_from_lps,
    ras_transform_from_gltf,
)

# 10 mm to the patient's left, 20 mm anterior, 30 mm superior of the origin.
LEFT_ANTERIOR_SUPERIOR_LPS = (10.0, -20.0, 30.0)  # L+, P-, S+
LEFT_ANTERIOR_SUPERIOR_RAS = (-10.0, 20.0, 30.0)  # R-, A+, S+
LEFT_ANTERIOR_SUPERIOR_GLTF = (0.010, 0.030, 0.020)  # +X left, +Y up (S), +Z anterior; metres


def test_a_left_anterior_superior_point_lands_where_expected_in_every_frame() -> None:
    np.testing.assert_allclose(ras_from_lps(LEFT_ANTERIOR_SUPERIOR_LPS), LEFT_ANTERIOR_SUPERIOR_RAS)
    np.testing.assert_allclose(
        gltf_from_lps(LEFT_ANTERIOR_SUPERIOR_LPS), LEFT_ANTERIOR_SUPERIOR_GLTF, atol=1e-15
    )
    np.testing.assert_allclose(
        ras_from_gltf(LEFT_ANTERIOR_SUPERIOR_GLTF), LEFT_ANTERIOR_SUPERIOR_RAS, atol=1e-12
    )
    np.testing.assert_allclose(
        gltf_from_ras(LEFT_ANTERIOR_SUPERIOR_RAS), LEFT_ANTERIOR_SUPERIOR_GLTF, atol=1e-15
    )


@pytest.mark.parametrize(
    ("ras_direction", "gltf_direction"),
    [
        ((1, 0, 0), (-1, 0, 0)),  # patient Right is glTF -X (+X is Left)
        ((0, 1, 0), (0, 0, 1)),  # Anterior is glTF +Z
        ((0, 0, 1), (0, 1, 0)),  # Superior is glTF +Y (up)
    ],
)
def test_ras_axes_map_onto_the_gltf_axes(
    ras_direction: tuple[int, int, int], gltf_direction: tuple[int, int, int]
) -> None:
    linear = RAS_FROM_GLTF[:3, :3]
    np.testing.assert_allclose(linear @ gltf_direction / 1000.0, ras_direction, atol=1e-12)
    np.testing.assert_allclose(
        GLTF_FROM_RAS[:3, :3] @ ras_direction * 1000.0, gltf_direction, atol=1e-12
    )


def test_the_conversion_is_a_proper_rotation_and_its_own_inverse() -> None:
    assert np.linalg.det(RAS_FROM_GLTF[:3, :3] / 1000.0) == pytest.approx(1.0)
    np.testing.assert_allclose(RAS_FROM_GLTF @ GLTF_FROM_RAS, np.eye(4), atol=1e-12)
    points = np.random.default_rng(1).normal(size=(50, 3))
    np.testing.assert_allclose(gltf_from_ras(ras_from_gltf(points)), points, atol=1e-12)
    np.testing.assert_allclose(ras_from_lps(ras_from_lps(points)), points)


def test_a_quarter_turn_about_up_in_gltf_is_a_quarter_turn_about_superior_in_ras() -> None:
    # +90 degrees about glTF +Y turns +X (left) into -Z (posterior) ...
    quarter = np.sin(np.pi / 4)
    gltf = matrix_from_pose((0.1, 0.2, 0.3), (0.0, quarter, 0.0, quarter))
    np.testing.assert_allclose(gltf[:3, :3] @ (1, 0, 0), (0, 0, -1), atol=1e-12)
    ras = ras_transform_from_gltf(gltf)
    # ... and in RAS, left (-x) turns posterior (-y): +90 degrees about Superior (+z).
    np.testing.assert_allclose(ras[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    # The translation is the same point, in RAS millimetres.
    np.testing.assert_allclose(ras[:3, 3], ras_from_gltf((0.1, 0.2, 0.3)), atol=1e-12)
    # A model point moved in glTF then converted = converted then moved in RAS.
    point = np.array([0.01, -0.02, 0.05])
    moved_gltf = (gltf @ [*point, 1.0])[:3]
    np.testing.assert_allclose(
        (ras @ [*ras_from_gltf(point), 1.0])[:3], ras_from_gltf(moved_gltf), atol=1e-9
    )


def test_random_poses_survive_the_round_trip_through_ras_and_float32() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        rotation = rng.normal(size=4)
        rotation /= np.linalg.norm(rotation)
        position = rng.normal(size=3)
        gltf = matrix_from_pose(position, rotation)
        ras = ras_transform_from_gltf(gltf).astype(np.float32)  # as OpenIGTLink carries it
        back_position, back_rotation = pose_from_matrix(gltf_transform_from_ras(ras))
        np.testing.assert_allclose(back_position, position, atol=1e-6)
        same = rotation if rotation[3] >= 0 else -rotation  # q and -q are one rotation
        np.testing.assert_allclose(back_rotation, same, atol=1e-6)


@pytest.mark.parametrize("angle", [0.0, np.pi / 2, np.pi, 3.0])
@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1)])
def test_pose_from_matrix_inverts_matrix_from_pose_at_every_angle(
    angle: float, axis: tuple[int, int, int]
) -> None:
    unit = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    rotation = [*(unit * np.sin(angle / 2)), np.cos(angle / 2)]
    matrix = matrix_from_pose((1.0, 2.0, 3.0), rotation)
    position, back = pose_from_matrix(matrix)
    np.testing.assert_allclose(matrix_from_pose(position, back), matrix, atol=1e-12)
    assert np.linalg.norm(back) == pytest.approx(1.0)
