"""The relay on its own (holo.video.relay): keyframe starts, bounded viewers and GOPs."""

from __future__ import annotations

import asyncio
from fractions import Fraction

from holo.video.frames import CodecParams, Frame
from holo.video.relay import Skipped, Track, ViewerLimits

PARAMS = CodecParams("h264", 64, 48, b"", Fraction(1, 30))


def frame(index: int, keyframe: bool, size: int = 100) -> Frame:
    return Frame(index, index * 33_000_000, index, index, 1, keyframe, bytes(size))


def test_late_viewer_starts_at_the_latest_keyframe() -> None:
    async def body() -> None:
        track = Track("trk-1", "ses-1", "scope", "endoscope", PARAMS)
        for i in range(45):
            track.publish(frame(i, i % 30 == 0))
        viewer = track.watch()
        first = await viewer.next()
        assert isinstance(first, Frame) and first.index == 30 and first.keyframe
        track.end("done")
        rest = [await viewer.next() for _ in range(14)]
        assert [f.index for f in rest if isinstance(f, Frame)] == list(range(31, 45))
        assert await viewer.next() is None  # drained, then the end

    asyncio.run(body())


def test_a_gop_longer_than_a_viewer_may_queue_is_not_kept() -> None:
    """One keyframe then P-frames for ever (or an encoder with a long GOP): the track
    holds at most the viewer limit, and a new viewer starts at the next keyframe."""

    async def body() -> None:
        limits = ViewerLimits(max_frames=20, max_bytes=1 << 20)
        track = Track("trk-1", "ses-1", "scope", "endoscope", PARAMS, limits=limits)
        for i in range(500):
            track.publish(frame(i, i == 0, size=1000))
        assert len(track._gop) <= limits.max_frames
        viewer = track.watch()
        track.publish(frame(500, False))
        track.publish(frame(501, True))
        first = await viewer.next()
        assert isinstance(first, Frame) and first.index == 501

    asyncio.run(body())


def test_a_viewer_that_falls_behind_skips_to_the_next_keyframe() -> None:
    async def body() -> None:
        limits = ViewerLimits(max_frames=20, max_bytes=1 << 20)
        track = Track("trk-1", "ses-1", "scope", "endoscope", PARAMS, limits=limits)
        track.publish(frame(0, True))
        slow, healthy = track.watch(), track.watch()
        first = await healthy.next()
        assert isinstance(first, Frame) and first.index == 0
        got: list[int] = []
        for i in range(1, 40):
            track.publish(frame(i, i % 15 == 0))
            item = await healthy.next()
            assert isinstance(item, Frame)
            got.append(item.index)
        assert got == list(range(1, 40))  # the healthy one is unaffected
        items = []
        track.end("done")
        while (item := await slow.next()) is not None:
            items.append(item)
        # 0-19 queued, then too far behind: 20-29 skipped, 30 (a keyframe) on.
        assert isinstance(items[0], Skipped) and (items[0].first_index, items[0].next_index) == (
            0,
            30,
        )
        assert [f.index for f in items[1:] if isinstance(f, Frame)] == list(range(30, 40))
        assert slow.skips == 1
        for k, item in enumerate(items):
            if isinstance(item, Skipped) and k + 1 < len(items):
                after = items[k + 1]
                assert isinstance(after, Frame) and after.keyframe
                assert after.index == item.next_index
        assert slow.queued_bytes <= limits.max_bytes

    asyncio.run(body())


def test_an_ended_track_tells_its_callbacks_once() -> None:
    async def body() -> None:
        track = Track("trk-1", "ses-1", "scope", "endoscope", PARAMS)
        ended: list[str] = []
        track.on_end.append(lambda t: ended.append(t.ended_reason))
        track.end("closed")
        track.end("again")
        assert ended == ["closed"] and not track.live

    asyncio.run(body())


def test_a_viewer_joining_on_a_long_kept_gop_does_not_overflow_at_once() -> None:
    async def body() -> None:
        limits = ViewerLimits(max_frames=20, max_bytes=1 << 20)
        track = Track("trk-1", "ses-1", "scope", "endoscope", PARAMS, limits=limits)
        for i in range(19):
            track.publish(frame(i, i == 0))
        viewer = track.watch()
        track.publish(frame(19, False))  # the viewer holds 20 now, within its limit
        track.end("done")
        got = []
        while (item := await viewer.next()) is not None:
            got.append(item)
        assert [f.index for f in got if isinstance(f, Frame)] == list(range(20))
        assert viewer.skips == 0

    asyncio.run(body())
