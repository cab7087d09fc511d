"""The DICOM port of ``holo serve --dicom-listen``: received studies become studies of the store.

:class:`holo.pacs.receive.DicomReceiver` hands over each complete batch from a pynetdicom
thread; here it becomes a study of the ``--dicom-case`` case on the server's event loop,
exactly as an upload does (:func:`holo.pacs.intake.store_study`: same summary, same
de-identification, same errors), indexed in the server's indexing pool like uploads, and
audited (``study_received``, by ``dicom:<calling AE>``). Series matching a
``--dicom-convert`` rule (:mod:`holo.pacs.rules`) get a conversion job. The batch's
scratch folder is deleted once the study is stored or refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import shutil
from dataclasses import dataclass

from holo.audit import Auditor
from holo.errors import HoloError
from holo.imaging.sources import ZipLimits
from holo.jobs import JobRunner
from holo.pacs.intake import store_study
from holo.pacs.receive import DEFAULT_QUIET_S, DicomReceiver, ReceivedStudy
from holo.pacs.rules import ConvertRule
from holo.server.fairpool import FairPool
from holo.store import Store, StudyRecord

__all__ = ["DicomPort", "DicomPortConfig"]

logger = logging.getLogger(__name__)

#: Kinds of series a rule may start a conversion of (holo.imaging.index): a dose report or
#: an NM series matching ``modality=*`` would only make a job that fails.
_CONVERTIBLE = ("volume", "radiograph")


@dataclass(frozen=True)
class DicomPortConfig:
    """What ``holo serve`` is given for its DICOM port (``--dicom-*``)."""

    ae_title: str
    allow: tuple[str, ...]
    case_id: str
    rules: tuple[ConvertRule, ...] = ()
    quiet_s: float = DEFAULT_QUIET_S


class DicomPort:
    """The receiver and what becomes of what it receives; see the module."""

    def __init__(
        self,
        config: DicomPortConfig,
        *,
        store: Store,
        jobs: JobRunner,
        audit: Auditor,
        heavy: FairPool,
        salt: str,
        zip_limits: ZipLimits,
    ) -> None:
        self.config = config
        self._store = store
        self._jobs = jobs
        self._audit = audit
        self._heavy = heavy
        self._salt = salt
        self._zip_limits = zip_limits
        self._loop = asyncio.get_running_loop()
        self._pending: set[concurrent.futures.Future[StudyRecord | None]] = set()
        self.receiver = DicomReceiver(
            ae_title=config.ae_title,
            allow=config.allow,
            scratch=store.tmp_dir / "dicom-received",
            deliver=self._deliver,
            quiet_s=config.quiet_s,
        )
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen (port 0: a free port); the bound port. OSError on a clash."""
        self.port = await asyncio.to_thread(self.receiver.start, host, port)
        return self.port

    async def stop(self) -> None:
        """Stop listening, then wait for the studies received so far to be stored."""
        await asyncio.to_thread(self.receiver.stop)
        while self._pending:
            await asyncio.gather(
                *(asyncio.wrap_future(f) for f in list(self._pending)), return_exceptions=True
            )

    def _deliver(self, study: ReceivedStudy) -> None:
        # A pynetdicom thread: the work goes to the server's loop, this thread goes on.
        future = asyncio.run_coroutine_threadsafe(self.take(study), self._loop)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def take(self, study: ReceivedStudy) -> StudyRecord | None:
        """Store ``study`` in the case, audit it and start the conversions its rules ask
        for; the stored study, or None when it was refused (logged in one line)."""
        subject = f"dicom:{study.calling_ae}"
        case_id = self.config.case_id
        try:
            record = await self._heavy.run(
                subject,
                functools.partial(
                    store_study,
                    self._store,
                    case_id=case_id,
                    files=study.files,
                    subject=subject,
                    salt=self._salt,
                    limits=self._zip_limits,
                ),
            )
        except HoloError as err:
            logger.warning(
                "refused a study of %d file(s) from %s: %s",
                len(study.files),
                study.calling_ae,
                err.message,
            )
            return None
        except Exception:
            logger.exception("a study of %d file(s) from %s failed", len(study.files),
                             study.calling_ae)  # fmt: skip
            return None
        finally:
            await asyncio.to_thread(shutil.rmtree, study.folder, True)
        await self._audit.record("study_received", subject, case_id, study_id=record.study_id)
        logger.info(
            "received study %s (%d file(s)) from %s in case %s",
            record.study_id,
            len(study.files),
            study.calling_ae,
            case_id,
        )
        await self._convert(record, study, subject)
        return record

    async def _convert(self, record: StudyRecord, study: ReceivedStudy, subject: str) -> None:
        for series in record.summary.get("series", []):
            if series.get("kind") not in _CONVERTIBLE:
                continue
            seen = {**study.series.get(series["SeriesInstanceUID"], {}), **series}
            rule = next((r for r in self.config.rules if r.match(seen)), None)
            if rule is None:
                continue
            try:
                job = await self._jobs.start(
                    study_id=record.study_id,
                    case_id=record.case_id,
                    preset=rule.preset,
                    series_uid=series["SeriesInstanceUID"],
                    subject=subject,
                )
            except HoloError as err:  # the server is stopping, the audit log refused
                logger.warning("no conversion of study %s: %s", record.study_id, err.message)
                return
            logger.info("conversion %s of study %s by rule %r", job.job_id, record.study_id,
                        rule.text)  # fmt: skip
