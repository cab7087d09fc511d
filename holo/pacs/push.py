"""Pushing a model back to a PACS node: its STL instances and its Segmentation (issue 19).

The objects are built by :func:`holo.pacs.objects.model_objects` (two new series in the
model's source study) and sent by STOW-RS where the node has DICOMweb (dicomweb-client),
else by C-STORE (pynetdicom). A node that is down, refuses a SOP class or an instance is
one :class:`~holo.errors.UnavailableError` naming the node and what to do; instances it
took are kept, and pushing again sends the same instances (the same UIDs), so the archive
ends up with one series each.

No gRPC here. :func:`push_audited` is how the server's RPC and the CLI push: the push is
audited before anything leaves (the patient's data go to another system, so the trail
never misses one; a refused audit write refuses the push), and again if it fails, with
why.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from holo.audit import Auditor
from holo.errors import HoloError, InvalidRequestError, UnavailableError
from holo.pacs.nodes import PacsNode
from holo.pacs.objects import ModelObjects, model_objects
from holo.pacs.query import DEFAULT_CALLING_AE, dimse_association, web_client, web_unavailable
from holo.store import Store

__all__ = ["PROTOCOLS", "PushResult", "push_audited", "push_model"]

logger = logging.getLogger(__name__)

#: How a push may go: DICOMweb (STOW-RS) or DIMSE (C-STORE).
PROTOCOLS = ("dicomweb", "dimse")
# C-STORE statuses that mean stored (PS3.4 B.2.3): success, and the warnings "coerced",
# "elements discarded" and "does not match SOP class".
_STORED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class PushResult:
    """What a push sent, and where.

    Attributes
    ----------
    node, protocol
        The node's name and ``"STOW-RS"`` or ``"C-STORE"``.
    case_id, study_id, model_id
        The model pushed and where it came from (for the caller's audit record).
    study_uid
        The source study's StudyInstanceUID, which the new series belong to.
    stl_series_uid, seg_series_uid
        The new series: the STL instances (one per structure) and the Segmentation.
    sop_uids
        Every SOPInstanceUID sent: the STL instances, then the Segmentation.
    """

    node: str
    protocol: str
    case_id: str
    study_id: str
    model_id: str
    study_uid: str
    stl_series_uid: str
    seg_series_uid: str
    sop_uids: tuple[str, ...]


def _protocol(node: PacsNode, via: str) -> str:
    if via not in ("", *PROTOCOLS):
        raise InvalidRequestError(f"--via {via!r} is not one of {', '.join(PROTOCOLS)}")
    if via == "dicomweb" and not node.dicomweb:
        raise InvalidRequestError(
            f"PACS node {node.name} has no DICOMweb URL; push --via dimse, or give it one "
            "with holo pacs add --replace"
        )
    if via == "dimse" and not node.ae_title:
        raise InvalidRequestError(
            f"PACS node {node.name} has no AE title; push --via dicomweb, or give it one "
            "with holo pacs add --replace"
        )
    return via or ("dicomweb" if node.dicomweb else "dimse")


def push_model(
    store: Store,
    node: PacsNode,
    model_id: str,
    *,
    via: str = "",
    calling_ae: str = DEFAULT_CALLING_AE,
    subject: str = "",
) -> PushResult:
    """Send a model's STL instances and Segmentation to ``node``; see the module.

    Parameters
    ----------
    via
        ``"dicomweb"`` (STOW-RS) or ``"dimse"`` (C-STORE); default DICOMweb where the node
        has it.
    calling_ae
        holo's AE title for C-STORE.
    subject
        Who asked (a token's subject), for the log line; the caller audits.

    Raises
    ------
    NotFoundError
        No such model.
    InvalidRequestError
        A radiograph model, or a protocol the node does not have.
    UnavailableError
        The node does not answer, or refused an instance: run the push again.
    """
    protocol = _protocol(node, via)
    model = store.get_model(model_id)
    objects = model_objects(store, model_id)
    if protocol == "dicomweb":
        _stow(node, objects)
    else:
        _c_store(node, objects, calling_ae)
    sent = tuple(str(ds.SOPInstanceUID) for ds in objects.datasets)
    logger.info(
        "model %s pushed to PACS node %s by %s: %d instance(s), series %s and %s",
        model_id, node.name, subject or "-", len(sent), objects.stl_series_uid,
        objects.seg_series_uid,
    )  # fmt: skip
    return PushResult(
        node=node.name,
        protocol="STOW-RS" if protocol == "dicomweb" else "C-STORE",
        case_id=model.case_id,
        study_id=model.study_id,
        model_id=model_id,
        study_uid=objects.study_uid,
        stl_series_uid=objects.stl_series_uid,
        seg_series_uid=objects.seg_series_uid,
        sop_uids=sent,
    )


def _stow(node: PacsNode, objects: ModelObjects) -> None:
    try:
        reply = web_client(node).store_instances(
            objects.datasets, study_instance_uid=objects.study_uid
        )
    except Exception as err:  # requests' and dicomweb-client's own errors alike
        raise web_unavailable(node, err) from None
    failed = list(reply.get("FailedSOPSequence", []) if reply is not None else [])
    if failed:
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        raise UnavailableError(
            f"PACS node {node.name} refused {len(failed)} of {len(objects.datasets)} "
            f"instance(s) (STOW-RS failure reason {', '.join(reasons)}); ask its "
            "administrator whether it stores Encapsulated STL and Segmentation, then push again"
        )


def _c_store(node: PacsNode, objects: ModelObjects, calling_ae: str) -> None:
    classes = sorted({str(ds.SOPClassUID) for ds in objects.datasets})
    assoc = dimse_association(node, calling_ae, classes)
    try:
        accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
        refused = [uid for uid in classes if uid not in accepted]
        if refused:
            raise UnavailableError(
                f"PACS node {node.name} does not accept SOP class {', '.join(refused)} "
                f"({_class_names(refused)}); ask its administrator to allow it, or push "
                "--via dicomweb"
            )
        for ds in objects.datasets:
            _store_one(node, assoc, ds)
    finally:
        if assoc.is_established:
            assoc.release()


def _store_one(node: PacsNode, assoc: Any, ds: Any) -> None:
    status = assoc.send_c_store(ds) if assoc.is_established else None
    code = None if status is None else status.get("Status")
    if code is None:
        raise UnavailableError(
            f"PACS node {node.name} stopped answering mid-push; push again (it sends the "
            "same instances)"
        )
    if code not in _STORED:
        raise UnavailableError(
            f"PACS node {node.name} refused instance {ds.SOPInstanceUID} (C-STORE status "
            f"0x{code:04X}); ask its administrator, then push again"
        )


def _class_names(uids: list[str]) -> str:
    from pydicom.uid import UID

    return ", ".join(UID(uid).name for uid in uids)


async def push_audited(
    audit: Auditor,
    run: Callable[[Callable[[], PushResult]], Awaitable[PushResult]],
    store: Store,
    node: PacsNode,
    model_id: str,
    *,
    via: str = "",
    calling_ae: str = DEFAULT_CALLING_AE,
    subject: str = "",
) -> PushResult:
    """:func:`push_model`, audited: ``model_pushed`` before anything is sent, and
    ``model_push_failed`` (with the one-line reason) if it fails. ``run`` runs the blocking
    push off the event loop (reading the CT and segmenting it again takes seconds of CPU):
    the server's indexing pool, or a thread.

    Raises
    ------
    NotFoundError
        No such model (nothing is audited: nothing was about to leave).
    """
    model = store.get_model(model_id)
    about: dict[str, str | int] = {
        "model_id": model.model_id, "study_id": model.study_id, "pacs_node": node.name,
    }  # fmt: skip
    await audit.record("model_pushed", subject, model.case_id, **about)
    push = functools.partial(
        push_model, store, node, model.model_id, via=via, calling_ae=calling_ae, subject=subject
    )
    try:
        return await run(push)
    except HoloError as err:
        await audit.record("model_push_failed", subject, model.case_id, failed=str(err), **about)
        raise
