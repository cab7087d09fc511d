"""Pulls into the server's store: a study fetched from a PACS node becomes a study of a case.

The radiologist's ``StartPull`` lands here (:class:`PullRunner`). A pull fetches the study
(or one series) with :func:`holo.pacs.pull.pull_study` into a folder of its own,
``<data>/pacs-pulls/<case>/<key>``, where ``key`` is a hash of the node, study and series:
the same pull started again (after the node went away, a cancel, a server restart) finds
the instances already there and fetches only the rest. When every instance is held, the
files become a study exactly as an upload's do (:func:`holo.pacs.intake.store_study`); the
folder goes, and a conversion is queued if asked (:class:`holo.jobs.JobRunner`).

Pulls live in this process: they are watched on the node that runs them, and a server
stopped mid-pull loses the pull but not its files (the next pull of the study resumes).
A stop (or a cancel) while the files become a study takes effect between two files, in the
storing thread: the study is made whole or not at all, and a pull reported cancelled never
made one (its folder stays for the next pull).
Folders nobody resumed for ``max_age_s`` (a day, as unfinished uploads) are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from holo.audit import NO_AUDIT, Auditor
from holo.errors import (
    HoloError,
    InvalidRequestError,
    NotFoundError,
    PreconditionError,
    quote_id,
)
from holo.imaging.sources import ZipLimits
from holo.pacs.intake import store_study
from holo.pacs.nodes import PacsNode, PacsNodes
from holo.pacs.pull import check_uid, pull_study
from holo.pacs.query import DEFAULT_CALLING_AE
from holo.store import Store
from holo.store.records import new_id
from segmentation.presets import PRESET_NAMES

__all__ = ["PULL_STATES", "PullRunner", "PullState"]

logger = logging.getLogger(__name__)

#: The states a pull passes through; the last three are final (the job states).
PULL_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
_FINAL = frozenset({"succeeded", "failed", "cancelled"})

#: Pulls fetching at once: each holds a connection to a PACS and writes to the disk; two
#: keep a 2-core server's conversions and RPCs responsive, and a PACS rarely serves one
#: client faster over more associations. The rest wait, queued.
MAX_RUNNING = 2
#: Finished pulls kept for watching and listing, per server: the newest 200.
_KEEP_FINISHED = 200
_SWEEP_EVERY_S = 3600.0
#: A folder of pulled files size is re-counted at most this often while fetching (s).
_BYTES_EVERY_S = 1.0


class _CancelledError(Exception):
    """The radiologist cancelled the pull: raised out of the fetch's progress callback."""


@dataclass(frozen=True)
class PullState:
    """One pull as it stands (see ``holo.v1.Pull`` for the fields' meaning)."""

    pull_id: str
    case_id: str
    node: str
    study_uid: str
    series_uid: str
    preset: str  # convert with this preset once stored; "" for none
    subject: str
    state: str = "queued"
    stage: str = ""
    via: str = ""
    total: int = 0
    held: int = 0
    fetched: int = 0
    bytes: int = 0
    message: str = ""
    study_id: str = ""
    job_id: str = ""
    created_unix_ns: int = 0
    finished_unix_ns: int = 0

    @property
    def final(self) -> bool:
        return self.state in _FINAL


@dataclass
class _Pull:
    state: PullState
    # Set at the next change of ``state``, then replaced: each watcher waits on the event
    # of the state it last sent (as JobRunner.watch does), so no watcher consumes another's.
    changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


