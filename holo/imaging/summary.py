"""The summary of a study a server keeps: header facts, with the patient's identity apart.

What a radiologist sees (``series``, ``identity``) stays on the server; everyone else gets
``public_series``: the modality, kind and image count of each series, with replacement
UIDs keyed by ``salt`` (:func:`holo.imaging.deid.public_metadata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from holo.imaging import index_study
from holo.imaging.deid import public_metadata
from holo.imaging.sources import NamedFile, ZipLimits

__all__ = ["summarise_study"]


def summarise_study(
    files: Sequence[NamedFile],
    salt: str,
    *,
    limits: ZipLimits | None = None,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """Index ``files`` (an upload's files, named as uploaded) and summarise the study.

    Zips among them are read one member at a time in ``scratch`` (a server's data
    folder's scratch space), within ``limits``.

    Raises
    ------
    StudyError
        No DICOM image among them (the message names the files as uploaded).
    """
    index = index_study(list(files), limits=limits, scratch=scratch)
    series = [s.summary() for s in index.series]
    first = index.series[0].first
    identity = {
        "PatientName": str(first.get("PatientName", "") or ""),
        "PatientID": str(first.get("PatientID", "") or ""),
        "StudyDescription": str(first.get("StudyDescription", "") or ""),
    }
    public = [
        {
            **{k: s[k] for k in ("Modality", "kind", "images")},
            **public_metadata(
                {
                    "StudyInstanceUID": s["StudyInstanceUID"],
                    "SeriesInstanceUID": s["SeriesInstanceUID"],
                },
                salt=salt,
            ),
        }
        for s in series
    ]
    return {"series": series, "public_series": public, "identity": identity}
