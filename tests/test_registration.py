"""Registration against analytic truth (holo.registration).

Known rigid transforms plus localisation noise of known size, on fiducials and surface
points of the sample knee's model and of a real CT's: the transform comes back, FRE and TRE
follow Fitzpatrick's expectations within their statistical bounds, ICP recovers a small
perturbation with outliers present, degenerate input is refused with a clear message, and a
registration over the limits is flagged.

The statistical tests run many trials with a fixed seed and compare the mean of a squared
error with its expectation. The tolerance is 4 standard errors of that mean (theoretical
where the distribution is known, from the sample otherwise), and each test also checks that
the plausible wrong answer (no ``1 - 2/N`` factor, no geometry term) is many standard
errors away, so the test can tell the right formula from a wrong one rather than pass by
having a wide tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from holo.coords import (
    anchor_from_registration,
    gltf_from_lps,
    registration_from_anchor,
    room_mm_from_m,
)
from holo.errors import RegistrationError
from holo.registration import (
    AccuracyLimits,
    RigidTransform,
    expected_fre,
    expected_tre,
    register,
    register_paired_points,
    tre_percentile,
)
from holo.registration.surface import refine_on_surface
from holo.testing.accuracy import Capsule
from holo.testing.registration import (
    bone_meshes,
    capsule_patch,
    localise,
    mesh_patch,
    paired_trials,
    random_transform,
    spread_points,
    touch_surface,
)

REPO = Path(__file__).resolve().parents[1]
TRIALS = 2000
SE_TOLERANCE = 4.0  # a fixed seed: this passes or fails the same way every run
ANTERIOR = (0.0, -1.0, 0.0)  # LPS: the knee's exposed side in a supine patient


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((REPO / "sample_data" / "truth.json").read_text())


@pytest.fixture(scope="module")
def knee(sample_ct: Path) -> trimesh.Trimesh:
    """The sample knee's bone model (femur, tibia, patella), patient LPS mm."""
    return trimesh.util.concatenate(bone_meshes(sample_ct))


@pytest.fixture(scope="module")
def targets(truth: dict) -> np.ndarray:
    """The knee's landmarks and the femur's proximal end (far from the fiducials' centre,
    where the geometry term of the TRE matters), patient LPS mm."""
    points = [mark["lps_mm"] for mark in truth["landmarks"].values()]
    return np.array([*points, truth["bones"]["femur"]["segment_end_lps_mm"]])


def test_noise_free_fiducials_give_the_transform_back(knee: trimesh.Trimesh) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        fiducials = spread_points(knee.vertices, int(rng.integers(3, 11)), rng)
        truth = random_transform(rng)
        result = register_paired_points(fiducials, truth.apply(fiducials))
        np.testing.assert_allclose(result.room_from_patient.rotation, truth.rotation, atol=1e-12)
        np.testing.assert_allclose(
            result.room_from_patient.translation, truth.translation, atol=1e-9
        )
        assert result.fre_rms_mm < 1e-9


def test_agrees_with_simpleitk_landmark_initializer(knee: trimesh.Trimesh) -> None:
    """An independent implementation of the same least-squares problem (ITK's
    LandmarkBasedTransformInitializer, Horn's quaternion method) gives the same answer."""
    import SimpleITK as sitk

    rng = np.random.default_rng(2)
    for n in (3, 4, 6, 10):
        fiducials = spread_points(knee.vertices, n, rng)
        truth = random_transform(rng, translation_mm=300)
        room = localise(truth.apply(fiducials), 2.0, rng)
        ours = register_paired_points(fiducials, room).room_from_patient
        itk = sitk.LandmarkBasedTransformInitializer(
            sitk.VersorRigid3DTransform(),
            fiducials.ravel().tolist(),  # fixed: the transform maps these ...
            room.ravel().tolist(),  # ... onto these
        )
        mapped = np.array([itk.TransformPoint(tuple(p)) for p in fiducials])
        np.testing.assert_allclose(ours.apply(fiducials), mapped, atol=1e-6)


