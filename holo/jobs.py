"""Conversion jobs: a bounded pool of worker processes, progress fanned out to watchers.

Each job runs :func:`holo.pipeline.convert` in its own spawned process, not a thread: the
pipeline holds the GIL for much of segmentation and cleanup (numpy/scipy in Python loops,
trimesh), which would stall the event loop's streams, and a process can be cancelled (it is
terminated) and cannot take the server down if a native library crashes on a bad study.
At most ``workers`` run at once; the rest wait queued. Progress comes back over a pipe;
the latest state of a job is kept in memory for watchers (latest value, never a queue) and
stage changes are written to the store, so a restart reports interrupted jobs as failed.

A model is published by :func:`holo.store.publish.publish_model`, which marks the job
succeeded in the same transaction and refuses a job that is already final: a job cancelled
while its model was being stored publishes nothing. Conversions started and models
published are written to the server's audit log with the subject who started the job.

The worker reads the study's stored files where they are, under their upload names
(:class:`~holo.imaging.sources.NamedFile`): zips are recognised by name and content, and
messages name the user's files, not blobs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import secrets
import shutil
import tempfile
import traceback
import weakref
from collections.abc import AsyncIterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from holo.audit import NO_AUDIT, Auditor
from holo.errors import HoloError, InvalidRequestError, PreconditionError, quote_id
from holo.store import JobRecord, Store
from holo.store.publish import publish_model
from holo.store.records import TERMINAL_JOB_STATES
from segmentation.presets import PRESET_NAMES

__all__ = ["STOPPED_MESSAGE", "JobRunner"]

logger = logging.getLogger(__name__)

STOPPED_MESSAGE = "the server stopped; start the conversion again"
#: How long a worker may take to exit after it reported, or after SIGTERM, before it is
#: killed (a conversion has no state worth a graceful end; this only bounds the wait).
_JOIN_S = 10.0


def _convert_in_child(
    files: list[tuple[str, str]],
    output: str,
    preset: str,
    series_uid: str,
    deid_salt: str,
    conn: multiprocessing.connection.Connection,
) -> None:
    """Worker process body: convert the study's files (named as uploaded), report."""
    try:
        # Imported here: the parent never loads VTK.
        from holo.imaging.sources import NamedFile
        from holo.pipeline import convert

        report = convert(
            [NamedFile(Path(path), name) for name, path in files],
            output,
            preset=preset,
            series_uid=series_uid or None,
            deid_salt=deid_salt,
            progress=lambda stage, fraction: conn.send(("progress", stage, fraction)),
        )
        conn.send(("done", report.as_dict()))
    except HoloError as err:
        conn.send(("failed", err.message))
    except Exception as err:
        traceback.print_exc()
        conn.send(("failed", f"the conversion crashed ({type(err).__name__}); see the server log"))
    finally:
        conn.close()


