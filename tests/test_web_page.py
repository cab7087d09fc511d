"""The web page in a real browser against a real server: Debian's Chromium, driven by
playwright-core (holo/testing/browser.py), on ``holo serve --web`` over TLS with a test CA.

The study behind the model is the project's sample knee, uploaded and converted through
the server: it carries the sample generator's identity (name, id, hospital...), which is
the canary no observer or expert page may ever show or receive.
"""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image
from redis_server import RedisServer
from tls import TestPKI
from webpage import HOME, Loop, link, open_page, wait_full_model

from holo.auth import load_secret, mint_token
from holo.client.session import SessionClient
from holo.client.video import VideoClient
from holo.session.records import Pose
from holo.testing import ServeProcess, TestServer
from holo.testing.browser import Browser, Page
from holo.testing.probe import sync_errors
from holo.testing.testcard import read_test_card
from holo.v1 import common_pb2, session_pb2

BACKGROUND = (0x14, 0x1B, 0x24)  # holo/web/src/scene.js BACKGROUND
VOXEL_MM = 0.8  # the sample knee's finest spacing (sample_data/truth.json)
SAMPLE_FRAMES = 300  # operative.mp4: 10 s at 30 fps, its frame number burned in
EVERY = 10  # the scripted presenter moves the hologram at every 10th frame


def drawn_pixels(page: Page, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Mask of the canvas pixels that are not background, and the canvas' top-left."""
    page.screenshot(path)
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    left, top, width, height = page.eval(
        "(() => { const r = document.querySelector('#scene').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height].map(Math.round); })()"
    )
    canvas = image[top : top + height, left : left + width]
    mask = np.abs(canvas - np.array(BACKGROUND)).max(axis=2) > 24
    return mask, (left, top)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.mean()), float(rows.mean())


def canary_strings(sample_generator: Any) -> list[str]:
    identity = sample_generator.IDENTITY
    keys = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName")
    keys += ("InstitutionAddress", "ReferringPhysicianName", "OperatorsName", "DeviceSerialNumber")
    values = [identity[k] for k in keys]
    return values + [v.replace("^", " ") for v in values if "^" in v]


def test_an_observer_sees_the_model_and_follows_the_presenter(
    browser: Browser, server: TestServer, presenter: Any, knee_model: str, loop: Loop,
    tmp_path: Path, sample_generator: Any,
) -> None:  # fmt: skip
    page = open_page(browser, server, "observer", "observer-1")
    wait_full_model(page, knee_model)
    lods = page.eval("window.holo.lods.map(l => l.index)")
    assert lods == [0, 1, 2], "coarse first, each finer level replacing the one before"
    mask, _ = drawn_pixels(page, tmp_path / "before.png")
    assert mask.mean() > 0.01, "the model is not drawn"
    before = centroid(mask)

    moved = Pose((0.03, 1.2, 0.0), (0.0, 0.0, 0.0, 1.0))  # 3 cm to the patient's left (+x)
    loop.run(presenter.commit_anchor(knee_model, moved))
    page.wait_for(
        f"Math.abs(window.holo.conn.state.models.get({knee_model!r}).anchorPose.position[0]"
        " - 0.03) < 1e-9",
        10,
        "the committed anchor",
    )
    time.sleep(0.3)
    mask, _ = drawn_pixels(page, tmp_path / "after.png")
    after = centroid(mask)
    assert after[0] - before[0] > 20, f"the model did not move right on screen: {before} -> {after}"
    assert abs(after[1] - before[1]) < 10
    loop.run(presenter.commit_anchor(knee_model, HOME))

    # People and roles are shown in words, and nothing identifies the patient.
    content = page.content()
    assert "Dr Presenter" in content["text"] and "Presenter" in content["text"]
    assert "Observer" in content["text"]
    canaries = canary_strings(sample_generator)
    for canary in canaries:
        assert canary not in content["html"], f"{canary!r} is in the observer's DOM"
    leaked = [c for c, found in page.traffic_contains(*canaries).items() if found]
    assert leaked == [], f"patient identity reached the observer's page: {leaked}"
    assert page.problems() == []
    page.close()


