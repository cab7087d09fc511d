"""The C-STORE SCP of ``holo serve --dicom-listen``: studies a PACS or a scanner sends.

:class:`DicomReceiver` is a pynetdicom Storage SCP (every storage SOP class, every
transfer syntax offered, kept as sent: nothing is transcoded) that also answers C-ECHO.
Only the calling AE titles allowed may associate (others are rejected, "calling AE title
not recognised"), and only when they call holo by its own AE title.

Each instance is written as the sender encoded it (file meta and data set, not decoded
and re-encoded) by an atomic rename to
``<scratch>/<batch>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``: one batch per association
and study. Just enough is decoded to name it (the study and series UIDs, and the
attributes auto-convert rules match); an instance that cannot be decoded is answered
0xC210 "cannot understand" and not kept. A batch is complete when its association ends
(released or aborted), or after ``quiet_s`` without a new instance for senders that keep
associations open or send one study over several; it is then handed to ``deliver``, which
owns its folder from then on.

Log lines name a sender by its AE title and count files; never a patient's data.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holo.atomic import atomic_path
from holo.errors import InvalidRequestError
from holo.extras import need

__all__ = ["DEFAULT_QUIET_S", "DicomReceiver", "ReceivedStudy", "storage_contexts"]

logger = logging.getLogger(__name__)

#: Seconds without a new instance after which a study on an open association is complete.
#: A PACS or scanner sends a study's instances milliseconds apart (Orthanc: ~5 ms per CT
#: slice on a LAN), and most end the association after it; 10 s is far above those gaps
#: while a radiologist waits only seconds longer for a study whose sender keeps the
#: association open. A sender pausing longer mid-study makes two studies of it.
DEFAULT_QUIET_S = 10.0
#: PS3.4 B.2.3: 0xC000-0xCFFF "Cannot understand"; 0xA700 "Out of resources".
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# The series attributes kept from the headers for the auto-convert rules (holo.pacs.rules).
_SERIES_KEYWORDS = ("Modality", "BodyPartExamined", "SeriesDescription")


@dataclass(frozen=True)
class ReceivedStudy:
    """One complete batch: the files one sender sent of one study.

    Attributes
    ----------
    calling_ae
        The sender's AE title.
    folder
        The batch's scratch folder (the receiver no longer touches it).
    files
        The instances, ``<StudyInstanceUID>/<SOPInstanceUID>.dcm`` under ``folder``.
    series
        SeriesInstanceUID -> Modality, BodyPartExamined and SeriesDescription as received.
    """

    calling_ae: str
    folder: Path
    files: tuple[Path, ...]
    series: dict[str, dict[str, str]]


@dataclass
class _Batch:
    assoc: Any
    calling_ae: str
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    series: dict[str, dict[str, str]] = field(default_factory=dict)
    writing: int = 0
    last: float = field(default_factory=time.monotonic)


def storage_contexts() -> list[tuple[str, list[str]]]:
    """``(abstract syntax, transfer syntaxes)`` of a Storage SCP that takes every storage
    SOP class in any transfer syntax pynetdicom knows (as sent: holo reads them all)."""
    need("server", "pynetdicom", feature="the DICOM port (C-STORE SCP)")
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

    return [
        (str(cx.abstract_syntax), list(ALL_TRANSFER_SYNTAXES))
        for cx in AllStoragePresentationContexts
    ]


def _quiet_since(since: float, batch: _Batch) -> bool:
    return batch.last <= since


def _uid(value: object) -> str:
    text = str(value or "").strip().rstrip("\0")
    if not _UID.fullmatch(text) or len(text) > 64:
        raise ValueError("not a DICOM UID")
    return text


class DicomReceiver:
    """A Storage SCP writing what it receives under ``scratch``; see the module.

    Parameters
    ----------
    ae_title
        holo's AE title: associations calling another are rejected.
    allow
        The calling AE titles accepted (at least one).
    scratch
        The folder batches are written in (on the store's file system: ``Store.tmp_dir``).
    deliver
        Called with each complete :class:`ReceivedStudy`, from a pynetdicom or the quiet
        timer's thread: it must hand the work on, not do it.
    quiet_s
        Seconds without an instance after which a batch is complete anyway.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        allow: tuple[str, ...],
        scratch: Path,
        deliver: Callable[[ReceivedStudy], None],
        quiet_s: float = DEFAULT_QUIET_S,
    ) -> None:
        if not allow:
            raise InvalidRequestError(
                "--dicom-listen needs at least one --dicom-allow AET: holo takes studies only "
                "from the senders named (give the PACS's or scanner's AE title)"
            )
        if not quiet_s > 0:
            raise InvalidRequestError(
                f"--dicom-quiet {quiet_s}: give the seconds after a sender's last instance "
                "that its study is complete, more than 0"
            )
        self.ae_title = ae_title
        self.allow = allow
        self.scratch = scratch
        self.quiet_s = quiet_s
        self._deliver = deliver
        self._lock = threading.Lock()
        self._batches: dict[tuple[int, str], _Batch] = {}  # (association, study) -> batch
        self._serials: dict[int, int] = {}  # id(association) -> its number here
        self._numbers = itertools.count(1)
        self._server: Any = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port`` (0: a free port); returns the bound port.

        Raises
        ------
        OSError
            The address is in use or not available.
        """
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(self.allow)
        for abstract, syntaxes in storage_contexts():
            ae.add_supported_context(abstract, syntaxes)
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),  # a peer gone without a release or abort
        ]
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        self._timer = threading.Thread(target=self._watch_quiet, name="holo-dicom-quiet")
        self._timer.start()
        bound = int(self._server.server_address[1])
        logger.info(
            "DICOM port on %s:%d as %s, accepting %s", host, bound, self.ae_title,
            ", ".join(self.allow),
        )  # fmt: skip
        return bound

    def stop(self) -> None:
        """Stop listening; batches not complete yet are delivered as they are (the sender
        was told each instance was stored). Blocks until pynetdicom's threads end."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None
        self._complete(lambda batch: True)

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            ds = event.dataset
            study_uid = _uid(ds.get("StudyInstanceUID"))
            series_uid = _uid(ds.get("SeriesInstanceUID"))
            sop_uid = _uid(event.request.AffectedSOPInstanceUID)
            attributes = {k: str(ds.get(k, "") or "") for k in _SERIES_KEYWORDS}
        except Exception as err:  # pydicom's errors on a malformed data set are of any kind
            logger.warning(
                "refused an instance from %s: not a readable DICOM data set with study, series "
                "and instance UIDs (%s)", calling, type(err).__name__,
            )  # fmt: skip
            return CANNOT_UNDERSTAND
        with self._lock:
            key = (id(event.assoc), study_uid)
            batch = self._batches.get(key)
            if batch is None:
                serial = self._serials.setdefault(id(event.assoc), next(self._numbers))
                folder = self.scratch / f"a{serial}-{next(self._numbers)}"
                batch = self._batches[key] = _Batch(event.assoc, calling, folder)
            batch.writing += 1
        target = batch.folder / study_uid / f"{sop_uid}.dcm"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            data = event.encoded_dataset()  # preamble, file meta and data set as sent
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        except OSError as err:  # a full disk: the sender keeps it and may send it again
            logger.error("could not keep an instance from %s: %s", calling, err.strerror)
            return OUT_OF_RESOURCES
        finally:
            with self._lock:
                batch.writing -= 1
                batch.last = time.monotonic()
        with self._lock:
            batch.files[sop_uid] = target
            batch.series.setdefault(series_uid, attributes)
        return 0x0000

    def _on_end(self, event: Any) -> None:
        assoc = event.assoc
        self._complete(lambda batch: batch.assoc is assoc)
        with self._lock:
            self._serials.pop(id(assoc), None)

    def _watch_quiet(self) -> None:
        # Checked 4 times per quiet period (at most every second): a batch completes
        # between quiet_s and 1.25 quiet_s after its last instance.
        step = min(1.0, self.quiet_s / 4)
        while not self._stop.wait(step):
            self._complete(functools.partial(_quiet_since, time.monotonic() - self.quiet_s))

    def _complete(self, done: Callable[[_Batch], bool]) -> None:
        with self._lock:
            keys = [k for k, b in self._batches.items() if b.writing == 0 and done(b)]
            batches = [self._batches.pop(k) for k in keys]
        for batch in batches:
            if not batch.files:  # every instance refused: nothing to deliver
                shutil.rmtree(batch.folder, ignore_errors=True)
                continue
            study = ReceivedStudy(
                calling_ae=batch.calling_ae,
                folder=batch.folder,
                files=tuple(sorted(batch.files.values())),
                series=batch.series,
            )
            try:
                self._deliver(study)
            except Exception:  # a receiver thread must not die of it: log and go on
                logger.exception("a received study from %s was not delivered", batch.calling_ae)
