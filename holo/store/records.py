"""The records the store hands out, and the rules for the ids and names inside them.

Records are frozen snapshots: changing a stored object means calling a :class:`~holo.store.Store`
method, which returns a fresh record. Ids are opaque strings of ``[A-Za-z0-9._-]``, 1-128
characters; the store makes them as a short prefix plus a random token.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

from holo.errors import InvalidRequestError, LeaseLostError, NotFoundError, quote_id

__all__ = [
    "INTERRUPTED_MESSAGE",
    "JOB_STATES",
    "TERMINAL_JOB_STATES",
    "JobRecord",
    "ModelRecord",
    "StudyRecord",
    "UploadRecord",
    "advance_job",
    "check_case_id",
    "check_id",
    "check_json",
    "check_lease",
    "check_name",
    "check_sha256",
    "check_text",
    "is_sha256",
    "job_changes",
    "new_id",
    "release_job",
    "take_job",
]

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})
INTERRUPTED_MESSAGE = "interrupted by a server restart; start the conversion again"

_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_MAX = 255


@dataclass(frozen=True)
class UploadRecord:
    """One file being uploaded in chunks, or already complete.

    Attributes
    ----------
    upload_id
        The upload's id (``up_...``).
    case_id
        The case the file belongs to.
    name
        The file name the client gave (a base name, no folders).
    size_bytes
        The size announced at the start; the upload is complete when ``offset`` reaches it.
    sha256
        The announced SHA-256 of the whole file, lowercase hex; also the blob's name.
    offset
        Bytes received and durably stored; the next chunk must start here.
    complete
        True once the content is in the blob store (hash checked).
    subject
        Who started the upload (the token's subject), for the audit trail.
    created_unix_ns
        When the upload was started, nanoseconds since the Unix epoch.
    """

    upload_id: str
    case_id: str
    name: str
    size_bytes: int
    sha256: str
    offset: int
    complete: bool
    subject: str
    created_unix_ns: int


@dataclass(frozen=True)
class StudyRecord:
    """A set of complete uploads registered together as one DICOM study.

    Attributes
    ----------
    study_id
        The study's id (``st_...``).
    case_id
        The case the study belongs to.
    files
        ``(name, blob sha256)`` pairs in upload order.
    size_bytes
        Sum of the files' sizes.
    summary
        JSON-able description given by the caller (series list, UIDs, patient identity).
    created_unix_ns
        When the study was registered, nanoseconds since the Unix epoch.
    """

    study_id: str
    case_id: str
    files: list[tuple[str, str]]
    size_bytes: int
    summary: dict[str, Any]
    created_unix_ns: int


@dataclass(frozen=True)
class JobRecord:
    """One conversion of a study into a hologram model.

    Attributes
    ----------
    job_id
        The job's id (``job_...``).
    study_id, case_id
        The study converted, and its case.
    preset
        The conversion preset's name.
    series_uid
        The (0020,000E) SeriesInstanceUID converted; empty for "let the pipeline choose".
    state
        One of ``"queued"``, ``"running"``, ``"succeeded"``, ``"failed"``, ``"cancelled"``.
    stage, fraction, message
        Progress: the pipeline stage, the fraction done (0-1) and a human-readable line.
    model_id
        The model made, once the job succeeded; else empty.
    created_unix_ns, finished_unix_ns
        When the job was created and when it reached a final state (0 until then),
        nanoseconds since the Unix epoch.
    subject
        Who started it (the token's subject), for the audit trail of whichever node runs it.
    node, lease, lease_until_unix_ns
        The node running the job, the token of its claim and when the claim runs out
        unless renewed (the catalog's clock, ns since the epoch); empty and 0 while queued.
        Only the holder of ``lease`` may advance or publish the job (:func:`check_lease`).
    attempts
        How many times a node has started the job (a node that stopped with it running
        does not give it back, so a job that kills its node is not started for ever).
    """

    job_id: str
    study_id: str
    case_id: str
    preset: str
    series_uid: str
    state: str
    stage: str
    fraction: float
    message: str
    model_id: str
    created_unix_ns: int
    finished_unix_ns: int
    subject: str = ""
    node: str = ""
    lease: str = ""
    lease_until_unix_ns: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class ModelRecord:
    """A hologram model (a GLB blob) made from a study.

    Attributes
    ----------
    model_id
        The model's id (``mdl_...``).
    case_id, study_id, job_id
        Where the model came from.
    sha256, size_bytes
        The GLB blob's name and size.
    preset
        The conversion preset used.
    manifest
        JSON-able description given by the caller (parts, LODs, units).
    created_unix_ns
        When the model was stored, nanoseconds since the Unix epoch.
    """

    model_id: str
    case_id: str
    study_id: str
    job_id: str
    sha256: str
    size_bytes: int
    preset: str
    manifest: dict[str, Any]
    created_unix_ns: int


def new_id(prefix: str) -> str:
    """Return a fresh random id: ``prefix`` plus 16 characters of ``[A-Za-z0-9_-]`` (96 bits)."""
    return prefix + secrets.token_urlsafe(12)


def check_id(kind: str, ident: object) -> str:
    """Return ``ident`` if it has the id format, else raise :class:`NotFoundError`.

    A malformed id names nothing, so it is "not found" rather than "invalid": the caller
    learns nothing about which ids exist.
    """
    if not isinstance(ident, str) or not _ID.fullmatch(ident):
        raise NotFoundError(kind, str(ident))
    return ident


def check_case_id(case_id: object) -> str:
    """Return ``case_id`` if it has the id format, else raise :class:`InvalidRequestError`."""
    if not isinstance(case_id, str) or not _ID.fullmatch(case_id):
        raise InvalidRequestError(
            f"case id {quote_id(case_id)} is malformed; use 1-128 characters of A-Z a-z 0-9 . _ -"
        )
    return case_id


def is_sha256(text: object) -> TypeGuard[str]:
    """Tell whether ``text`` is a SHA-256 digest in lowercase hex (64 characters)."""
    return isinstance(text, str) and _SHA256.fullmatch(text) is not None


def check_sha256(text: object) -> str:
    """Return ``text`` if it is a lowercase-hex SHA-256, else raise :class:`InvalidRequestError`."""
    if not is_sha256(text):
        raise InvalidRequestError(
            f"sha256 {quote_id(text)} is malformed; send the file's SHA-256 as 64 lowercase "
            "hex digits"
        )
    return text


def check_name(name: object) -> str:
    """Return ``name`` if it is a safe file base name, else raise :class:`InvalidRequestError`.

    Safe means 1-255 characters, no ``/``, ``\\`` or NUL, and not ``.`` or ``..``, so the
    name can never reach outside a folder when a study is unpacked.
    """
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= _NAME_MAX
        or any(c in name for c in "/\\\0")
        or name in {".", ".."}
    ):
        raise InvalidRequestError(
            f"file name {quote_id(name)} is not allowed; send a base name of 1-{_NAME_MAX} "
            "characters without '/', '\\' or NUL"
        )
    return name


def check_text(value: object, what: str, *, required: bool = False) -> str:
    """Return ``value`` if it is a string (non-empty if ``required``), else raise."""
    if not isinstance(value, str) or (required and not value):
        kind = "non-empty string" if required else "string"
        raise InvalidRequestError(f"{what} must be a {kind}, not {quote_id(value)}")
    return value


def check_json(value: object, what: str) -> dict[str, Any]:
    """Return a dict as it will read back from the database (tuples become lists).

    Raises
    ------
    InvalidRequestError
        If ``value`` is not a dict or does not serialise as strict JSON (no NaN).
    """
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        loaded: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise InvalidRequestError(f"{what} is not JSON-serialisable ({err}); fix it") from err
    return loaded


def job_changes(
    job_id: str,
    *,
    state: str | None,
    stage: str | None,
    fraction: float | None,
    message: str | None,
) -> dict[str, Any]:
    """Check a job update's fields and return the ones given, as :class:`JobRecord` fields.

    A final state (succeeded, failed, cancelled) also sets ``finished_unix_ns`` to now.

    Raises
    ------
    InvalidRequestError
        An unknown state, a fraction outside [0, 1] (or NaN), or a text field that is not one.
    """
    changes: dict[str, Any] = {}
    if state is not None:
        if state not in JOB_STATES:
            raise InvalidRequestError(
                f"job {job_id}: unknown state {state!r}; use one of {', '.join(JOB_STATES)}"
            )
        changes["state"] = state
        if state in TERMINAL_JOB_STATES:
            changes["finished_unix_ns"] = time.time_ns()
    if stage is not None:
        changes["stage"] = check_text(stage, "stage")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise InvalidRequestError(f"job {job_id}: fraction {fraction!r} is not a number")
        if not 0.0 <= fraction <= 1.0:  # also refuses NaN
            raise InvalidRequestError(f"job {job_id}: fraction {fraction!r} is not in [0, 1]")
        changes["fraction"] = float(fraction)
    if message is not None:
        changes["message"] = check_text(message, "message")
    return changes


def advance_job(job: JobRecord, changes: dict[str, Any]) -> JobRecord:
    """Return ``job`` with ``changes`` applied; a finished job is final.

    Raises
    ------
    InvalidRequestError
        If the job has already succeeded, failed or been cancelled.
    """
    if job.state in TERMINAL_JOB_STATES:
        raise InvalidRequestError(
            f"job {job.job_id} is already {job.state} and cannot change; start a new "
            "conversion instead"
        )
    return dataclasses.replace(job, **changes)


def take_job(
    job: JobRecord, *, node: str, now_ns: int, lease_ns: int, max_attempts: int
) -> JobRecord:
    """Return ``job`` claimed by ``node``: running, with a fresh lease until ``now_ns +
    lease_ns``; or failed, if it was running when its node stopped and has been started
    ``max_attempts`` times already (a study that crashes every node it reaches).

    ``job`` is queued, or running with its lease run out (its node stopped or lost the
    catalog); the catalog chose it.
    """
    if job.state == "running" and job.attempts >= max_attempts:
        return dataclasses.replace(
            job,
            state="failed",
            message=f"the conversion stopped with its node {job.attempts} times; see the "
            "nodes' logs, then start it again",
            finished_unix_ns=time.time_ns(),
            lease="",
            lease_until_unix_ns=0,
        )
    return dataclasses.replace(
        job,
        state="running",
        stage="read",
        fraction=0.0,
        # Not the other node's name: host names are the hospital's business, not a client's.
        message="taken over from a node that stopped renewing its claim"
        if job.state == "running"
        else "",
        node=node,
        lease=secrets.token_hex(8),
        lease_until_unix_ns=now_ns + lease_ns,
        attempts=job.attempts + 1,
    )


def check_lease(job: JobRecord, lease: str) -> JobRecord:
    """Return ``job`` if ``lease`` still holds it; else raise :class:`LeaseLostError`.

    A node whose lease ran out (it stalled, or lost the catalog for longer than the lease)
    may find its job taken over by another node, or finished; it must then stop, and
    publish nothing: this check is what keeps a model from being published twice.
    """
    if job.state in TERMINAL_JOB_STATES:
        raise LeaseLostError(f"job {job.job_id} is already {job.state}", job_id=job.job_id)
    if job.lease != lease:
        raise LeaseLostError(
            f"job {job.job_id} was taken over by node {job.node}", job_id=job.job_id
        )  # a server-side message (logged), never a client's
    return job


def release_job(job: JobRecord) -> JobRecord:
    """Return ``job`` queued again, as a node stopping gracefully hands it back (the
    attempt it made does not count: nothing failed)."""
    return dataclasses.replace(
        job,
        state="queued",
        stage="",
        fraction=0.0,
        message="",
        node="",
        lease="",
        lease_until_unix_ns=0,
        attempts=max(0, job.attempts - 1),
    )
