"""Fuzz what an upload's files go through: indexing (``summarise_study``, the upload path's
entry point), pixel decoding (``decode_frames``, every decoder pydicom has) and reading a
study (``read_study``: a volume stacked with SimpleITK, or an X-ray; ``read_cine``).

Documented error: :class:`~holo.errors.StudyError` (with its SeriesGeometryError), from
all of them. An input is one file, named ``upload.dcm`` as an upload would be.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["holo", "pydicom"]):
    from holo.errors import StudyError
    from holo.imaging import read_cine, read_study
    from holo.imaging.index import index_files
    from holo.imaging.pixels import decode_frames
    from holo.imaging.sources import NamedFile
    from holo.imaging.summary import summarise_study

from common import REPO, fuzz, link_seed, scratch_folder, shared_data, tiny_dicoms

SCRATCH = scratch_folder()
UPLOAD = NamedFile(SCRATCH / "upload.dcm", "upload.dcm")
#: Seeds from ../shared/data: the small ones (up to 48 KB, the fuzzer's -max_len).
SHARED_SEEDS = (
    "malformed_and_edge_cases/meta_missing_tsyntax.dcm",
    "malformed_and_edge_cases/JPEG2000-embedded-sequence-delimiter.dcm",
    "malformed_and_edge_cases/badVR.dcm",
    "malformed_and_edge_cases/MR_truncated.dcm",
    "malformed_and_edge_cases/CT_small.dcm",
    "malformed_and_edge_cases/no_meta.dcm",
    "malformed_and_edge_cases/emri_small_jpeg_2k_lossless_too_short.dcm",
    "ct_slice_transfer_syntaxes_wg04/693_J2KI.dcm",
    "ct_slice_transfer_syntaxes_wg04/CT1_J2KI.dcm",
    "xray_dx_feline_thorax_deid/dx_image_small_highdicom.dcm",
)


def test_one_input(data: bytes) -> None:
    UPLOAD.path.write_bytes(data)
    try:
        summary = summarise_study([UPLOAD], salt="fuzz", scratch=SCRATCH)
    except StudyError:
        return
    for series in index_files([UPLOAD]).series:
        for instance in series.instances:
            with contextlib.suppress(StudyError):
                decode_frames(instance)
    with contextlib.suppress(StudyError):
        read_study([UPLOAD])
    if any(s["kind"] == "cine" for s in summary["series"]):
        with contextlib.suppress(StudyError):
            read_cine([UPLOAD])


def write_seeds(folder: Path) -> None:
    for name, content in tiny_dicoms().items():
        (folder / name).write_bytes(content)
    link_seed(folder, REPO / "sample_data" / "knee_ct" / "CT_0001.dcm", "knee_ct_0001.dcm")
    root = shared_data()
    for relative in SHARED_SEEDS if root else ():
        if (root / relative).is_file() and (root / relative).stat().st_size <= 48 << 10:
            link_seed(folder, root / relative, relative.replace("/", "__"))


if __name__ == "__main__":
    fuzz(test_one_input, write_seeds)