class JobRunner:
    """Runs conversion jobs for a server; call :meth:`close` on shutdown.

    Parameters
    ----------
    store
        The server's store: jobs, studies and models live there.
    workers
        How many conversions run at once; the rest wait queued.
    deid_salt
        Keys the replacement UIDs of the models' de-identified facts.
    audit
        Receives a record per conversion started and per model published.
    """

    def __init__(
        self,
        store: Store,
        *,
        workers: int = 1,
        deid_salt: str,
        audit: Auditor = NO_AUDIT,
    ) -> None:
        self._store = store
        self._salt = deid_salt
        self._audit = audit
        workers = max(1, workers)
        self._slots = asyncio.Semaphore(workers)
        # Waits on workers (a pipe's recv, a process's join) block a thread for as long as a
        # conversion runs; in asyncio.to_thread's default pool they would hold the threads
        # that every RPC's store calls need. A running job needs at most two at once (the
        # relay of its progress, and the wait for its process to exit).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            2 * workers, thread_name_prefix="holo-jobs"
        )
        self._context = multiprocessing.get_context("spawn")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._processes: dict[str, BaseProcess] = {}
        self._latest: dict[str, JobRecord] = {}
        # One event per watched job, set (and replaced) on each change. Weak values: an
        # event lives while a watcher holds it, so watched jobs that finished leave nothing.
        self._changed: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    async def start(
        self, *, study_id: str, case_id: str, preset: str, series_uid: str, subject: str = ""
    ) -> JobRecord:
        """Queue a conversion; returns the queued job at once.

        ``subject`` (who asked, the token's subject) goes to the audit records of the job.
        """
        if self._closed:
            raise PreconditionError("the server is stopping; start the conversion again later")
        preset = preset or "bone"
        if preset not in PRESET_NAMES:
            raise InvalidRequestError(
                f"unknown preset {quote_id(preset)}; choose one of {', '.join(PRESET_NAMES)}"
            )
        job = await asyncio.to_thread(
            self._store.create_job,
            study_id=study_id,
            case_id=case_id,
            preset=preset,
            series_uid=series_uid,
        )
        try:
            await self._write_audit("conversion_started", job, subject, preset=preset)
        except Exception:
            # No unaudited conversion runs: the job is refused as it was recorded.
            await self._update(
                job.job_id, state="failed", message="the audit log could not be written"
            )
            raise
        self._tasks[job.job_id] = asyncio.create_task(
            self._run(job, subject), name=f"job {job.job_id}"
        )
        self._publish(job)
        return job

    async def _write_audit(self, action: str, job: JobRecord, subject: str, **about: str) -> None:
        ids = {"study_id": job.study_id, "job_id": job.job_id}
        await self._audit.record(action, subject, job.case_id, **ids, **about)

    def _publish(self, job: JobRecord) -> None:
        if job.job_id in self._tasks:  # only live jobs are kept; the store has the rest
            self._latest[job.job_id] = job
        event = self._changed.pop(job.job_id, None)
        if event is not None:
            event.set()  # wake every watcher; each one reads the latest state

    async def _update(self, job_id: str, **fields: Any) -> JobRecord:
        job = await asyncio.to_thread(self._store.update_job, job_id, **fields)
        self._publish(job)
        return job

    async def get(self, job_id: str) -> JobRecord:
        """The latest state: in memory while the job is live, else from the store."""
        latest = self._latest.get(job_id)
        if latest is not None:
            return latest
        return await asyncio.to_thread(self._store.get_job, job_id)

    async def watch(self, job_id: str) -> AsyncIterator[JobRecord]:
        """The job's state now, then each change (coalesced) until a final state."""
        while True:
            # The event before the state: a change published while the state is read, or
            # while the caller handles it, sets this event, so the wait below cannot miss it.
            event = self._changed.get(job_id)
            if event is None:
                event = self._changed[job_id] = asyncio.Event()
            job = await self.get(job_id)
            yield job
            if job.state in TERMINAL_JOB_STATES:
                return
            await event.wait()

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; a finished one is returned as it is."""
        job = await self.get(job_id)
        if job.state in TERMINAL_JOB_STATES:
            return job
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        process = self._processes.get(job_id)
        if process is not None:
            process.terminate()
        try:
            return await self._update(job_id, state="cancelled", message="cancelled by request")
        except InvalidRequestError:  # it finished meanwhile: a final state stays as it is
            return await asyncio.to_thread(self._store.get_job, job_id)

    async def _run(self, job: JobRecord, subject: str) -> None:
        """``subject`` is the StartConversion caller's, for the audit record."""
        try:
            async with self._slots:
                await self._convert(job, subject)
        except asyncio.CancelledError:
            pass  # cancel() or close() has recorded the state
        except Exception:  # the server must not lose a job to a bug silently
            ref = secrets.token_hex(4)
            logger.exception("job %s failed (ref %s)", job.job_id, ref)
            with contextlib.suppress(InvalidRequestError):  # unless cancelled meanwhile
                await self._update(
                    job.job_id,
                    state="failed",
                    message=f"internal error (ref {ref}); see the server log",
                )
        finally:
            self._tasks.pop(job.job_id, None)
            self._processes.pop(job.job_id, None)
            self._latest.pop(job.job_id, None)

    async def _convert(self, job: JobRecord, subject: str) -> None:
        loop = asyncio.get_running_loop()
        files = await asyncio.to_thread(self._store.study_files, job.study_id)
        tmp = Path(tempfile.mkdtemp(prefix=f"{job.job_id}.", dir=self._store.tmp_dir))
        output = tmp / "model.glb"
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_convert_in_child,
            args=(
                [(n, str(p)) for n, p in files],
                str(output),
                job.preset,
                job.series_uid,
                self._salt,
                send,
            ),
            name=f"holo-{job.job_id}",
            daemon=True,
        )
        worker = _Worker(process, receive, tmp)
        try:
            await self._update(job.job_id, state="running", stage="read", fraction=0.0)
            process.start()
            send.close()
            self._processes[job.job_id] = process
            outcome = await self._pump(job.job_id, worker)
            await loop.run_in_executor(self._executor, process.join, _JOIN_S)
            if outcome[0] == "done":
                await self._publish_model(job, output, outcome[1], subject)
            else:
                await self._update(job.job_id, state="failed", message=outcome[1])
        finally:
            self._processes.pop(job.job_id, None)
            send.close()
            # The worker is stopped and waited for before its folder goes (a terminated one
            # may still be writing there). Shielded: a second cancellation must not drop
            # the clean-up from the executor's queue; it then finishes on its own.
            await asyncio.shield(loop.run_in_executor(self._executor, worker.stop_and_remove))

    async def _pump(self, job_id: str, worker: _Worker) -> tuple[str, Any]:
        """Relay the child's progress until it reports an outcome or dies."""
        stage = ""
        while True:
            try:
                message = await worker.next_message(self._executor)
            except EOFError:
                return (
                    "failed",
                    "the conversion process died before finishing; see the server log",
                )
            if message[0] != "progress":
                return (message[0], message[1])
            _, name, fraction = message
            if name != stage:  # stage changes go to the store; fractions only to watchers
                stage = name
                await self._update(job_id, stage=name, fraction=fraction)
            else:
                self._publish(dataclasses.replace(self._latest[job_id], fraction=float(fraction)))

    async def _publish_model(
        self, job: JobRecord, output: Path, report: dict[str, Any], subject: str
    ) -> None:
        glb = await asyncio.to_thread(output.read_bytes)
        radiograph = report["structures"][0]["name"] == "radiograph"
        try:
            model = await asyncio.to_thread(
                publish_model,
                self._store,
                glb,
                case_id=job.case_id,
                study_id=job.study_id,
                job_id=job.job_id,
                preset="radiograph" if radiograph else job.preset,
                report=report,
            )
        except InvalidRequestError:
            current = await asyncio.to_thread(self._store.get_job, job.job_id)
            if current.state not in TERMINAL_JOB_STATES:
                raise
            logger.info("job %s was %s before its model was published", job.job_id, current.state)
            self._publish(current)
            return
        # add_model marked the job succeeded in the same transaction: publish it as stored.
        self._publish(await asyncio.to_thread(self._store.get_job, job.job_id))
        try:
            await self._write_audit("model_published", job, subject, model_id=model.model_id)
        except Exception:  # the model is published; a lost record must at least be loud
            logger.exception("model %s: the audit record could not be written", model.model_id)

    async def close(self) -> None:
        """Stop every job: workers are terminated and live jobs recorded as failed (a job
        that finished meanwhile keeps its state). Later :meth:`start` calls are refused."""
        self._closed = True
        live = list(self._tasks.items())
        for _, task in live:
            task.cancel()
        for process in list(self._processes.values()):
            process.terminate()
        for job_id, _ in live:
            try:
                await self._update(job_id, state="failed", message=STOPPED_MESSAGE)
            except InvalidRequestError:
                pass  # finished (or cancelled) meanwhile: a final state stays
            except Exception:  # the other jobs must still be stopped
                logger.exception("job %s: could not record that the server stopped", job_id)
        # Each task's clean-up waits for its worker to exit and removes its folder.
        await asyncio.gather(*(task for _, task in live), return_exceptions=True)
        self._executor.shutdown(wait=False)