def test_three_fiducials_give_a_proper_rotation_never_a_mirror() -> None:
    """With 3 fiducials the cross-covariance has rank 2 and an unguarded SVD solution is a
    reflection about half the time; the result must always be a proper rotation."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        fiducials = rng.normal(scale=40.0, size=(3, 3))
        truth = random_transform(rng)
        noisy = register_paired_points(fiducials, localise(truth.apply(fiducials), 1.0, rng))
        assert np.linalg.det(noisy.room_from_patient.rotation) == pytest.approx(1.0, abs=1e-12)
        exact = register_paired_points(fiducials, truth.apply(fiducials))
        np.testing.assert_allclose(exact.room_from_patient.matrix, truth.matrix, atol=1e-9)


def test_mirrored_fiducials_are_fitted_by_a_rotation_and_flagged(
    knee: trimesh.Trimesh, targets: np.ndarray
) -> None:
    """Landmarks touched on the wrong side (mirrored): no mirror is fitted, the FRE shows
    it, and the check flags it."""
    rng = np.random.default_rng(4)
    fiducials = spread_points(knee.vertices, 6, rng)
    mirrored = fiducials * np.array([-1.0, 1.0, 1.0])
    report = register(fiducials, random_transform(rng).apply(mirrored), targets_lps_mm=targets)
    assert np.linalg.det(report.room_from_patient.rotation) == pytest.approx(1.0)
    assert report.fre_rms_mm > 5.0
    assert not report.check.accepted
    assert any("RMS FRE" in reason for reason in report.check.reasons)


@pytest.mark.parametrize("n", [4, 6, 10])
def test_fre_and_tre_follow_fitzpatrick(knee: trimesh.Trimesh, targets: np.ndarray, n: int) -> None:
    """Over 2000 trials at FLE = 1 mm, on one fiducial configuration spread over the knee:

    - ``N * FRE**2 / sigma**2`` is chi-square with ``3N - 6`` degrees of freedom (first
      order), so ``E[FRE**2] = (1 - 2/N) FLE**2`` with a known standard error;
    - the FLE estimated from FRE is unbiased in its square;
    - the mean squared TRE at each target is Fitzpatrick's ``E[TRE**2]`` (standard error
      from the sample), and the prediction each trial reports (from its own FRE) is right
      on average;
    - the 95 % bound each trial reports (F(3, 3N - 6) on its estimated FLE) is exceeded in
      5 % of trials at each target, within the binomial standard error (the bound is first
      order and isotropic: on a strongly anisotropic layout it can be exceeded up to about
      twice as often; these layouts are not).
    """
    fle = 1.0
    rng = np.random.default_rng(100 + n)
    fiducials = spread_points(knee.vertices, n, rng)
    trials = paired_trials(fiducials, targets, fle, TRIALS, rng)

    sigma2 = fle**2 / 3
    fre2 = trials.fre_rms_mm**2
    fre2_se = sigma2 * np.sqrt(2 * (3 * n - 6)) / n / np.sqrt(TRIALS)
    assert abs(fre2.mean() - expected_fre(fle, n) ** 2) < SE_TOLERANCE * fre2_se
    assert abs(fre2.mean() - fle**2) > 8 * fre2_se  # without the (1 - 2/N) factor: far off

    fle2 = trials.fle_estimate_mm**2
    assert abs(fle2.mean() - fle**2) < SE_TOLERANCE * fre2_se * n / (n - 2)

    tre2 = trials.tre_mm**2
    tre2_se = tre2.std(axis=0, ddof=1) / np.sqrt(TRIALS)
    expected2 = trials.expected_tre_mm**2
    assert np.all(np.abs(tre2.mean(axis=0) - expected2) < SE_TOLERANCE * tre2_se)
    # The geometry term matters at the far target: FLE**2 / N alone is far off there.
    far = int(np.argmax(expected2))
    assert abs(tre2.mean(axis=0)[far] - fle**2 / n) > 8 * tre2_se[far]

    predicted2 = trials.predicted_tre_mm**2
    predicted2_se = predicted2.std(axis=0, ddof=1) / np.sqrt(TRIALS)
    assert np.all(np.abs(predicted2.mean(axis=0) - expected2) < SE_TOLERANCE * predicted2_se)

    binomial_se = np.sqrt(0.05 * 0.95 / TRIALS)
    over = (trials.tre_mm > trials.predicted_tre95_mm).mean(axis=0)
    assert np.all(np.abs(over - 0.05) < SE_TOLERANCE * binomial_se), over
    known = tre_percentile(trials.expected_tre_mm, n, fle_estimated=False)
    over_known = (trials.tre_mm > known).mean(axis=0)
    assert np.all(np.abs(over_known - 0.05) < SE_TOLERANCE * binomial_se), over_known
    # The RMS is no such bound: a third of trials or more exceed it.
    assert np.all((trials.tre_mm > trials.predicted_tre_mm).mean(axis=0) > 0.3)


def test_expected_tre_on_an_octahedron_matches_the_formula_by_hand() -> None:
    """Six fiducials at +-a on each axis: each principal axis has f_k**2 = 2a**2/3; a
    target at distance d along x is d from the y and z axes, so
    ``TRE**2 = FLE**2/6 * (1 + (1/3) * 2 * d**2 / (2a**2/3)) = FLE**2/6 * (1 + d**2/a**2)``."""
    a, fle = 50.0, 1.5
    fiducials = np.vstack([np.eye(3) * a, -np.eye(3) * a])
    d = np.array([0.0, 25.0, 50.0, 200.0])
    targets = np.column_stack([d, np.zeros(4), np.zeros(4)])
    np.testing.assert_allclose(
        expected_tre(fiducials, targets, fle) ** 2, fle**2 / 6 * (1 + d**2 / a**2), rtol=1e-12
    )


def _line(n: int, jitter_mm: float) -> np.ndarray:
    rng = np.random.default_rng(5)
    along = np.linspace(0.0, 100.0, n)[:, None] * np.array([[0.6, 0.8, 0.0]])
    return along + rng.normal(scale=jitter_mm, size=(n, 3))


_SPREAD = np.array([[0, 0, 0], [80, 0, 0], [0, 60, 0], [0, 0, 70], [40, 40, 40.0]])


@pytest.mark.parametrize(
    ("patient", "room", "input_name", "message"),
    [
        pytest.param(
            _SPREAD[:2],
            _SPREAD[:2],
            "patient_lps_mm",
            r"^patient_lps_mm: 2 point\(s\) given; a rigid registration needs at least 3",
            id="too-few",
        ),
        pytest.param(
            _SPREAD,
            _SPREAD[:4],
            "room_mm",
            r"^patient_lps_mm has 5 points but room_mm has 4: give each landmark once",
            id="mismatched-counts",
        ),
        pytest.param(
            _line(5, 0.05),
            _line(5, 0.05),
            "patient_lps_mm",
            r"^patient_lps_mm: the 5 fiducials lie within 0\.0\d+ mm \(RMS\) of one line, "
            r"below 1 mm, so the rotation about that line is undetermined; pick landmarks",
            id="collinear",
        ),
        pytest.param(
            _SPREAD / 1000,
            _SPREAD / 1000,
            "patient_lps_mm",
            r"in mm, not metres",
            id="metres",
        ),
        pytest.param(
            _SPREAD,
            np.where(np.arange(15).reshape(5, 3) == 7, np.nan, _SPREAD),
            "room_mm",
            r"^room_mm: point 2 is not finite \(\[0\.0, nan, 0\.0\]\); every coordinate must",
            id="nan",
        ),
        pytest.param(
            np.where(np.arange(15).reshape(5, 3) == 0, np.inf, _SPREAD),
            _SPREAD,
            "patient_lps_mm",
            r"^patient_lps_mm: point 0 is not finite \(\[inf",
            id="inf",
        ),
        pytest.param(
            _SPREAD[:, :2],
            _SPREAD,
            "patient_lps_mm",
            r"^patient_lps_mm: expected an \(N, 3\) array of points in mm, got shape \(5, 2\)",
            id="not-3d",
        ),
    ],
)
def test_degenerate_input_is_refused_with_one_clear_line(
    patient: np.ndarray, room: np.ndarray, input_name: str, message: str
) -> None:
    with pytest.raises(RegistrationError, match=message) as caught:
        register_paired_points(patient, room)
    assert caught.value.input_name == input_name
    assert "\n" not in str(caught.value)


def test_degenerate_surface_input_is_refused(knee: trimesh.Trimesh) -> None:
    start = RigidTransform.identity()
    with pytest.raises(RegistrationError, match=r"^surface_room_mm: 5 point\(s\) given"):
        refine_on_surface(knee, knee.vertices[:5], start)
    with pytest.raises(RegistrationError, match=r"lie within .* of one line; collect points"):
        refine_on_surface(knee, _line(20, 0.01), start)
    with pytest.raises(RegistrationError, match=r"^surface refinement needs both") as caught:
        register(_SPREAD, _SPREAD, targets_lps_mm=_SPREAD, mesh=knee)
    assert caught.value.input_name == "surface_room_mm"


def _knee_capsules(truth: dict) -> list[Capsule]:
    return [
        Capsule(tuple(b["segment_start_lps_mm"]), tuple(b["segment_end_lps_mm"]), b["radius_mm"])
        for b in truth["bones"].values()
    ]


def _nudge(
    about: np.ndarray, degrees: float, mm: float, rng: np.random.Generator
) -> RigidTransform:
    """A rotation of ``degrees`` about a random axis through ``about`` and a translation of
    ``mm`` in a random direction: a paired-point registration's typical error."""
    axis = rng.normal(size=3)
    rotation = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(degrees)).as_matrix()
    shift = rng.normal(size=3)
    return RigidTransform(rotation, about - rotation @ about + shift / np.linalg.norm(shift) * mm)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_refinement_recovers_a_perturbation_with_outliers(
    knee: trimesh.Trimesh, truth: dict, targets: np.ndarray, seed: int
) -> None:
    """60 points on the exposed (anterior) side of each bone's *analytic* surface, so the
    model's own meshing error is part of the test; 0.3 mm localisation noise; 20 % of
    points lifted 3-15 mm off the bone; a start 3 degrees and 3 mm off."""
    rng = np.random.default_rng(seed)
    patches = [capsule_patch(c, 60, rng, ANTERIOR) for c in _knee_capsules(truth)]
    points = np.concatenate([p for p, _ in patches])
    normals = np.concatenate([n for _, n in patches])
    touched, outliers = touch_surface(points, normals, rng, noise_mm=0.3, outlier_fraction=0.2)
    room_from_patient = random_transform(rng)
    start = room_from_patient @ _nudge(targets.mean(axis=0), 3.0, 3.0, rng)
    assert start.distances_mm(room_from_patient, targets).max() > 2.0

    refined = refine_on_surface(knee, room_from_patient.apply(touched), start)
    assert refined.converged
    assert refined.room_from_patient.distances_mm(room_from_patient, targets).max() < 0.5
    caught = np.count_nonzero(outliers & ~refined.inliers)
    assert caught >= 0.9 * np.count_nonzero(outliers)
    assert np.count_nonzero(~outliers & ~refined.inliers) <= 0.05 * np.count_nonzero(~outliers)
    assert refined.n_used + refined.n_rejected == len(points)
    assert refined.residual_rms_mm < 0.5  # normal part of the noise + the mesh's error
    assert 0.05 < refined.constraint <= 1.0  # three bones at angles pin every motion

    # Without the rejection the same points pull the fit off by far more.
    pulled = refine_on_surface(
        knee, room_from_patient.apply(touched), start, outlier_k=np.inf, min_cutoff_mm=np.inf
    )
    assert pulled.room_from_patient.distances_mm(room_from_patient, targets).max() > 1.0


