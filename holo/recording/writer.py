"""A recording written off the event loop: the recorder's calls queue for one thread.

Muxing a frame and flushing a line are short, but a disk can stall for seconds (a full
disk, a network volume); the session's loop must never wait on it. The queue is bounded
by calls (:data:`MAX_PENDING_WRITES`) and by frame bytes (:data:`MAX_PENDING_BYTES`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from holo.errors import disk_full
from holo.recording.files import Recorder

__all__ = ["MAX_PENDING_BYTES", "MAX_PENDING_WRITES", "RecordingWriter"]

logger = logging.getLogger(__name__)

MAX_PENDING_WRITES = 65536  # recorder calls queued for the disk (events and values too)
MAX_PENDING_BYTES = 256 << 20  # frame bytes queued: 25 s of 80 Mbit/s, minutes of a scope


class RecordingWriter:
    """A recording written off the event loop: calls queue (bounded) for one thread.

    A track whose write fails (its file cannot grow: a full disk; or a stream the muxer
    refuses) stops being recorded, the others go on: ``failed_tracks`` says why. A frame
    the queue has no room for (a disk slower than the video) is dropped, and that track
    resumes at its next keyframe (``gaps`` counts these). An event or value that cannot be
    written stops the whole recording (``failed``). What was written stays readable
    (Matroska, flushed line by line). A full disk is said so in holo's words, naming
    ``data_folder`` by its name only (these reasons reach the client and the audit log)."""

    def __init__(
        self, recorder: Recorder, name: str, data_folder: str | os.PathLike[str] = ""
    ) -> None:
        self.recorder = recorder
        self._data_folder = data_folder
        self.failed = ""
        self.failed_tracks: dict[str, str] = {}
        self.gaps = 0
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue(
            MAX_PENDING_WRITES
        )
        self._bytes = 0  # frame bytes queued
        self._bytes_lock = threading.Lock()
        self._resume_at_key: set[str] = set()  # tracks that lost a frame to a full queue
        self._thread = threading.Thread(target=self._run, name=f"record {name}", daemon=True)
        self._thread.start()

    def put(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        if method == "write_frame":
            track_id, frame = args
            if track_id in self.failed_tracks:
                return
            if track_id in self._resume_at_key:
                if not frame.keyframe:
                    return
                self._resume_at_key.discard(track_id)
            with self._bytes_lock:
                room = self._bytes + len(frame.data) <= MAX_PENDING_BYTES
                if room:
                    self._bytes += len(frame.data)
            if not room or self._queue.full():
                if room:
                    with self._bytes_lock:
                        self._bytes -= len(frame.data)
                self.gaps += 1
                self._resume_at_key.add(track_id)
                logger.warning(
                    "recording %s: the disk does not keep up; track %s resumes at its next "
                    "keyframe",
                    self._thread.name,
                    track_id,
                )
                return
        try:
            self._queue.put_nowait((method, args))
        except queue.Full:
            self._fail("the disk does not keep up with the session's events; it stopped")

    def _fail(self, why: str) -> None:
        if not self.failed:
            self.failed = why
            logger.error("recording %s failed: %s", self._thread.name, why)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            method, args = item
            track_id = args[0] if method in ("add_track", "write_frame") else None
            if method == "write_frame":
                with self._bytes_lock:
                    self._bytes -= len(args[1].data)
            if self.failed or (track_id is not None and track_id in self.failed_tracks):
                continue
            try:
                getattr(self.recorder, method)(*args)
            except Exception as err:
                why = self._why(err)
                if track_id is None:
                    self._fail(why)
                else:  # this track only: the others, the events and values go on
                    self.failed_tracks[track_id] = why
                    logger.error(
                        "recording %s: track %s stopped: %s", self._thread.name, track_id, why
                    )

    def _why(self, err: Exception) -> str:
        full = disk_full(err, self._data_folder)
        return full.message if full is not None else str(err)

    def close(self, stopped_t_ns: int) -> None:
        """Drain what is queued, then finish the files (blocking: call it in a thread)."""
        self._queue.put(None)
        self._thread.join()
        try:
            self.recorder.close(stopped_t_ns)
        except Exception as err:
            self._fail(self._why(err))
