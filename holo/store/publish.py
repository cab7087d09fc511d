"""Publishing a model: a finished GLB becomes a model of its study, its job succeeded.

One function for the job runner (after a conversion) and for tests and benchmarks that
need models without converting: the manifest is read from the GLB
(:func:`holo.export.manifest.model_manifest`), the bytes stored once, and the model
recorded with its job marked succeeded in one transaction (:meth:`Store.add_model`), so a
job cancelled meanwhile publishes nothing.
"""

from __future__ import annotations

from typing import Any

from holo.export.manifest import model_manifest
from holo.store.records import ModelRecord
from holo.store.store import Store

__all__ = ["publish_model"]


def publish_model(
    store: Store,
    glb: bytes,
    *,
    case_id: str,
    study_id: str,
    job_id: str,
    preset: str,
    report: dict[str, Any] | None = None,
    lease: str | None = None,
) -> ModelRecord:
    """Store ``glb`` as the model of ``study_id`` made by ``job_id``; blocks (it hashes and
    walks the GLB, and writes): call it in a thread from the event loop.

    ``report`` (the conversion's :meth:`~holo.pipeline.ConversionReport.as_dict`) adds its
    structures, stage times and notes to the manifest.

    Raises
    ------
    InvalidRequestError
        The job is final already (cancelled or failed meanwhile): nothing is published.
    LeaseLostError
        ``lease`` (the worker's claim) no longer holds the job: nothing is published.
    PipelineError
        ``glb`` is not a GLB.
    """
    manifest = model_manifest(glb)
    if report is not None:
        manifest["report"] = {k: report[k] for k in ("structures", "seconds", "notes")}
    return store.add_model(
        case_id=case_id,
        study_id=study_id,
        job_id=job_id,
        sha256=store.put_blob(glb),
        preset=preset,
        manifest=manifest,
        lease=lease,
    )