def test_register_accepts_a_good_registration_and_reports_it(
    knee: trimesh.Trimesh, truth: dict, targets: np.ndarray
) -> None:
    rng = np.random.default_rng(6)
    fiducials = spread_points(knee.vertices, 6, rng)
    room_from_patient = random_transform(rng)
    patches = [capsule_patch(c, 60, rng, ANTERIOR) for c in _knee_capsules(truth)]
    touched, _ = touch_surface(
        np.concatenate([p for p, _ in patches]),
        np.concatenate([n for _, n in patches]),
        rng,
        noise_mm=0.3,
        outlier_fraction=0.1,
    )
    report = register(
        fiducials,
        localise(room_from_patient.apply(fiducials), 0.5, rng),
        targets_lps_mm=targets,
        fle_mm=0.5,
        mesh=knee,
        surface_room_mm=room_from_patient.apply(touched),
    )
    assert report.check.accepted, report.check.reasons
    assert report.surface is not None and report.surface.converged
    assert report.room_from_patient is report.surface.room_from_patient
    assert not report.fle_estimated and report.fle_mm == 0.5
    assert report.expected_tre_mm.shape == report.tre95_mm.shape == (len(targets),)
    assert np.all(report.tre95_mm > report.expected_tre_mm)
    assert report.room_from_patient.distances_mm(room_from_patient, targets).max() < 0.5
    figures = json.loads(json.dumps(report.as_dict()))  # JSON-ready
    assert figures["accepted"] is True and figures["reasons"] == []
    assert figures["surface"]["points_used"] + figures["surface"]["points_rejected"] == 180
    assert np.asarray(figures["room_from_patient_mm"]).shape == (4, 4)


