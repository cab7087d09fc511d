"""Pulling the largest CT of ``../shared/data`` from a PACS (issue 19), and from pull to model.

About 3 min on 2 cores with the defaults (``--repeat 3``).

A real PACS, started here as the tests start it (``tests/orthanc_server.py``): Debian's
Orthanc with its DICOMweb plugin, loaded with ``ct_skull_phantom_philips_bone_1mm`` (140
slices, 72 MiB). In one run:

1. The study pulled into an empty folder by each way holo has (:func:`holo.pacs.pull_study`:
   WADO-RS as stored, C-GET, C-MOVE to a listener of the pull's own), and by Orthanc's own
   REST download of the study as a zip
   (``GET /studies/{id}/archive``, streamed to a file): the baseline, Orthanc's fastest
   path with no DICOM protocol on top. Seconds (median of ``--repeat``), MB/s of the DICOM
   files' bytes, ratio against the archive download.
2. From pull to model through the server (``holo.testing.TestServer``, ``--workers 1``):
   ``StartPull`` with a conversion (bone), timed to the pull's end (fetch and store) and to
   the job's end; the baseline is the same study uploaded from its folder
   (``HoloClient.upload_study``) and converted, in the same run.

Checks no timing; prints tables. Orthanc, the server and this client share the machine's
cores (2 here): the ratios compare ways on the same footing, not a PACS on its own hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the engine helpers the tests use

import pydicom  # noqa: E402
from engines import free_port  # noqa: E402
from orthanc_server import OrthancServer  # noqa: E402
from tables import print_table  # noqa: E402

from holo.pacs import PacsNode, PacsNodes, pull_study  # noqa: E402
from holo.testing import TestServer  # noqa: E402
from holo.v1 import asset_pb2  # noqa: E402

CASE = "bench-pacs"
STUDY = "ct_skull_phantom_philips_bone_1mm"


def timed(run: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``run`` over ``repeat`` runs."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def archive_download(pacs: OrthancServer, target: Path) -> None:
    """Orthanc's REST zip of the study, streamed to ``target``."""
    [orthanc_id] = json.load(urllib.request.urlopen(f"{pacs.rest}/studies", timeout=30))
    url = f"{pacs.rest}/studies/{orthanc_id}/archive"
    with urllib.request.urlopen(url, timeout=600) as r, open(target, "wb") as out:
        while block := r.read(1 << 20):
            out.write(block)


def transfers(pacs: OrthancServer, study_uid: str, size: int, repeat: int, tmp: Path) -> None:
    web = PacsNode("web", dicomweb=pacs.dicomweb)
    dimse = PacsNode("dimse", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.dicom_port)
    runs = iter(range(1_000_000))

    def pull(node: PacsNode, **how: str) -> Callable[[], object]:
        return lambda: pull_study(node, study_uid, tmp / f"pull-{next(runs)}", **how)

    listen = f"127.0.0.1:{pacs.holo_port}"  # where Orthanc's modality "holo" is
    ways = [
        ("Orthanc REST archive (zip)", lambda: archive_download(pacs, tmp / f"{next(runs)}.zip")),
        ("WADO-RS (holo pull)", pull(web)),
        ("C-GET (holo pull)", pull(dimse)),
        ("C-MOVE (holo pull)", pull(dimse, via="c-move", move_listen=listen)),
    ]
    results = [(name, timed(run, repeat)) for name, run in ways]
    base = results[0][1]
    print_table(
        f"{STUDY}: {size / 1e6:.1f} MB of DICOM, median of {repeat}",
        ["way", "seconds", "MB/s", "ratio to archive"],
        [[n, f"{s:.2f}", f"{size / 1e6 / s:.1f}", f"{s / base:.2f}"] for n, s in results],
    )


def to_model(pacs: OrthancServer, study_uid: str, files: list[Path], tmp: Path) -> None:
    with TestServer(tmp / "store") as server:
        PacsNodes(server.data).add(PacsNode("archive", dicomweb=pacs.dicomweb))
        with server.client("radiologist", CASE) as radiologist:
            start = time.perf_counter()
            study = radiologist.upload_study(files)
            uploaded = time.perf_counter() - start
            job = radiologist.start_conversion(study.study_id.value, preset="bone")
            done = radiologist.wait_job(job.job_id.value)
            assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
            upload_total = time.perf_counter() - start

            start = time.perf_counter()
            pull = radiologist.start_pull("archive", study_uid, convert_preset="bone")
            pulled = radiologist.wait_pull(pull.pull_id.value)
            assert pulled.state == asset_pb2.JOB_STATE_SUCCEEDED, pulled.message
            stored = time.perf_counter() - start
            done = radiologist.wait_job(pulled.job_id.value)
            assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
            pull_total = time.perf_counter() - start
    print_table(
        "to a model (bone), through the server",
        ["way in", "study stored (s)", "model ready (s)", "conversion (s)", "ratio to upload"],
        [
            ["upload from the folder", f"{uploaded:.2f}", f"{upload_total:.2f}",
             f"{upload_total - uploaded:.2f}", "1.00"],
            ["StartPull (WADO-RS) + convert", f"{stored:.2f}", f"{pull_total:.2f}",
             f"{pull_total - stored:.2f}", f"{pull_total / upload_total:.2f}"],
        ],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--data", default=os.environ.get("HOLO_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    args = parser.parse_args()
    folder = Path(args.data) / STUDY
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "README.md")
    files = [p for p in files if p.suffix not in (".md", ".tsv")]
    size = sum(p.stat().st_size for p in files)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    print(f"{len(files)} files, {size / 1e6:.1f} MB; cores: {os.cpu_count()}")
    with (
        OrthancServer(holo_port=free_port()) as pacs,
        tempfile.TemporaryDirectory(prefix="holo-bench-pacs-") as tmp,
    ):
        pacs.store(files)
        transfers(pacs, study_uid, size, args.repeat, Path(tmp))
        to_model(pacs, study_uid, files, Path(tmp))


if __name__ == "__main__":
    main()
