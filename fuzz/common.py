"""What every harness shares: where seed data live, scratch space, and how a harness starts.

A harness is a script: ``python fuzz/fuzz_glb.py [libFuzzer options] CORPUS [SEEDS...]``
fuzzes (atheris, coverage-guided), ``python fuzz/fuzz_glb.py --seeds DIR`` writes its seed
corpus to ``DIR`` and exits. :mod:`run` does both with the options each target needs.

A crash is any exception a target's docstring does not name (atheris reports it with the
input that raised it), a call slower than libFuzzer's ``-timeout``, or memory past
``-rss_limit_mb``. Each harness catches exactly the documented errors and nothing else.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

__all__ = ["REPO", "fuzz", "link_seed", "scratch_folder", "shared_data"]

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """``../shared/data`` (or ``$HOLO_DATA``, as tests/conftest.py reads it); None if absent.

    Seeds are linked from there, never copied into the repository."""
    root = Path(os.environ.get("HOLO_DATA", REPO.parent / "shared" / "data")).resolve()
    return root if (root / "INDEX_real_dicom.md").is_file() else None


def link_seed(folder: Path, source: Path, name: str | None = None) -> None:
    """Put ``source`` in the seed folder ``folder`` as a symbolic link (libFuzzer follows it)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    if not target.exists():
        target.symlink_to(source.resolve())


def scratch_folder() -> Path:
    """A private folder for the files a harness writes per input: in RAM (/dev/shm) where
    there is one, removed at exit. Under ``HOLO_FUZZ_SCRATCH`` when the runner gives one:
    libFuzzer ends a harness that found a crash without running its exit handlers, so
    the runner removes that folder itself."""
    base = os.environ.get("HOLO_FUZZ_SCRATCH") or (
        "/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    folder = Path(tempfile.mkdtemp(prefix="holo-fuzz-", dir=base))
    import atexit

    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def fuzz(test_one_input: Callable[[bytes], None], write_seeds: Callable[[Path], None]) -> None:
    """The harness's ``main``: ``--seeds DIR`` writes the seeds, anything else fuzzes."""
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        folder = Path(sys.argv[2])
        folder.mkdir(parents=True, exist_ok=True)
        write_seeds(folder)
        return
    # holo logs refusals (rate-limited) and pydicom warns about damaged files: expected here.
    logging.disable(logging.CRITICAL)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def tiny_dicoms() -> dict[str, bytes]:
    """Small DICOM files of each kind the readers take, made here (seeds of a few KB):
    a CT slice, the same RLE-compressed, a 3-frame XA cine, a DX, one without file meta."""
    from io import BytesIO

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    def image(modality: str, sop_class: str, frames: int = 1) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = "1.2.3"
        ds.SeriesInstanceUID = f"1.2.3.{sum(map(ord, modality))}"
        ds.Modality, ds.PatientName, ds.PatientID = modality, "Fuzz^Seed", "F1"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.SamplesPerPixel, ds.PixelRepresentation = 1, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImagePositionPatient = [0, 0, 0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.InstanceNumber = 1
        if frames > 1:
            ds.NumberOfFrames = frames
        pixels = (np.arange(64 * frames, dtype=np.int16) * 7).reshape(frames, 8, 8)
        ds.PixelData = pixels.tobytes()
        return ds

    def save(ds: Dataset, **options: bool) -> bytes:
        out = BytesIO()
        ds.save_as(out, enforce_file_format=options.get("meta", True))
        return out.getvalue()

    ct = image("CT", "1.2.840.10008.5.1.4.1.1.2")
    rle = image("CT", "1.2.840.10008.5.1.4.1.1.2")
    rle.compress(RLELossless)
    xa = image("XA", "1.2.840.10008.5.1.4.1.1.12.1", frames=3)
    dx = image("DX", "1.2.840.10008.5.1.4.1.1.1.1")
    bare = image("CT", "1.2.840.10008.5.1.4.1.1.2")
    del bare.file_meta
    out = BytesIO()
    bare.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return {
        "ct.dcm": save(ct),
        "ct_rle.dcm": save(rle),
        "xa_cine.dcm": save(xa),
        "dx.dcm": save(dx),
        "ct_no_meta.dcm": out.getvalue(),
    }