def test_register_flags_what_is_over_the_limits(knee: trimesh.Trimesh, targets: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    fiducials = spread_points(knee.vertices, 6, rng)
    room_from_patient = random_transform(rng)
    exact = room_from_patient.apply(fiducials)

    noisy = register(fiducials, localise(exact, 4.0, rng), targets_lps_mm=targets, fle_mm=4.0)
    assert not noisy.check.accepted
    assert any(r.startswith("TRE up to") for r in noisy.check.reasons)

    swapped = exact[[0, 1, 3, 2, 4, 5]]  # two landmarks touched in each other's place
    report = register(fiducials, swapped, targets_lps_mm=targets)
    assert not report.check.accepted
    assert any(r.startswith("RMS FRE") for r in report.check.reasons)
    worst = int(np.argmax(report.fiducial_errors_mm))
    assert any(r.startswith(f"fiducial {worst} is") for r in report.check.reasons)

    three = register(fiducials[:3], exact[:3], targets_lps_mm=targets)
    assert three.check.reasons == (
        "only 3 fiducials: the error estimate is unreliable below 4; add a fiducial",
    )
    given = register(fiducials[:3], exact[:3], targets_lps_mm=targets, fle_mm=0.3)
    assert given.check.accepted, given.check.reasons

    strict = register(
        fiducials,
        localise(exact, 1.0, rng),
        targets_lps_mm=targets,
        fle_mm=1.0,
        limits=AccuracyLimits(tre_mm=0.1),
    )
    assert not strict.check.accepted


def test_the_result_places_the_model_as_an_anchor_pose(knee: trimesh.Trimesh) -> None:
    """room_from_patient (mm) -> anchor pose (glTF model frame -> room, metres): a landmark
    in the model frame (glTF metres) lands where it was touched in the room (metres)."""
    rng = np.random.default_rng(8)
    fiducials = spread_points(knee.vertices, 5, rng)
    room_from_patient = random_transform(rng)
    touched_room_m = room_from_patient.apply(fiducials) / 1000.0
    result = register_paired_points(fiducials, room_mm_from_m(touched_room_m))
    position, quaternion = result.room_from_patient.to_anchor_pose()
    assert np.linalg.norm(quaternion) == pytest.approx(1.0)
    model_m = gltf_from_lps(fiducials)
    placed = Rotation.from_quat(quaternion).apply(model_m) + np.asarray(position)
    np.testing.assert_allclose(placed, touched_room_m, atol=1e-9)
    back = RigidTransform.from_anchor_pose(position, quaternion)
    np.testing.assert_allclose(back.matrix, result.room_from_patient.matrix, atol=1e-9)
    np.testing.assert_allclose(
        registration_from_anchor(anchor_from_registration(back.matrix)), back.matrix, atol=1e-9
    )
    with pytest.raises(ValueError, match="must be rigid"):
        anchor_from_registration(np.diag([1000.0, 1000.0, 1000.0, 1.0]))  # a scale slipped in


@pytest.mark.slow
def test_real_ct_model_fre_tre_and_surface_refinement(shared_data: Path) -> None:
    """The same checks on a real CT's bone model (the Philips skull phantom, its
    100k-triangle LOD as a headset would load it): fiducials spread over the skull, FLE
    1 mm; a patch of the skull's top collected with noise and outliers."""
    from holo.meshing.lod import decimate

    skull = decimate(bone_meshes(shared_data / "ct_skull_phantom_philips_bone_1mm")[0], 100_000)
    rng = np.random.default_rng(9)
    fiducials = spread_points(skull.vertices, 6, rng)
    targets = skull.vertices[rng.choice(len(skull.vertices), 8, replace=False)]
    trials = paired_trials(fiducials, targets, 1.0, 1000, rng)
    fre2 = trials.fre_rms_mm**2
    fre2_se = (1 / 3) * np.sqrt(2 * 12) / 6 / np.sqrt(1000)
    assert abs(fre2.mean() - expected_fre(1.0, 6) ** 2) < SE_TOLERANCE * fre2_se
    tre2 = trials.tre_mm**2
    tre2_se = tre2.std(axis=0, ddof=1) / np.sqrt(1000)
    assert np.all(np.abs(tre2.mean(axis=0) - trials.expected_tre_mm**2) < SE_TOLERANCE * tre2_se)

    points, normals = mesh_patch(skull, 200, rng, (0.0, 0.0, 1.0))  # the vertex (superior)
    touched, outliers = touch_surface(points, normals, rng, noise_mm=0.3, outlier_fraction=0.15)
    room_from_patient = random_transform(rng)
    start = room_from_patient @ _nudge(points.mean(axis=0), 2.0, 2.0, rng)
    refined = refine_on_surface(skull, room_from_patient.apply(touched), start)
    assert refined.converged
    assert refined.room_from_patient.distances_mm(room_from_patient, points).max() < 0.5
    assert np.count_nonzero(outliers & ~refined.inliers) >= 0.9 * np.count_nonzero(outliers)