def test_an_observer_page_is_read_only(
    browser: Browser, server: TestServer, presenter: Any, knee_model: str
) -> None:
    page = open_page(browser, server, "observer", "observer-2")
    assert page.eval("document.querySelector('#tools').hidden") is True
    visible_buttons = page.eval(
        "[...document.querySelectorAll('button')].filter(b => b.offsetParent !== null).length"
    )
    assert visible_buttons == 0
    # An intent forged from the console, with the page's own token, is refused.
    request = session_pb2.AddAnnotationRequest(
        session_id=common_pb2.SessionId(value=presenter.session_id),
        participant_id=common_pb2.ParticipantId(value=page.eval("window.holo.conn.participantId")),
        intent_id="forged-1",
        annotation=session_pb2.Annotation(
            annotation_id="forged", model_id=common_pb2.ModelId(value=knee_model)
        ),
    )
    request.annotation.marker.position.x = 0.01
    status = page.call(
        """async (body) => {
            const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
            const framed = new Uint8Array(5 + bytes.length);
            new DataView(framed.buffer).setUint32(1, bytes.length);
            framed.set(bytes, 5);
            const reply = await fetch("/holo.v1.SessionService/AddAnnotation", {
              method: "POST",
              headers: {
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                authorization: "Bearer " + sessionStorage.getItem("holo.token"),
              },
              body: framed,
            });
            const text = new TextDecoder().decode(await reply.arrayBuffer());
            return {
              header: reply.headers.get("grpc-status"),
              message: reply.headers.get("grpc-message"),
              body: text,
            };
        }""",
        base64.b64encode(request.SerializeToString()).decode(),
    )
    code = status["header"] or status["body"].split("grpc-status:")[1].split()[0]
    assert code == "7", status  # PERMISSION_DENIED
    assert "observer" in (status["message"] or status["body"])
    assert page.eval("window.holo.conn.state.annotations.size") == 0
    page.close()


