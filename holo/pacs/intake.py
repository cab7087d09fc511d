"""DICOM files the server fetched itself become a study of its store.

A study pulled from a PACS (:mod:`holo.pacs.pull`) or sent to the C-STORE SCP
(:mod:`holo.pacs.receive`) must be the same kind of study as one a client uploaded: same
files kept by content, same header summary (:func:`holo.imaging.summary.summarise_study`),
same de-identification for roles other than the radiologist, same conversion. So each file
is stored as a complete upload (:meth:`holo.store.Store.add_file`) and the study is made of
those uploads, exactly as ``CreateStudy`` makes one.

Files are named ``<SOPInstanceUID>.dcm`` in the study (the names a PACS pull writes): never
a patient's name, as files exported by hand often are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from holo.imaging.sources import NamedFile, ZipLimits
from holo.imaging.summary import summarise_study
from holo.store import Store, StudyRecord, UploadRecord

__all__ = ["store_study"]


def store_study(
    store: Store,
    *,
    case_id: str,
    files: Sequence[Path],
    subject: str,
    salt: str,
    limits: ZipLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StudyRecord:
    """Summarise ``files`` (one study's DICOM files) and store them as a study of ``case_id``.

    The headers are read first: files that are not one readable study are refused with the
    errors an upload of them gets, before anything is stored.

    Parameters
    ----------
    progress
        Called with ``(files stored, files)`` before each file is stored and before the
        study is made of them; what it raises stops the storing there, and no study is
        made (the files stored so far are complete uploads of the case, as a client's
        uploads before its ``CreateStudy``).

    Raises
    ------
    StudyError
        No DICOM image among the files (the message names them).
    LimitError, DiskFullError
        A file over the store's limit, or no room for it.
    """
    paths = sorted(Path(f) for f in files)
    named = [NamedFile(path, path.name) for path in paths]
    summary = summarise_study(named, salt, limits=limits or ZipLimits(), scratch=store.tmp_dir)
    uploads: list[UploadRecord] = []
    for path in paths:
        if progress is not None:
            progress(len(uploads), len(paths))
        uploads.append(store.add_file(case_id=case_id, name=path.name, path=path, subject=subject))
    if progress is not None:
        progress(len(uploads), len(paths))
    return store.create_study(
        case_id=case_id, upload_ids=[u.upload_id for u in uploads], summary=summary
    )
