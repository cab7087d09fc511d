"""Conversion jobs: a bounded pool of worker processes, progress fanned out to watchers.

Each job runs :func:`holo.pipeline.convert` in its own spawned process, not a thread: the
pipeline holds the GIL for much of segmentation and cleanup (numpy/scipy in Python loops,
trimesh), which would stall the event loop's streams, and a process can be cancelled (it is
terminated) and cannot take the server down if a native library crashes on a bad study.
At most ``workers`` run at once; the rest wait queued. Progress comes back over a pipe;
the latest state of a job is kept in memory for watchers (latest value, never a queue) and
stage changes are written to the store, so a restart reports interrupted jobs as failed.

The queue is the store's jobs table: a runner with a free worker claims the oldest queued
job (:meth:`holo.store.Store.claim_job`), whichever node queued it, and holds it by a lease
that it renews every third of the lease while the worker runs. When nodes share a
PostgreSQL catalog (issue 18) that is how they share the work: PostgreSQL's ``FOR UPDATE
SKIP LOCKED`` hands each claim a different row, a job whose node died is taken over once
its lease runs out, and every write of a worker carries its lease, so a node that lost
the job (it stalled past the lease) stops and publishes nothing: one model per job. The
queue is polled (once a second) only then; one node is woken by its own starts. Chosen
over Redis streams: the jobs are rows already, and claiming, publishing the model and
marking the job succeeded are then transactions of one database.

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
import ctypes
import dataclasses
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import AsyncIterator, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path, PurePath
from typing import Any

from holo import metrics
from holo.audit import NO_AUDIT, Auditor
from holo.errors import (
    DiskFullError,
    HoloError,
    InvalidRequestError,
    LeaseLostError,
    PreconditionError,
    UnavailableError,
    disk_full,
    quote_id,
)
from holo.imaging.sources import ZipLimits
from holo.store import JobRecord, Store
from holo.store.publish import publish_model
from holo.store.records import TERMINAL_JOB_STATES
from segmentation.presets import PRESET_NAMES

__all__ = ["STOPPED_MESSAGE", "JobRunner", "public_message"]

logger = logging.getLogger(__name__)

STOPPED_MESSAGE = "the server stopped; start the conversion again"
#: How long a node's claim on a job lasts unless renewed. Another node takes the job over
#: this long after its node died: 30 s is well past a stalled event loop's worst pause
#: seen here (a 2-3 s collection under load) and short beside a conversion (30-90 s).
DEFAULT_LEASE_S = 30.0
#: How often nodes sharing a catalog look for queued jobs and for other nodes' progress.
SHARED_POLL_S = 1.0
#: How soon a node looks again after the store failed it (a claim, a lease renewal).
_RETRY_S = 1.0
#: How long a worker may take to exit after it reported, or after SIGTERM, before it is
#: killed (a conversion has no state worth a graceful end; this only bounds the wait).
_JOIN_S = 10.0


#: prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when ``parent_pid`` (its parent) dies.

    A worker otherwise outlives a server killed with SIGKILL until it next reports (a
    broken pipe ends it then): a segmentation stage runs 3-4 s on the 109-slice sample
    knee and minutes on a full-body CT, while the next server already runs on the same
    store and receives the orphan's log lines on the terminal they share. SIGKILL, not
    SIGTERM: a worker holds nothing worth a graceful end (its scratch folder is in the
    store's ``tmp/``, cleared when the next server opens the store), and SIGKILL also ends
    a stopped process. The kernel watches the thread that started the worker: the event
    loop's, which lives as long as the server. Linux only (prctl); elsewhere the broken
    pipe is the only end.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect: then nobody signals us.
    if os.getppid() != parent_pid:
        os._exit(1)


def public_message(message: str, files: Sequence[tuple[str, str]], folders: Sequence[str]) -> str:
    """``message`` with every server path in it replaced by what the user knows it as.

    A study file's stored path (``files``: ``(upload name, path)``) becomes its upload
    name; any other path under ``folders`` (the store, the job's scratch folder, the
    system's temporary folder) becomes its last part, which for an extracted zip member
    is the member's own file name. Messages of holo's own name files by their upload
    names already; this catches a path carried in by a library's exception text.
    """
    for name, path in sorted(files, key=lambda f: len(f[1]), reverse=True):
        message = message.replace(path, name)
    roots = sorted({f.rstrip("/") for f in folders if f.rstrip("/")}, key=len, reverse=True)
    if not roots:
        return message
    pattern = "(?:" + "|".join(re.escape(r) for r in roots) + r")(?:/[^\s'\"(),;]*)?"

    def last_part(found: re.Match[str]) -> str:
        return PurePath(found.group(0)).name if found.group(0) not in roots else "a server folder"

    return re.sub(pattern, last_part, message)


def _convert_in_child(
    files: list[tuple[str, str]],
    output: str,
    preset: str,
    series_uid: str,
    deid_salt: str,
    conn: multiprocessing.connection.Connection,
    parent_pid: int,
    zip_limits: ZipLimits,
    folders: list[str],
) -> None:
    """Worker process body: convert the study's files (named as uploaded), report.

    Its temporary files (a zip's extracted members among them) go to its job's scratch
    folder in the store, removed with it, never to the system's temporary folder; zips
    are extracted within the server's ``zip_limits``.
    """
    _die_with_parent(parent_pid)
    # The reader's per-file warnings (a repeated slice, an assumed pixel size) name the
    # uploaded files, often named after the patient, and would reach the server's log
    # through the stderr this process shares; what they say is in the model's report.
    logging.getLogger("holo.imaging").setLevel(logging.ERROR)
    try:
        # Imported here: the parent never loads VTK.
        from holo.imaging.sources import NamedFile, set_default_zip_limits
        from holo.pipeline import convert

        tempfile.tempdir = str(Path(output).parent)
        set_default_zip_limits(zip_limits)

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
        public = public_message(err.message, files, [*folders, str(Path(output).parent)])
        conn.send(("failed", public))
    except Exception as err:
        # The scratch folder is in the store: a full disk fails the writes of the volume,
        # the meshes or the GLB with ENOSPC, which the user must hear as such.
        full = disk_full(err, folders[0]) if folders else None
        if full is not None:
            conn.send(("failed", full.message))
            return
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
    zip_limits
        What a study's zip may expand to when a worker extracts it.
    node
        This node's name in the jobs it claims (default ``host-pid``).
    lease_s
        How long a claim holds unless renewed (:data:`DEFAULT_LEASE_S`).
    """

    def __init__(
        self,
        store: Store,
        *,
        workers: int = 1,
        deid_salt: str,
        audit: Auditor = NO_AUDIT,
        zip_limits: ZipLimits | None = None,
        node: str = "",
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self._store = store
        self._zip_limits = zip_limits or ZipLimits()
        self._salt = deid_salt
        self._audit = audit
        self.node = node or f"{socket.gethostname()}-{os.getpid()}"
        self._lease_s = lease_s
        # Nodes sharing the catalog take over each other's jobs and see each other's
        # progress only in the catalog; one node has every job in memory.
        self._shared = store.shared
        self._poll_s = SHARED_POLL_S if self._shared else None
        self._workers = max(1, workers)
        # Set when a job is queued here or a worker is freed: the claimer looks again.
        self._wake = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        # Waits on workers (a pipe's recv, a process's join) block a thread for as long as a
        # conversion runs; in asyncio.to_thread's default pool they would hold the threads
        # that every RPC's store calls need. A running job needs at most two at once (the
        # relay of its progress, and the wait for its process to exit).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            2 * self._workers, thread_name_prefix="holo-jobs"
        )
        self._context = multiprocessing.get_context("spawn")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, str] = {}
        self._processes: dict[str, BaseProcess] = {}
        self._latest: dict[str, JobRecord] = {}
        # Jobs that failed when their failure could not be written (a full disk: SQLite
        # cannot write either). Watchers and readers see the failure from here, and
        # _record_held writes it once the store takes writes again.
        self._held: dict[str, JobRecord] = {}
        self._recorder: asyncio.Task[None] | None = None
        # One event per watched job, set (and replaced) on each change. Weak values: an
        # event lives while a watcher holds it, so watched jobs that finished leave nothing.
        self._changed: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    @property
    def running(self) -> int:
        """How many conversions run on this node now."""
        return len(self._tasks)

    def run(self) -> None:
        """Start claiming queued jobs (the server calls it once it serves; :meth:`start`
        does too). Idempotent."""
        if self._claimer is None and not self._closed:
            self._claimer = asyncio.create_task(self._claim_loop(), name="job claimer")

    async def _claim_loop(self) -> None:
        failing = False
        # After the catalog comes back, the nodes that were running jobs renew their leases
        # within a second (_renew); until then, their expired leases are not taken over.
        takeover_after = 0.0
        while not self._closed:
            self._wake.clear()  # before looking: a wake-up meanwhile is not lost
            wait = self._poll_s
            if len(self._tasks) < self._workers:
                job = None
                try:
                    job = await asyncio.to_thread(
                        self._store.claim_job,
                        node=self.node,
                        lease_s=self._lease_s,
                        take_over=self._shared and time.monotonic() >= takeover_after,
                    )
                except UnavailableError as err:
                    if not failing:  # once per outage, not once a second
                        logger.warning("cannot claim jobs until the store answers: %s", err)
                    failing, wait = True, _RETRY_S
                except Exception:
                    logger.exception("claiming a job failed")
                    wait = _RETRY_S  # a full disk, say: look again, even on one node
                else:
                    if failing:
                        logger.warning("claiming jobs again: the store answers")
                        takeover_after = time.monotonic() + 2 * _RETRY_S
                    failing = False
                if job is not None and self._closed:  # claimed as the node stops
                    await self._give_back(job.job_id, job.lease)
                elif job is not None:
                    self._leases[job.job_id] = job.lease
                    task = asyncio.create_task(self._run(job), name=f"job {job.job_id}")
                    # A callback, not a `finally` in _run: a task cancelled before its
                    # first step never enters _run's body, and its worker slot must still
                    # be given back.
                    task.add_done_callback(functools.partial(self._forget, job.job_id))
                    self._tasks[job.job_id] = task
                    self._publish(job)
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

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
            self._store.new_job,
            study_id=study_id,
            case_id=case_id,
            preset=preset,
            series_uid=series_uid,
            subject=subject,
        )
        # Audited before it is queued: no node can start a conversion that is not in the
        # trail (a refused audit write refuses the call, and nothing was queued). A crash in
        # between leaves a record of a conversion that never ran, never the other way round.
        await self._write_audit("conversion_started", job, subject, preset=preset)
        job = await asyncio.to_thread(self._store.queue_job, job)
        self._publish(job)
        self.run()
        self._wake.set()
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
        """The latest state: in memory while the job is live (or its failure is not yet
        written), else from the store."""
        latest = self._latest.get(job_id) or self._held.get(job_id)
        if latest is not None:
            return latest
        return await asyncio.to_thread(self._store.get_job, job_id)

    async def list(self, case_id: str) -> list[JobRecord]:
        """The case's jobs, newest first, each in its latest state (as :meth:`get`)."""
        jobs = await asyncio.to_thread(self._store.list_jobs, case_id)
        return [self._latest.get(j.job_id) or self._held.get(j.job_id) or j for j in jobs]

    async def watch(self, job_id: str) -> AsyncIterator[JobRecord]:
        """The job's state now, then each change (coalesced) until a final state.

        A job another node runs changes only in the catalog, which is read again every
        :data:`SHARED_POLL_S` (stage changes; fractions stay on the node that runs it).
        """
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self._poll_s)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; a finished one is returned as it is.

        A job running on another node is cancelled in the catalog; that node sees it at
        its next lease renewal (a third of the lease) and stops its worker.
        """
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

    async def _run(self, job: JobRecord) -> None:
        """Convert a claimed job, renewing its lease meanwhile; its time on this node is
        counted by outcome (:data:`holo.metrics.JOB_DURATION`)."""
        renewing = asyncio.create_task(self._renew(job), name=f"lease of {job.job_id}")
        started, outcome = time.monotonic(), "failed"
        try:
            outcome = await self._convert(job)
        except asyncio.CancelledError:
            outcome = "cancelled"  # cancel(), close() or a lost lease has recorded the state
        except LeaseLostError as err:  # cancelled, or taken over: nothing more to record
            outcome = "lost"
            logger.info("job %s stopped on this node: %s", job.job_id, err)
        except DiskFullError as err:
            # Publishing the model (or recording progress) met a full disk: the job fails
            # saying so, and the model it replaces is untouched (publication is atomic).
            logger.warning("job %s failed: %s", job.job_id, err.message)
            await self._record_failure(job, err.message)
        except UnavailableError as err:
            # The store went away mid-job (its files, a model's upload): not the study's
            # fault. Nodes sharing the store hand it back for a later try; one node says so.
            logger.warning("job %s stopped: %s", job.job_id, err)
            if self._shared:
                outcome = "handed_back"
                await self._give_back(job.job_id, job.lease)
            else:
                await self._record_failure(job, err.message)
        except Exception:  # the server must not lose a job to a bug silently
            ref = secrets.token_hex(4)
            logger.exception("job %s failed (ref %s)", job.job_id, ref)
            await self._record_failure(job, f"internal error (ref {ref}); see the server log")
        finally:
            renewing.cancel()
            metrics.JOB_DURATION.labels(outcome).observe(time.monotonic() - started)

    async def _record_failure(self, job: JobRecord, message: str) -> None:
        """Mark the job failed, unless it was cancelled or taken over meanwhile.

        A store that cannot write it (a full disk, the catalog down) leaves it to the lease
        when nodes share the catalog: another node takes the job over. One node holds the
        failure in memory instead, so that watchers see it now (a job left running would
        keep their WatchJob open for ever), and writes it once the store takes writes
        (:meth:`_record_held`); a server stopped before then marks it failed at its next
        start, as every job it was running.
        """
        try:
            await self._update(job.job_id, state="failed", message=message, lease=job.lease)
        except (InvalidRequestError, LeaseLostError):
            pass
        except Exception as err:
            logger.warning("job %s: could not record its failure: %s", job.job_id, err)
            if not self._shared:
                self._hold_failure(job, message)

    def _hold_failure(self, job: JobRecord, message: str) -> None:
        latest = self._latest.get(job.job_id, job)
        failed = dataclasses.replace(
            latest, state="failed", message=message, finished_unix_ns=time.time_ns()
        )
        self._held[job.job_id] = failed
        self._publish(failed)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_held(), name="held job failures")

    async def _record_held(self) -> None:
        """Write the held failures, trying every :data:`_RETRY_S` until the store takes
        them (a full disk: until space is freed)."""
        while self._held:
            for job_id, failed in list(self._held.items()):
                try:
                    await self._update(
                        job_id, state="failed", message=failed.message, lease=failed.lease
                    )
                except (InvalidRequestError, LeaseLostError):
                    pass  # final already (cancelled meanwhile): that state stays
                except Exception:
                    continue  # still full: try again
                logger.info("job %s: its failure is recorded", job_id)
                self._held.pop(job_id, None)
            if self._held:
                await asyncio.sleep(_RETRY_S)

    async def _give_back(self, job_id: str, lease: str) -> None:
        """Queue a job of this node's again (nodes sharing the store), if the store answers;
        otherwise its lease runs out and another node takes it over."""
        try:
            self._publish(await asyncio.to_thread(self._store.release_job, job_id, lease))
        except LeaseLostError:
            pass  # finished, cancelled or taken over meanwhile: that state stays
        except Exception as err:
            logger.warning("job %s: could not hand it back: %s", job_id, err)

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        """A job's task ended: its worker slot is free, and its watchers read the store."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("job %s: its task failed", job_id, exc_info=task.exception())
        self._tasks.pop(job_id, None)
        self._leases.pop(job_id, None)
        self._processes.pop(job_id, None)
        self._latest.pop(job_id, None)
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()  # however the task ended, a watcher reads the state as stored
        self._wake.set()

    async def _renew(self, job: JobRecord) -> None:
        """Renew the job's lease every third of it (every second while the store does not
        answer, so a node renews as soon as it is back); stop the conversion if the lease
        is lost (taken over by another node, or cancelled from one)."""
        every = self._lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self._store.renew_job, job.job_id, job.lease, self._lease_s)
                every = self._lease_s / 3
            except LeaseLostError as err:
                logger.warning("job %s: %s; stopping its worker", job.job_id, err)
                task = self._tasks.get(job.job_id)
                if task is not None:
                    task.cancel()  # its clean-up terminates the worker and removes its folder
                return
            except Exception as err:  # the catalog down: the lease may run out meanwhile
                logger.warning("job %s: cannot renew its lease: %s", job.job_id, err)
                every = min(self._lease_s / 3, _RETRY_S)

    async def _convert(self, job: JobRecord) -> str:
        """Run the conversion in a worker process; its outcome: succeeded, failed or lost."""
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
                os.getpid(),
                self._zip_limits,
                [str(self._store.root), tempfile.gettempdir()],
            ),
            name=f"holo-{job.job_id}",
            daemon=True,
        )
        worker = _Worker(process, receive, tmp)
        try:
            process.start()
            send.close()
            self._processes[job.job_id] = process
            outcome = await self._pump(job, worker)
            await loop.run_in_executor(self._executor, process.join, _JOIN_S)
            if outcome[0] == "done":
                published = await self._publish_model(job, output, outcome[1])
                return "succeeded" if published else "lost"
            await self._record_failure(job, outcome[1])
            return "failed"
        finally:
            self._processes.pop(job.job_id, None)
            send.close()
            # The worker is stopped and waited for before its folder goes (a terminated one
            # may still be writing there). Shielded: a second cancellation must not drop
            # the clean-up from the executor's queue; it then finishes on its own.
            await asyncio.shield(loop.run_in_executor(self._executor, worker.stop_and_remove))

    async def _pump(self, job: JobRecord, worker: _Worker) -> tuple[str, Any]:
        """Relay the child's progress until it reports an outcome or dies."""
        job_id = job.job_id
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
                try:
                    await self._update(job_id, stage=name, fraction=fraction, lease=job.lease)
                except (UnavailableError, DiskFullError):  # progress only: it goes on
                    self._publish(
                        dataclasses.replace(self._latest[job_id], stage=name, fraction=fraction)
                    )
            else:
                self._publish(dataclasses.replace(self._latest[job_id], fraction=float(fraction)))

    async def _publish_model(self, job: JobRecord, output: Path, report: dict[str, Any]) -> bool:
        """Publish the model; False if the job was cancelled or taken over meanwhile."""
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
                lease=job.lease,
            )
        except LeaseLostError as err:  # cancelled (or taken over) while it finished
            logger.info("job %s: its model was not published: %s", job.job_id, err)
            return False
        # add_model marked the job succeeded in the same transaction: publish it as stored.
        self._publish(await asyncio.to_thread(self._store.get_job, job.job_id))
        try:
            await self._write_audit("model_published", job, job.subject, model_id=model.model_id)
        except Exception:  # the model is published; a lost record must at least be loud
            logger.exception("model %s: the audit record could not be written", model.model_id)
        return True

    async def close(self) -> None:
        """Stop every job: workers are terminated and this node's jobs recorded as failed,
        queued ones too; or, when nodes share the catalog, its running jobs handed back to
        the queue for another node (a job that finished meanwhile keeps its state). Later
        :meth:`start` calls are refused."""
        self._closed = True
        self._wake.set()
        if self._claimer is not None:  # a claim under way ends, and is handed back
            await asyncio.gather(self._claimer, return_exceptions=True)
        live = list(self._tasks.items())
        for _, task in live:
            task.cancel()
        for process in list(self._processes.values()):
            process.terminate()
        for job_id, _ in live:
            lease = self._leases.get(job_id)
            if self._shared and lease is not None:
                await self._give_back(job_id, lease)
                continue
            try:
                await self._update(job_id, state="failed", message=STOPPED_MESSAGE)
            except (InvalidRequestError, LeaseLostError):
                pass  # finished (or cancelled) meanwhile: a final state stays
            except Exception:  # the other jobs must still be stopped
                logger.exception("job %s: could not record that the server stopped", job_id)
        if not self._shared:  # one node: the queued jobs were this node's, and it stops
            try:
                stopped = await asyncio.to_thread(
                    self._store.fail_interrupted_jobs, STOPPED_MESSAGE
                )
                for job_id in stopped:
                    self._publish(await asyncio.to_thread(self._store.get_job, job_id))
            except Exception:
                logger.exception("could not record that the queued jobs stopped")
        # Each task's clean-up waits for its worker to exit and removes its folder.
        await asyncio.gather(*(task for _, task in live), return_exceptions=True)
        if self._recorder is not None:  # the held failures: the next start marks them
            self._recorder.cancel()
            await asyncio.gather(self._recorder, return_exceptions=True)
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
