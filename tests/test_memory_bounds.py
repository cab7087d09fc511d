"""What a long-running server holds stays bounded (benchmarks/soak.py found these growing).

- A shared encoding (:class:`holo.server.encoded.EncodeOnce`) is kept for seconds, not
  until a byte bound fills: video frames of a low-rate track filled 64 MiB in 16 minutes.
- The models' manifests a server keeps are the last ``MAX_MANIFESTS`` used.
- Ephemeral frames form no reference cycles: only full collections free cycles, and the
  server runs those every 15 minutes (:mod:`holo.quietgc`).
- An archived session leaves nothing keyed by its id in the hub, the bus, the video or the
  recordings of the node.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holo.client.session import SessionClient
from holo.client.video import VideoClient
from holo.server import asset_service
from holo.server.asset_service import AssetServicer
from holo.server.encoded import EncodeOnce
from holo.server.video_service import MAX_ENCODED_AGE_S
from holo.session import HubConfig
from holo.session.fanout import EphemeralFrame, Pacer, Subscription
from holo.session.records import EphemeralUpdate, Pose, SceneModel
from holo.session.state import SessionState
from holo.store import ModelRecord, Store
from holo.testing import TestServer

MEDIA = Path(__file__).resolve().parent.parent / "sample_data" / "video"
POSE = Pose((0.1, 1.2, -0.4), (0.0, 0.0, 0.0, 1.0))


class _Shared:
    """Something many streams are sent (weakly referenceable, to see it freed)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


def test_an_encoding_is_forgotten_once_older_than_its_age_bound() -> None:
    now = [0.0]
    encodes: list[_Shared] = []

    def encode(obj: _Shared) -> bytes:
        encodes.append(obj)
        return obj.payload

    cache: EncodeOnce[_Shared, bytes] = EncodeOnce(
        encode, max_items=1 << 20, max_age_s=MAX_ENCODED_AGE_S, clock=lambda: now[0]
    )
    first = _Shared(b"frame 0")
    gone = weakref.ref(first)
    cache(first)
    cache(first)
    assert encodes == [first]  # encoded once however many streams send it
    encodes.clear()
    del first
    # A 30 fps track for a minute: what is kept is the last MAX_ENCODED_AGE_S of it.
    for k in range(1, 30 * 60):
        now[0] = k / 30
        cache(_Shared(b"frame %d" % k))
        assert len(cache) <= 30 * MAX_ENCODED_AGE_S + 1
    assert gone() is None  # the cache no longer holds the first frame alive


def _model(model_id: str) -> ModelRecord:
    lod = {"index": 0, "name": "full", "triangles": 1, "bytes": 1, "complete_at_bytes": 1}
    manifest = {"media_type": "model/gltf-binary", "structures": [], "lods": [lod]}
    return ModelRecord(
        model_id,
        "case-1",
        "std_1",
        "job_1",
        "0" * 64,
        1,
        "bone",
        {**manifest, "bounds_gltf_m": None},
        0,
    )


def test_the_manifests_kept_are_the_last_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asset_service, "MAX_MANIFESTS", 3)
    store = Store(tmp_path)
    try:
        servicer = AssetServicer(store)
        for k in range(10):
            servicer._remember(_model(f"mdl_{k}"))
        servicer._remember(_model("mdl_7"))  # used again: kept longest
        servicer._remember(_model("mdl_10"))
        assert list(servicer._models) == ["mdl_9", "mdl_7", "mdl_10"]
    finally:
        store.close()


def _update(k: int) -> EphemeralUpdate:
    return EphemeralUpdate("p1", "drag", k, SceneModel("mdl_knee", POSE))


def test_ephemeral_frames_form_no_reference_cycles() -> None:
    async def body() -> None:
        pacer = Pacer(0.001)
        fast = Subscription("p2", 64, SessionState, lambda: 0)
        slow = Subscription("p3", 64, SessionState, lambda: 0)  # never reads: frames merge
        pacer.subscribers |= {fast, slow}
        for k in range(50):
            pacer.add(_update(k))
            await asyncio.sleep(0.002)
            item = await fast.next()
            assert isinstance(item, EphemeralFrame) and item.origin is item
        merged = await slow.next()
        assert isinstance(merged, EphemeralFrame) and merged.origin is not merged
        pacer.cancel()

    gc.collect()
    gc.disable()  # every cycle made from here on waits for the census below
    try:
        asyncio.run(body())
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = {type(obj).__name__ for obj in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        gc.collect()
    assert not cyclic & {"EphemeralFrame", "EphemeralUpdate", "SceneModel"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestServer]:
    quick = HubConfig(
        heartbeat_interval_s=0.2,
        away_after_s=0.8,
        remove_after_s=1.6,
        sweep_interval_s=0.1,
        evict_after_s=0.2,
    )
    with TestServer(tmp_path / "data", session=quick, media=MEDIA) as running:
        yield running


def _naming(part: object, session_id: str) -> list[str]:
    """The attributes of ``part`` (dicts and sets) that hold ``session_id``, as key or value."""
    found = []
    for name, value in vars(part).items():
        if isinstance(value, dict):
            held = session_id in value or session_id in value.values()
        elif isinstance(value, set):
            held = session_id in value
        else:
            continue
        if held:
            found.append(f"{type(part).__name__}.{name}")
    return found


def test_an_archived_session_leaves_nothing_behind(server: TestServer) -> None:
    case = "case-archived"

    async def body() -> str:
        presenter = SessionClient(
            server.address, token=server.token("presenter", case), insecure=True
        )
        observer = SessionClient(
            server.address, token=server.token("observer", case), insecure=True
        )
        video = VideoClient(server.address, token=server.token("presenter", case), insecure=True)
        viewer = VideoClient(server.address, token=server.token("observer", case), insecure=True)
        session_id = (await presenter.create_session()).session_id.value
        await presenter.join(session_id)
        await observer.join(session_id)
        track = await video.open_track(
            session_id, "room", "room_camera", file="operative.mp4", loop=True
        )
        frames = 0
        async for item in viewer.watch(track.track_id.value):
            frames += item.kind == "frame"
            if frames == 10:
                break
        for _ in range(30):  # ephemeral values, paced into frames for the observer
            await presenter.head_pose(POSE, t_ns=0)
            await asyncio.sleep(0.01)
        await video.close_track(track.track_id.value)
        await observer.leave()
        await presenter.leave()
        for client in (presenter, observer, video, viewer):
            await client.close()
        return session_id

    running = server.running
    assert running is not None
    gc.collect()
    gc.disable()  # cycles made by the session wait for the census below
    try:
        session_id = asyncio.run(asyncio.wait_for(body(), 60))
        parts: list[Any] = [running.hub, running.bus, running.video, running.recordings]
        archive = server.data / "sessions" / f"{session_id}.jsonl"
        deadline = time.monotonic() + 20  # evicted 0.2 s after the last one left
        while not archive.is_file() or any(_naming(part, session_id) for part in parts):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = {type(obj).__name__ for obj in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        gc.collect()
    assert archive.is_file()
    assert [where for part in parts for where in _naming(part, session_id)] == []
    assert not cyclic & {"EphemeralFrame", "EphemeralUpdate", "Frame"}