def test_an_expert_marks_the_bone_where_they_click(
    browser: Browser, server: TestServer, pki: TestPKI, presenter: Any, knee_model: str,
    loop: Loop, tmp_path: Path,
) -> None:  # fmt: skip
    page = open_page(browser, server, "expert", "expert-1")
    wait_full_model(page, knee_model)
    assert page.eval("document.querySelector('#tools').hidden") is False
    mask, (left, top) = drawn_pixels(page, tmp_path / "expert.png")
    # A pixel on the bone: the drawn pixel nearest the drawing's centroid.
    rows, cols = np.nonzero(mask)
    cx, cy = centroid(mask)
    nearest = int(np.argmin((cols - cx) ** 2 + (rows - cy) ** 2))
    x, y = left + int(cols[nearest]) + 0.5, top + int(rows[nearest]) + 0.5

    seen: list[Any] = []
    watcher = SessionClient(
        server.address,
        token=server.token("observer", subject="py-observer"),
        ca=pki.ca_pem,
        on_event=seen.append,
    )
    loop.run(watcher.join(presenter.session_id))
    page.click("[data-mode=marker]")
    page.mouse("click", x, y)
    deadline = time.monotonic() + 10
    while not any(e.kind == "annotation_added" for e in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a second marker, were one made, would be in by now
    added = [e for e in seen if e.kind == "annotation_added"]
    assert len(added) == 1, f"one click, {len(added)} markers"
    marker = added[-1].data
    assert marker.shape == "marker" and marker.model_id == knee_model
    assert marker.author == page.eval("window.holo.conn.participantId")
    # Where the click's ray meets the bone, computed here from the camera and the mesh.
    origin, direction = page.call(
        """([x, y]) => {
            const { ray } = window.holo.viewer.rayAt(x, y);
            return [ray.origin.toArray(), ray.direction.toArray()];
        }""",
        [x, y],
    )
    with server.client("observer", ca=pki.ca_pem) as client:
        glb = client.fetch_model(knee_model).data
    truth = surface_hit(glb, np.subtract(origin, HOME.position), np.asarray(direction))
    error_mm = 1000 * math.dist(marker.points[0], truth)
    assert error_mm < VOXEL_MM, f"the marker is {error_mm:.3f} mm from the bone under the click"
    # The pages show it with its author's name.
    page.wait_for("document.querySelector('#annotations').textContent.includes('Marker by')", 10)
    assert page.problems() == []
    loop.run(watcher.close())
    loop.run(presenter.remove_annotation(marker.annotation_id))
    page.close()


def surface_hit(glb: bytes, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The first point where a ray (model frame, metres) meets the GLB's default scene
    (the full-detail level)."""
    scene = trimesh.load(trimesh.util.wrap_as_stream(glb), file_type="glb", force="scene")
    triangles = scene.to_geometry().triangles  # (n, 3, 3), model frame
    # Moller-Trumbore against every triangle at once (38k: a few ms in numpy).
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-15
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    t_vec = origin - a
    u = np.einsum("ij,ij->i", t_vec, p) * inv
    q = np.cross(t_vec, e1)
    v = (q @ direction) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    assert hit.any(), "the ray misses the mesh"
    return np.asarray(origin + t[hit].min() * direction)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_page_resumes_after_its_server_restarts(
    browser: Browser, tmp_path: Path, sample_ct: Path, loop: Loop
) -> None:
    """Node A serves the page; it is killed while the presenter (failing over to node B of
    the same Redis bus) keeps annotating; A comes back on the same ports. The page rejoins
    as the same participant from its last seq: every event once, in order, none lost."""
    secret_dir = tmp_path / "secret"
    load_secret(secret_dir)
    secret = secret_dir / "secret.key"
    with RedisServer() as url:
        web_port, port = free_port(), free_port()
        options = ("--web", f"127.0.0.1:{web_port}")
        node_a = ServeProcess(tmp_path / "a", bus=url, secret=secret, port=port, options=options)
        node_b = ServeProcess(tmp_path / "b", bus=url, secret=secret)
        try:
            with node_a.client("radiologist", "case-r") as radiologist:
                study = radiologist.upload_study([sample_ct])
                job = radiologist.start_conversion(study.study_id.value)
                model = radiologist.wait_job(job.job_id.value).model_id.value
            key = load_secret(secret_dir)
            token = mint_token(key, role="presenter", case_id="case-r", subject="p", ttl_s=600)
            presenter = SessionClient([node_a.address, node_b.address], token=token, insecure=True)

            async def start() -> None:
                info = await presenter.create_session()
                await presenter.join(info.session_id.value)
                await presenter.load_model(model, HOME)

            loop.run(start())
            observer = mint_token(key, role="observer", case_id="case-r", subject="o", ttl_s=600)
            page = browser.page("restart", f"{node_a.web_url}#token={observer}")
            page.wait_for("window.holo?.conn?.accepted", 30, "joined")

            async def mark(count: int, start: int) -> None:
                for k in range(start, start + count):
                    await presenter.add_marker(f"m-{k}", model, (0.001 * k, 0.0, 0.0))

            loop.run(mark(3, 0))
            seq = presenter.state.seq
            page.wait_for(f"window.holo.conn.state.seq === {seq}", 10, "the first markers")
            node_a.kill()
            loop.run(mark(5, 3))  # through node B while A is down
            loop.run(presenter.add_label("l-1", model, (0.0, 0.01, 0.0), "osteotomy here"))
            page.wait_for("window.holo.conn.reconnects > 0", 10, "a lost connection noticed")
            node_a = ServeProcess(
                tmp_path / "a", bus=url, secret=secret, port=port, options=options
            )
            seq = presenter.state.seq
            page.wait_for(f"window.holo.conn.state.seq === {seq}", 30, "every event after rejoin")
            applied = page.eval("window.holo.conn.applied")
            assert applied == list(range(applied[0], seq + 1)), applied
            assert page.eval("window.holo.conn.state.annotations.size") == 9
            assert "osteotomy here" in page.content()["text"]
            assert page.eval("document.querySelector('#status').textContent") == "Connected"
            logs = page.logs()
            assert logs["errors"] == [] and logs["csp"] == []
            page.close()
            loop.run(presenter.close())
        finally:
            for node in (node_a, node_b):
                if node.process.poll() is None:
                    node.stop()


def test_a_radiologist_uploads_converts_and_inspects_a_study(
    browser: Browser, server: TestServer, sample_ct: Path, sample_generator: Any, tmp_path: Path
) -> None:
    page = browser.page("radiologist", link(server, "radiologist", "radiologist-1"))
    page.wait_for("document.querySelector('#status').textContent.startsWith('Ready')", 30)
    assert page.eval("document.querySelector('#session').hidden") is True
    page.set_files("#folder", [str(sample_ct)])
    page.wait_for("!document.querySelector('#convert').disabled", 120, "the study uploaded")
    uploaded = page.eval("window.holo.prepare.uploaded")
    assert uploaded == sum(f.stat().st_size for f in sample_ct.iterdir())
    assert "series" in page.eval("document.querySelector('#study').textContent")
    page.click("#convert")
    page.wait_for("window.holo.modelsShown.size > 0", 180, "the converted model shown")
    page.wait_for("document.querySelector('#thumbs img')", 60, "thumbnails")
    model_id = page.eval("[...window.holo.modelsShown.keys()][0]")
    # The LOD table shows each level's triangles and bytes, as the manifest has them.
    table = page.eval(
        "[...document.querySelectorAll('#lods tr')].slice(1)"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [row[0] for row in table] == ["lod0", "lod1", "lod2"]
    assert all(int(row[1].replace(",", "")) > 0 for row in table)
    assert page.eval("document.querySelectorAll('#thumbs img').length") == 3
    assert model_id in page.eval("window.holo.prepare.models")
    mask, _ = drawn_pixels(page, tmp_path / "radiologist.png")
    assert mask.mean() > 0.01, "the model is not drawn"
    html = page.content()["html"]
    for canary in canary_strings(sample_generator):
        assert canary not in html, f"{canary!r} is shown on the radiologist's page"
    assert page.problems() == []
    page.close()


def sample_sync(
    page: Page, model_id: str, commits: dict[int, Pose], folder: Path, samples: int
) -> list[int | None]:
    """Hold the page's picture still ``samples`` times; each time read the frame number
    off the video on screen and the hologram pose drawn beside it; their sync errors."""
    rendered: list[tuple[int, int, Pose | None]] = []
    for sample in range(samples):
        time.sleep(0.25)
        page.eval("window.holo.video.view.frozen = true")
        page.wait_for("!window.holo.viewer.pending", 5)
        time.sleep(0.1)  # the animation frame that drew both is on screen
        shot = np.asarray(Image.open(page.screenshot(folder / f"v{sample}.png")))
        left, top, width, height = page.eval(
            "(() => { const r = document.querySelector('#video').getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height].map(Math.round); })()"
        )
        picture = shot[top : top + height, left : left + width, :3]
        number = read_test_card(np.ascontiguousarray(picture))
        hologram, _ = drawn_pixels(page, folder / f"h{sample}.png")
        assert hologram.mean() > 0.005, "the hologram is not drawn beside the video"
        current = page.eval("window.holo.video.current")
        drawn = page.call("(id) => window.holo.viewer.anchorPose(id).position", model_id)
        pose = Pose(tuple(drawn), (0.0, 0.0, 0.0, 1.0))  # type: ignore[arg-type]
        rendered.append((current["index"], number, pose))
        page.eval("window.holo.video.view.frozen = false")
    return sync_errors(rendered, commits, frames_per_loop=SAMPLE_FRAMES)


def pose_for(index: int) -> Pose:
    """The anchor pose the scripted presenter commits at frame ``index`` (distinct each)."""
    return Pose((index / 10_000, 1.2, 0.0), (0.0, 0.0, 0.0, 1.0))  # 0.1 mm a frame


def test_video_and_holograms_in_sync_live_and_replayed(
    browser: Browser, server: TestServer, pki: TestPKI, presenter: Any, knee_model: str,
    loop: Loop, tmp_path: Path,
) -> None:  # fmt: skip
    """The presenter records while playing the sample video (its frame number burned into
    each picture) and commits a new anchor pose at every 10th frame, stamped with that
    frame's time. On the page, the number read off the picture on screen and the pose of
    the hologram drawn with it must belong to the same frame: sync error 0 frames, live and
    in the replay of the recording, after a pause, a seek and a change of speed."""

    async def make() -> VideoClient:  # its channel belongs to the loop it is made in
        return VideoClient(server.address, token=server.token("presenter"), ca=pki.ca_pem)

    video = loop.run(make())
    clock = video.clock()
    commits: dict[int, Pose] = {}
    stop = asyncio.Event()

    async def script(track_id: str) -> None:
        async for item in video.watch(track_id):
            frame = item.frame
            if item.kind != "frame" or frame is None:
                continue
            if frame.index % EVERY == 0 and clock.now() - frame.t_ns < 500_000_000:
                await presenter.commit_anchor(knee_model, pose_for(frame.index), t_ns=frame.t_ns)
                commits[frame.index] = pose_for(frame.index)
            if stop.is_set():
                return

    async def start() -> tuple[str, asyncio.Task[None]]:
        await clock.sync_many(8)
        await video.start_recording(presenter.session_id)
        track = await video.open_track(
            presenter.session_id, "endoscope", "endoscope", file="operative.mp4", loop=True
        )
        return track.track_id.value, asyncio.create_task(script(track.track_id.value))

    track_id, scripted = loop.run(start())
    page = open_page(browser, server, "observer", "video-observer")
    try:
        page.wait_for("window.holo.video?.current?.exact", 30, "a video frame shown")
        page.wait_for(f"window.holo.modelsShown.get({knee_model!r}) >= 0", 30)
        errors = sample_sync(page, knee_model, commits, tmp_path, 12)
        assert len(errors) >= 8, f"only {len(errors)} samples after the first commit"
        assert all(e == 0 for e in errors), f"sync errors in frames: {errors}"
        assert page.problems() == []
    finally:
        stop.set()
        loop.run(asyncio.wait_for(scripted, 10))
        recording = loop.run(video.stop_recording(presenter.session_id))
        loop.run(video.close_track(track_id))
        loop.run(video.close())
        loop.run(presenter.commit_anchor(knee_model, HOME))
        page.close()
    check_replay(browser, server, recording.recording_id.value, knee_model, commits, tmp_path)


def check_replay(
    browser: Browser, server: TestServer, recording_id: str, model_id: str,
    commits: dict[int, Pose], folder: Path,
) -> None:  # fmt: skip
    token = server.token("observer", subject="replay-viewer")
    page = browser.page("replay", f"{server.web_url}#token={token}&replay={recording_id}")
    page.wait_for("window.holo.video?.current?.exact", 30, "a replayed frame shown")
    assert page.eval("document.querySelector('#replay-pane').hidden") is False
    assert page.eval("document.querySelector('#tools').hidden") is True  # read-only
    errors = sample_sync(page, model_id, commits, folder, 6)
    assert errors and all(e == 0 for e in errors), f"replay sync errors: {errors}"

    page.click("#replay-play")  # pause
    page.wait_for("window.holo.replay.info.speed === 0", 10, "paused")
    time.sleep(0.6)  # frames already in the jitter buffer may still show
    held = page.eval("window.holo.video.current.index")
    time.sleep(1.0)
    assert page.eval("window.holo.video.current.index") == held, "frames moved while paused"

    page.call(
        """(ms) => { const s = document.querySelector('#replay-seek');
            s.value = String(ms); s.dispatchEvent(new Event('change')); }""",
        1000,
    )
    page.click("#replay-play")  # resume at once: the page runs controls in the order asked
    page.wait_for("window.holo.replay.info.speed === 1", 10, "playing")
    start = page.eval("String(window.holo.replay.info.startedTNs)")
    page.wait_for(
        f"window.holo.video.current && BigInt(window.holo.video.current.tNs) - {start}n"
        " < 2500000000n",
        10,
        "a frame from after the seek point",
    )
    errors = sample_sync(page, model_id, commits, folder, 4)
    assert errors and all(e == 0 for e in errors), f"sync errors after the seek: {errors}"

    page.eval(
        "(() => { const s = document.querySelector('#replay-speed');"
        " s.value = '2'; s.dispatchEvent(new Event('change')); })()"
    )
    page.wait_for("window.holo.replay.info.speed === 2", 10, "double speed")
    assert page.eval("window.holo.video.view.clock.rate") == 2
    errors = sample_sync(page, model_id, commits, folder, 4)
    assert errors and all(e == 0 for e in errors), f"sync errors at 2x: {errors}"
    assert page.problems() == []
    page.close()


def test_an_expert_in_control_moves_the_model(
    browser: Browser, server: TestServer, pki: TestPKI, presenter: Any, knee_model: str,
    loop: Loop,
) -> None:  # fmt: skip
    """The expert asks for control, the presenter grants it, the expert moves the model
    with the keyboard: every participant sees the new anchor, committed by the expert."""
    page = open_page(browser, server, "expert", "expert-mover")
    wait_full_model(page, knee_model)
    assert page.eval("document.querySelector('#move').hidden") is True
    page.click("#request-control")
    expert_id = page.eval("window.holo.conn.participantId")
    deadline = time.monotonic() + 10
    while expert_id not in presenter.state.control_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert expert_id in presenter.state.control_requests
    page.wait_for("document.querySelector('#request-control').disabled", 5, "asked")
    loop.run(presenter.grant_control(expert_id))
    page.wait_for("!document.querySelector('#move').hidden", 10, "the move tool offered")
    page.click("#move")
    before = presenter.state.models[knee_model].anchor_pose.position
    page.press("#scene", "ArrowRight")
    page.press("#scene", "Shift+ArrowUp")
    expected = (before[0] + 0.005, before[1], before[2] - 0.05)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = presenter.state.models[knee_model].anchor_pose.position
        if math.dist(now, expected) < 1e-9:
            break
        time.sleep(0.05)
    assert math.dist(presenter.state.models[knee_model].anchor_pose.position, expected) < 1e-9
    assert page.problems() == []
    loop.run(presenter.revoke_control(expert_id))
    page.wait_for("document.querySelector('#move').hidden", 10, "the move tool withdrawn")
    loop.run(presenter.commit_anchor(knee_model, HOME))
    page.close()


def test_an_xray_panel_is_shown_at_its_physical_size(
    browser: Browser, server: TestServer, pki: TestPKI, sample_dx: Path, loop: Loop,
    sample_generator: Any, tmp_path: Path,
) -> None:  # fmt: skip
    with server.client("radiologist", "case-dx", ca=pki.ca_pem) as radiologist:
        study = radiologist.upload_study([sample_dx])
        job = radiologist.wait_job(radiologist.start_conversion(study.study_id.value).job_id.value)
    panel = job.model_id.value
    assert panel, job.message
    presenter = SessionClient(
        server.address, token=server.token("presenter", "case-dx"), ca=pki.ca_pem
    )

    async def start() -> None:
        info = await presenter.create_session()
        await presenter.join(info.session_id.value)
        await presenter.load_model(panel, HOME)

    loop.run(start())
    token = server.token("observer", "case-dx", subject="dx-observer")
    page = browser.page("dx", f"{server.web_url}#token={token}")
    page.wait_for(f"window.holo.modelsShown.get({panel!r}) >= 0", 30, "the panel shown")
    time.sleep(0.3)
    width, height, depth = page.call("(id) => window.holo.viewer.sizeOf(id)", panel)
    g = sample_generator
    assert abs(width - g.DX_COLUMNS * g.DX_PIXEL_SPACING_MM / 1000) < 0.0005
    assert abs(height - g.DX_ROWS * g.DX_PIXEL_SPACING_MM / 1000) < 0.0005
    assert depth < 0.0005
    mask, (left, top) = drawn_pixels(page, tmp_path / "dx.png")
    assert mask.mean() > 0.01, "the panel is not drawn"
    shot = np.asarray(Image.open(tmp_path / "dx.png").convert("L")).astype(float)
    inside = shot[top : top + mask.shape[0], left : left + mask.shape[1]][mask]
    assert inside.std() > 20, "the panel shows no picture (one flat colour)"
    assert page.problems() == []
    page.close()
    loop.run(presenter.close())
