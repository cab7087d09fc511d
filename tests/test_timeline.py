"""The timeline between ephemeral values: interpolation where two values bracket a moment,
the older value held where they do not (a gap, a different model, cancelling rays); and
the fan-out timer's bookkeeping (holo.session.fanout.FanoutTimes).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from holo.client.timeline import SessionTimeline, interpolate
from holo.session.fanout import EphemeralFrame, EventBatch, FanoutTimes
from holo.session.records import EphemeralUpdate, Pose, Ray, SceneModel
from holo.session.state import Event, SessionState

MS = 1_000_000
QUARTER_TURN_Y = (0.0, math.sin(math.pi / 4), 0.0, math.cos(math.pi / 4))  # 90 deg about y


def drag(t_ms: int, x: float, model: str = "mdl_knee") -> EphemeralUpdate:
    return EphemeralUpdate(
        "p1", "drag", t_ms * MS, SceneModel(model, Pose((x, 1.0, -0.5), (0, 0, 0, 1)))
    )


def timeline(*updates: EphemeralUpdate, **kwargs: object) -> SessionTimeline:
    t = SessionTimeline(**{"interpolate": True, **kwargs})  # type: ignore[arg-type]
    for u in updates:
        t.on_ephemeral(u)
    return t


def drag_x(t: SessionTimeline, t_ms: float) -> float:
    value = t.state_at(int(t_ms * MS)).ephemeral[("p1", "drag")].value
    assert isinstance(value, SceneModel)
    return value.anchor_pose.position[0]


def test_a_drag_between_two_values_is_interpolated() -> None:
    t = timeline(drag(0, 0.0), drag(66, 0.66), drag(133, 1.33))
    assert drag_x(t, 33) == pytest.approx(0.33)
    assert drag_x(t, 100) == pytest.approx(1.0)
    assert drag_x(t, 66) == pytest.approx(0.66)  # exactly on a value: that value


def test_after_the_newest_value_and_before_the_first_it_holds() -> None:
    t = timeline(drag(0, 0.0), drag(66, 0.66))
    assert drag_x(t, 500) == pytest.approx(0.66)
    assert ("p1", "drag") not in t.state_at(-1).ephemeral


def test_values_further_apart_than_the_gap_are_held() -> None:
    t = timeline(drag(0, 0.0), drag(400, 4.0))  # a pause of 400 ms > 250 ms
    assert drag_x(t, 200) == 0.0
    assert drag_x(timeline(drag(0, 0.0), drag(400, 4.0), max_gap_ns=500 * MS), 200) == (
        pytest.approx(2.0)
    )


def test_interpolation_is_the_default_and_can_be_turned_off() -> None:
    default = SessionTimeline()
    assert default.interpolate and default.max_gap_ns == 250 * MS  # as the page's and Unity's
    assert drag_x(timeline(drag(0, 0.0), drag(66, 0.66), interpolate=False), 33) == 0.0


def test_a_drag_of_another_model_is_held() -> None:
    t = timeline(drag(0, 0.0), drag(66, 0.66, model="mdl_other"))
    assert drag_x(t, 33) == 0.0


def test_the_interpolated_value_keeps_the_older_time() -> None:
    """A commit between two drag values still wins over the drag until the newer value's
    time, as without interpolation (StateAt.anchor_pose compares the drag's t_ns)."""
    state = SessionState()
    committed = Pose((9.0, 9.0, 9.0), (0, 0, 0, 1))
    state.models["mdl_knee"] = SceneModel("mdl_knee", committed, t_ns=40 * MS)
    t = SessionTimeline(interpolate=True)
    t.reset(state, 0)
    t.on_ephemeral(drag(0, 0.0))
    t.on_ephemeral(drag(66, 0.66))
    at = t.state_at(50 * MS)
    assert at.ephemeral[("p1", "drag")].t_ns == 0
    assert at.anchor_pose("mdl_knee") == committed
    later = t.state_at(70 * MS).anchor_pose("mdl_knee")  # past the newer drag value
    assert later is not None and later.position[0] == pytest.approx(0.66)


def test_rotation_takes_the_short_way_and_stays_unit() -> None:
    a = Pose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    b = Pose((0.0, 0.0, 0.0), QUARTER_TURN_Y)
    flipped = Pose((0.0, 0.0, 0.0), tuple(-v for v in QUARTER_TURN_Y))  # type: ignore[arg-type]
    half = interpolate(a, b, 0.5)
    assert isinstance(half, Pose)
    assert math.sqrt(sum(v * v for v in half.rotation)) == pytest.approx(1.0)
    angle = 2 * math.degrees(math.acos(half.rotation[3]))
    assert angle == pytest.approx(45.0)  # nlerp of a 90 deg turn halves it exactly
    same = interpolate(a, flipped, 0.5)
    assert isinstance(same, Pose)
    assert same.rotation == pytest.approx(half.rotation)  # -q is q: not the long way round


def test_rays_interpolate_and_cancelling_directions_are_held() -> None:
    a = Ray((0.0, 1.6, 0.0), (0.0, 0.0, -1.0))
    b = Ray((0.2, 1.6, 0.0), (1.0, 0.0, -1.0))
    mid = interpolate(a, b, 0.5)
    assert isinstance(mid, Ray)
    assert mid.origin == pytest.approx((0.1, 1.6, 0.0))
    assert mid.direction == pytest.approx((0.5, 0.0, -1.0))
    assert interpolate(a, Ray((0.0, 1.6, 0.0), (0.0, 0.0, 1.0)), 0.5) is a
    assert interpolate(a, None, 0.5) is a  # kinds that do not interpolate: held


def test_head_pose_and_pointer_channels_interpolate_in_state_at() -> None:
    t = timeline(
        EphemeralUpdate("p2", "head_pose", 0, Pose((0.0, 1.6, 0.0), (0, 0, 0, 1))),
        EphemeralUpdate("p2", "head_pose", 100 * MS, Pose((1.0, 1.6, 0.0), (0, 0, 0, 1))),
    )
    value = t.state_at(25 * MS).ephemeral[("p2", "head_pose")].value
    assert isinstance(value, Pose)
    assert value.position == pytest.approx((0.25, 1.6, 0.0))


def test_fanout_times_the_last_subscriber_write(tmp_path: Path) -> None:
    out = tmp_path / "fanout.txt"
    times = FanoutTimes(str(out), settle_s=0.0)
    event = Event(1, 0, "p1", "annotation_removed", "a1")
    frame = EphemeralFrame([drag(0, 0.0)])
    newer = EphemeralFrame([drag(16, 0.16)])
    times.accepted(event, "event")
    times.accepted(frame, "frame")
    times.accepted(newer, "frame")
    times.written(EventBatch([event]))
    times.written(EventBatch([event]))  # a second subscriber
    times.written(frame.merged(newer))  # a slow subscriber: counts for the newer frame
    times._flush(2**62)
    lines = sorted(line.split()[0] for line in out.read_text().splitlines())
    assert lines == ["event", "frame"]  # the frame nobody wrote in full is not timed
    assert all(float(line.split()[2]) >= 0 for line in out.read_text().splitlines())
