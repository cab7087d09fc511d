"""Make docs/web-page.png, the README's picture of the web page (``make screenshot``).

A real server with the sample knee converted, a presenter who loaded it and looks at it,
an expert who points and placed a marker and a label, and the expert's page photographed
in Debian's Chromium. Nothing here is a mock-up: it is the page as it runs.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
from tls import make_pki  # noqa: E402

from holo.client.session import SessionClient  # noqa: E402
from holo.session.records import Pose, Ray  # noqa: E402
from holo.testing import TestServer  # noqa: E402
from holo.testing.browser import Browser  # noqa: E402

OUT = REPO / "docs" / "web-page.png"


def look_at(eye: np.ndarray, target: np.ndarray) -> tuple[float, float, float, float]:
    """The rotation (x, y, z, w) of a camera at ``eye`` looking at ``target`` (-Z forward,
    +Y up), as a headset's head pose is."""
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.column_stack([right, up, back])
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    return (
        (m[2, 1] - m[1, 2]) / (4 * w),
        (m[0, 2] - m[2, 0]) / (4 * w),
        (m[1, 0] - m[0, 1]) / (4 * w),
        w,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        pki = make_pki(Path(folder) / "pki")
        with TestServer(Path(folder) / "store", tls=(pki.cert, pki.key), web=True) as server:
            with server.client("radiologist", "knee-42", ca=pki.ca_pem) as radiologist:
                study = radiologist.upload_study([REPO / "sample_data" / "knee_ct"])
                job = radiologist.start_conversion(study.study_id.value)
                model = radiologist.wait_job(job.job_id.value).model_id.value
            loop = asyncio.new_event_loop()
            presenter = SessionClient(
                server.address,
                token=server.token("presenter", "knee-42", subject="presenter"),
                ca=pki.ca_pem,
                display_name="Dr Okafor, theatre 3",
            )
            colleague = SessionClient(
                server.address,
                token=server.token("expert", "knee-42", subject="colleague"),
                ca=pki.ca_pem,
                display_name="Dr Lindqvist, Uppsala",
            )

            # The knee's middle in the room: its glTF centre (sample_data/truth.json, femur
            # centroid) under an anchor 1.2 m up.
            centre = np.array([-0.093, 0.642, -0.026])
            surface = np.array([-0.0925, -0.5846, 0.0095])  # a point on the bone (model frame)

            async def scene() -> None:
                info = await presenter.create_session()
                await presenter.join(info.session_id.value)
                await presenter.load_model(model, Pose((0.0, 1.2, 0.0), (0.0, 0.0, 0.0, 1.0)))
                await colleague.join(info.session_id.value)
                await colleague.add_label("l-1", model, tuple(surface), "joint line")

            async def gestures() -> None:  # ephemeral: sent while the page is there
                origin = centre + np.array([-0.12, 0.06, 0.12])
                target = surface + np.array([0.0, 1.2, 0.0])
                direction = (target - origin) / np.linalg.norm(target - origin)
                await colleague.pointer(Ray(tuple(origin), tuple(direction)))  # type: ignore[arg-type]
                head = centre + np.array([0.09, 0.05, 0.16])
                await presenter.head_pose(Pose(tuple(head), look_at(head, centre)))  # type: ignore[arg-type]

            loop.run_until_complete(scene())
            with Browser(trust=(pki.cert.read_bytes(),)) as browser:
                token = server.token("expert", "knee-42", subject="expert")
                page = browser.page("expert", f"{server.web_url}#token={token}", width=1280)
                page.wait_for(f"window.holo.modelsShown.get({model!r}) === 2", 60)
                loop.run_until_complete(gestures())
                page.click("[data-mode=marker]")
                x, y = page.call(
                    "(id) => window.holo.viewer.screenOf(id, [-0.085, -0.62, 0.012])", model
                )
                page.mouse("click", x, y)
                page.wait_for("window.holo.conn.state.annotations.size === 2", 10)
                page.click("[data-mode=marker]")  # back to viewing
                time.sleep(0.5)
                page.screenshot(OUT)
            loop.run_until_complete(presenter.close())
            loop.run_until_complete(colleague.close())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