class PullRunner:
    """Runs the server's pulls; see the module.

    Parameters
    ----------
    store
        The server's store: pulled studies become its studies.
    nodes
        The PACS nodes (read again at every pull: the operator edits them while it runs).
    root
        The pulls' folders (``<data>/pacs-pulls``).
    salt
        The server's de-identification key (the studies' public summaries).
    convert
        Queues a conversion: ``await convert(study_id=, case_id=, preset=, series_uid=,
        subject=)`` returning the job's id (the server's :class:`holo.jobs.JobRunner`).
    run_heavy
        Runs header indexing off the event loop, taking turns with uploads' (the server's
        :class:`holo.server.fairpool.FairPool`); default a thread.
    """

    def __init__(
        self,
        store: Store,
        nodes: PacsNodes,
        root: Path,
        *,
        salt: str,
        convert: Callable[..., Any],
        audit: Auditor = NO_AUDIT,
        run_heavy: Callable[..., Any] | None = None,
        zip_limits: ZipLimits | None = None,
        calling_ae: str = DEFAULT_CALLING_AE,
        max_age_s: float = 24 * 3600.0,
    ) -> None:
        self._store = store
        self._nodes = nodes
        self._root = Path(root)
        self._salt = salt
        self._convert = convert
        self._audit = audit
        self._run_heavy = run_heavy
        self._limits = zip_limits or ZipLimits()
        self._calling_ae = calling_ae
        self._max_age_s = max_age_s
        self._pulls: dict[str, _Pull] = {}
        self._swept = 0.0  # time.monotonic() of the last sweep of abandoned folders
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._closed = False

    # -- the RPCs' side ----------------------------------------------------------------

    async def start(
        self,
        *,
        case_id: str,
        node: str,
        study_uid: str,
        series_uid: str = "",
        preset: str = "",
        subject: str = "",
    ) -> PullState:
        """Queue a pull (or return the same pull running already); returns at once.

        Raises
        ------
        NotFoundError
            No node of that name.
        InvalidRequestError
            A malformed UID or an unknown preset.
        PreconditionError
            The server is stopping.
        """
        if self._closed:
            raise PreconditionError("the server is stopping; start the pull again later")
        known = await asyncio.to_thread(self._nodes.get, node)  # NotFoundError names it
        check_uid(study_uid, "study")
        if series_uid:
            check_uid(series_uid, "series")
        if preset and preset not in PRESET_NAMES:
            raise InvalidRequestError(
                f"unknown preset {quote_id(preset)}; choose one of {', '.join(PRESET_NAMES)}, "
                "or none to pull only"
            )
        for pull in self._pulls.values():
            s = pull.state
            if not s.final and (s.case_id, s.node, s.study_uid, s.series_uid) == (
                case_id, known.name, study_uid, series_uid,
            ):  # fmt: skip
                return s
        state = PullState(
            pull_id=new_id("pl_"),
            case_id=case_id,
            node=known.name,
            study_uid=study_uid,
            series_uid=series_uid,
            preset=preset,
            subject=subject,
            created_unix_ns=time.time_ns(),
        )
        pull = _Pull(state)
        self._pulls[state.pull_id] = pull
        self._forget_old()
        if time.monotonic() - self._swept > min(_SWEEP_EVERY_S, self._max_age_s / 4):
            await self.expire()
        pull.task = asyncio.create_task(self._run(pull, known), name=f"pull {state.pull_id}")
        logger.info("pull %s queued: case %s, node %s", state.pull_id, case_id, known.name)
        return state

    def get(self, pull_id: str) -> PullState:
        """The pull as it stands (:class:`NotFoundError` if this node has none)."""
        pull = self._pulls.get(pull_id)
        if pull is None:
            raise NotFoundError("pull", pull_id)
        return pull.state

    async def watch(self, pull_id: str) -> AsyncIterator[PullState]:
        """The pull now, then each change until its final state.

        Coalesced per watcher: a watcher slower than the changes (a client that reads
        slowly, its HTTP/2 window full) is sent the newest state when it is ready, never a
        backlog; what it holds is one state. Each waits on the event of the state it sent:
        an event shared and cleared by every watcher let one consume another's wake-up.
        """
        pull = self._pulls.get(pull_id)
        if pull is None:
            raise NotFoundError("pull", pull_id)
        while True:
            # The event before the state: a change made while it is sent sets this event.
            changed = pull.changed
            state = pull.state
            yield state
            if state.final:
                return
            await changed.wait()

    async def cancel(self, pull_id: str) -> PullState:
        """Stop a pull; a finished one is returned as it is. What arrived is kept."""
        pull = self._pulls.get(pull_id)
        if pull is None:
            raise NotFoundError("pull", pull_id)
        if not pull.state.final:
            pull.cancel.set()
            if pull.state.state == "queued" and pull.task is not None:
                pull.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(pull.task) if pull.task is not None else None
        return pull.state

    async def close(self) -> None:
        """Stop every pull (their files stay for the next pull of the same study).

        A pull queued, listing or fetching is cancelled at once: its thread may be waiting
        on the network for up to the node's timeout, and it writes only to the pull's
        folder, so it is not waited for. A pull storing (or queueing its conversion) is
        waited for: its thread sees the cancel between two files (one file's copy), and the
        task must not end while that thread may still make the study."""
        self._closed = True
        tasks = []
        for pull in self._pulls.values():
            pull.cancel.set()
            if pull.task is None or pull.task.done():
                continue
            if pull.state.stage not in ("store", "convert"):
                pull.task.cancel()
            tasks.append(pull.task)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def expire(self) -> int:
        """Delete pull folders nothing was written to for ``max_age_s``; how many went.

        The server calls it as it starts; a pull started later sweeps again if the last
        sweep is an hour old (a quarter of a shorter maximum age), as uploads expire."""
        self._swept = time.monotonic()
        return await asyncio.to_thread(self._expire)

    # -- the pull itself ---------------------------------------------------------------

    def _set(self, pull: _Pull, **changes: Any) -> None:
        pull.state = dataclasses.replace(pull.state, **changes)
        changed, pull.changed = pull.changed, asyncio.Event()
        changed.set()  # wakes the watchers of the states before this one

    def _folder(self, state: PullState) -> Path:
        key = hashlib.sha256(
            f"{state.node}\n{state.study_uid}\n{state.series_uid}".encode()
        ).hexdigest()[:24]
        return self._root / state.case_id / key

    async def _run(self, pull: _Pull, node: PacsNode) -> None:
        state = pull.state
        try:
            async with self._slots:
                if pull.cancel.is_set():
                    raise _CancelledError
                await self._fetch(pull, node)
                self._set(pull, stage="store")
                study_id = await self._store_study(pull)
                self._set(pull, study_id=study_id)
                await self._audit.record(
                    "study_pulled", state.subject, state.case_id,
                    study_id=study_id, pacs_node=state.node,
                )  # fmt: skip
                job_id = ""
                if state.preset:
                    self._set(pull, stage="convert")
                    job_id = await self._convert(
                        study_id=study_id,
                        case_id=state.case_id,
                        preset=state.preset,
                        series_uid=state.series_uid,
                        subject=state.subject,
                    )
                self._finish(
                    pull, "succeeded",
                    f"study {study_id}: {pull.state.total} instance(s)"
                    + (f"; conversion job {job_id} queued" if job_id else ""),
                    job_id=job_id,
                )  # fmt: skip
        except (_CancelledError, asyncio.CancelledError):
            self._finish(
                pull, "cancelled",
                "cancelled; what arrived is kept and the next pull of this study resumes",
            )  # fmt: skip
        except HoloError as err:
            self._finish(pull, "failed", str(err))
        except Exception:
            logger.exception("pull %s failed", state.pull_id)
            self._finish(pull, "failed", "the pull failed on the server (see its log); try again")

    def _finish(self, pull: _Pull, outcome: str, message: str, **more: Any) -> None:
        self._set(
            pull,
            state=outcome,
            stage="done" if outcome == "succeeded" else pull.state.stage,
            message=message,
            finished_unix_ns=time.time_ns(),
            **more,
        )
        logger.info("pull %s %s", pull.state.pull_id, outcome)

    async def _fetch(self, pull: _Pull, node: PacsNode) -> None:
        state = pull.state
        folder = self._folder(state)
        await asyncio.to_thread(folder.mkdir, mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(folder.touch)  # resumed: not expired while in use
        held = await asyncio.to_thread(_count_files, folder)
        self._set(
            pull,
            state="running",
            stage="list",
            via="dicomweb" if node.dicomweb else "c-get",
            held=held[0],
            bytes=held[1],
        )
        loop = asyncio.get_running_loop()
        counted = [time.monotonic()]

        def progress(done: int, total: int) -> None:  # in the fetching thread
            if pull.cancel.is_set():
                raise _CancelledError
            changes: dict[str, Any] = {"stage": "fetch", "total": total, "fetched": done - held[0]}
            now = time.monotonic()
            if now - counted[0] >= _BYTES_EVERY_S or done == total:
                counted[0] = now
                changes["bytes"] = _count_files(folder)[1]
            loop.call_soon_threadsafe(lambda: self._set(pull, **changes))

        result = await asyncio.to_thread(
            pull_study,
            node,
            state.study_uid,
            folder,
            series_uid=state.series_uid,
            calling_ae=self._calling_ae,
            progress=progress,
        )
        self._set(
            pull,
            stage="fetch",
            total=result.listed,
            held=result.already_held,
            fetched=result.fetched,
            bytes=(await asyncio.to_thread(_count_files, folder))[1],
        )

    async def _store_study(self, pull: _Pull) -> str:
        state = pull.state
        folder = self._folder(state)
        files = await asyncio.to_thread(lambda: sorted(folder.rglob("*.dcm")))

        def check(done: int, total: int) -> None:  # in the storing thread, between files
            if pull.cancel.is_set():
                raise _CancelledError

        work = functools.partial(
            store_study,
            self._store,
            case_id=state.case_id,
            files=files,
            subject=state.subject,
            salt=self._salt,
            limits=self._limits,
            progress=check,
        )
        if self._run_heavy is not None:
            record = await self._run_heavy(state.subject, work)
        else:
            record = await asyncio.to_thread(work)
        # Stored by content: the pulled copies are no longer needed.
        await asyncio.to_thread(shutil.rmtree, folder, True)
        return str(record.study_id)

    def _forget_old(self) -> None:
        finished = [k for k, p in self._pulls.items() if p.state.final]
        for key in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._pulls[key]

    def _expire(self) -> int:
        if not self._root.is_dir():
            return 0
        busy = {self._folder(p.state) for p in self._pulls.values() if not p.state.final}
        cutoff = time.time() - self._max_age_s
        gone = 0
        for case in self._root.iterdir():
            for folder in case.iterdir() if case.is_dir() else ():
                newest = max(
                    (p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime
                )
                if folder not in busy and max(newest, folder.stat().st_mtime) < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    gone += 1
        if gone:
            logger.info("deleted %d abandoned pull folder(s)", gone)
        return gone


def _count_files(folder: Path) -> tuple[int, int]:
    """How many instance files the folder holds, and their bytes."""
    sizes = [p.stat().st_size for p in folder.rglob("*.dcm")]
    return len(sizes), sum(sizes)
