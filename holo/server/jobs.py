"""Conversion jobs: a bounded pool of worker processes, progress fanned out to watchers.

Each job runs :func:`holo.pipeline.convert` in its own spawned process, not a thread: the
pipeline holds the GIL for much of segmentation and cleanup (numpy/scipy in Python loops,
trimesh), which would stall the event loop's streams, and a process can be cancelled (it is
terminated) and cannot take the server down if a native library crashes on a bad study.
At most ``workers`` run at once; the rest wait queued. Progress comes back over a pipe;
the latest state of a job is kept in memory for watchers (latest value, never a queue) and
stage changes are written to the store, so a restart reports interrupted jobs as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import tempfile
import traceback
from collections.abc import AsyncIterator, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from holo.errors import HoloError, InvalidRequestError
from holo.export.manifest import model_manifest
from holo.store import JobRecord, Store

__all__ = ["TERMINAL", "JobRunner"]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
PRESETS = ("bone", "skin", "soft_tissue")


def link_files(files: Sequence[tuple[str, str | Path]], folder: Path) -> list[Path]:
    """Symlinks to a study's blobs under their upload names (zips are recognised by name
    and content, and messages name the user's files, not blob hashes)."""
    links: list[Path] = []
    for i, (name, blob) in enumerate(files):
        link = folder / (name if not (folder / name).exists() else f"{i:05d}_{name}")
        os.symlink(blob, link)
        links.append(link)
    return links


def _convert_in_child(
    files: list[tuple[str, str]],
    output: str,
    preset: str,
    series_uid: str,
    deid_salt: str,
    conn: multiprocessing.connection.Connection,
) -> None:
    """Worker process body: link the study's blobs under their names, convert, report."""
    try:
        from holo.pipeline import convert  # imported here: the parent never loads VTK

        with tempfile.TemporaryDirectory(prefix="holo-job-") as folder:
            report = convert(
                list(link_files(files, Path(folder))),
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
    """Runs conversion jobs for a server; call :meth:`close` on shutdown."""

    def __init__(self, store: Store, *, workers: int = 1, deid_salt: str) -> None:
        self._store = store
        self._salt = deid_salt
        self._slots = asyncio.Semaphore(max(1, workers))
        self._context = multiprocessing.get_context("spawn")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._processes: dict[str, BaseProcess] = {}
        self._latest: dict[str, JobRecord] = {}
        self._changed: dict[str, asyncio.Event] = {}

    async def start(
        self, *, study_id: str, case_id: str, preset: str, series_uid: str
    ) -> JobRecord:
        """Queue a conversion; returns the queued job at once."""
        preset = preset or "bone"
        if preset not in PRESETS:
            raise InvalidRequestError(
                f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        job = await asyncio.to_thread(
            self._store.create_job,
            study_id=study_id,
            case_id=case_id,
            preset=preset,
            series_uid=series_uid,
        )
        self._publish(job)
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"job {job.job_id}")
        return job

    def _publish(self, job: JobRecord) -> None:
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
        job = await self.get(job_id)
        yield job
        while job.state not in TERMINAL:
            event = self._changed.setdefault(job_id, asyncio.Event())
            await event.wait()
            job = await self.get(job_id)
            yield job

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; a finished one is returned as it is."""
        job = await self.get(job_id)
        if job.state in TERMINAL:
            return job
        process = self._processes.get(job_id)
        if process is not None:
            process.terminate()
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
        try:
            return await self._update(job_id, state="cancelled", message="cancelled by request")
        except InvalidRequestError:  # it finished meanwhile: a final state stays as it is
            return await asyncio.to_thread(self._store.get_job, job_id)

    async def _run(self, job: JobRecord) -> None:
        try:
            async with self._slots:
                await self._convert(job)
        except asyncio.CancelledError:
            pass  # cancel() has recorded the state
        except Exception as err:  # the server must not lose a job to a bug silently
            logger.exception("job %s failed", job.job_id)
            with contextlib.suppress(InvalidRequestError):  # unless cancelled meanwhile
                await self._update(job.job_id, state="failed", message=f"internal error: {err}")
        finally:
            self._tasks.pop(job.job_id, None)
            self._processes.pop(job.job_id, None)
            self._latest.pop(job.job_id, None)

    async def _convert(self, job: JobRecord) -> None:
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
        await self._update(job.job_id, state="running", stage="read", fraction=0.0)
        process.start()
        send.close()
        self._processes[job.job_id] = process
        try:
            outcome = await self._pump(job.job_id, receive)
            await asyncio.to_thread(process.join)
            if outcome[0] == "done":
                await self._publish_model(job, output, outcome[1])
            else:
                await self._update(job.job_id, state="failed", message=outcome[1])
        finally:
            receive.close()
            if process.is_alive():
                process.terminate()
            for leftover in tmp.iterdir():
                leftover.unlink(missing_ok=True)
            tmp.rmdir()

    async def _pump(
        self, job_id: str, receive: multiprocessing.connection.Connection
    ) -> tuple[str, Any]:
        """Relay the child's progress until it reports an outcome or dies."""
        stage = ""
        while True:
            try:
                message = await asyncio.to_thread(self._receive, receive)
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

    @staticmethod
    def _receive(conn: multiprocessing.connection.Connection) -> Any:
        return conn.recv()

    async def _publish_model(self, job: JobRecord, output: Path, report: dict[str, Any]) -> None:
        data = await asyncio.to_thread(output.read_bytes)
        manifest = model_manifest(data)
        manifest["report"] = {k: report[k] for k in ("structures", "seconds", "notes")}
        sha = await asyncio.to_thread(self._store.put_blob_file, output)
        model = await asyncio.to_thread(
            self._store.add_model,
            case_id=job.case_id,
            study_id=job.study_id,
            job_id=job.job_id,
            sha256=sha,
            preset="radiograph" if report["structures"][0]["name"] == "radiograph" else job.preset,
            manifest=manifest,
        )
        await self._update(
            job.job_id,
            state="succeeded",
            stage="done",
            fraction=1.0,
            model_id=model.model_id,
            message=f"model {model.model_id}: {manifest['size_bytes']} bytes",
        )

    async def close(self) -> None:
        """Stop every job (terminating workers); their state becomes failed."""
        for job_id, process in list(self._processes.items()):
            process.terminate()
            await self._update(job_id, state="failed", message="the server stopped; start it again")
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