@dataclasses.dataclass
class _Worker:
    """One conversion's process, the read end of its pipe and its scratch folder."""

    process: BaseProcess
    receive: multiprocessing.connection.Connection
    folder: Path
    reading: concurrent.futures.Future[Any] | None = None

    def next_message(self, executor: concurrent.futures.ThreadPoolExecutor) -> asyncio.Future[Any]:
        """The child's next message, read in a thread of ``executor`` (``recv`` blocks)."""
        self.reading = executor.submit(self.receive.recv)
        return asyncio.wrap_future(self.reading)

    def stop_and_remove(self) -> None:
        """Terminate the process if it still runs, wait (bounded) for it to exit, close the
        pipe and remove the folder; blocks, so it runs in a thread."""
        process = self.process
        if process.pid is not None:  # started
            if process.is_alive():
                process.terminate()
            process.join(_JOIN_S)
            if process.is_alive():
                logger.warning(
                    "worker %s ignored SIGTERM for %.0f s; killing it", process.name, _JOIN_S
                )
                process.kill()
                process.join(_JOIN_S)
        reading = self.reading
        # A read still running ends now that the writer is gone (EOF); the pipe is closed
        # only after it, so no thread ever reads a closed (and maybe reused) descriptor.
        if reading is not None and not reading.cancel():
            concurrent.futures.wait([reading], timeout=_JOIN_S)
        if reading is None or reading.done():
            self.receive.close()
        else:
            logger.warning("worker %s: its pipe is still being read; left open", process.name)
        shutil.rmtree(self.folder, ignore_errors=True)
