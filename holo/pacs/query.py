"""Checking and searching a PACS node: C-ECHO and a DICOMweb request; QIDO-RS or C-FIND.

DICOMweb goes through ``dicomweb-client`` (on ``requests``), DIMSE through ``pynetdicom``;
neither protocol is written here. A node that does not answer, refuses, or answers
something that is not DICOM is :class:`~holo.errors.UnavailableError` naming the node and
what to check, never a library's traceback. Search results carry patient identity: they
are for the radiologist who asked, and are not logged.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from holo.errors import InvalidRequestError, UnavailableError
from holo.extras import need
from holo.pacs.nodes import PacsNode

__all__ = ["DEFAULT_CALLING_AE", "StudyMatch", "echo", "find_studies"]

logger = logging.getLogger(__name__)

#: holo's AE title when it calls a node (a PACS usually allows known callers only).
DEFAULT_CALLING_AE = "HOLO"
#: Seconds a node gets to connect and answer: a PACS on the hospital LAN answers a C-ECHO
#: or a QIDO-RS search in well under a second; 20 s allows a busy archive's searches.
TIMEOUT_S = 20.0

# The study attributes asked for and shown (PS3.4 C.6.2.1.2, PS3.18 10.6.1.2).
_FIELDS = (
    "StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyDescription",
    "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)  # fmt: skip


@dataclass(frozen=True)
class StudyMatch:
    """One study a search found (empty where the node did not say)."""

    study_uid: str
    patient_id: str
    patient_name: str
    date: str
    description: str
    accession: str
    modalities: tuple[str, ...]
    series: int
    instances: int


def _session(node: PacsNode) -> Any:
    """A ``requests`` session for the node: its credentials and CA, and 2 quick retries."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    session.mount(node.dicomweb, HTTPAdapter(max_retries=Retry(total=2, backoff_factor=0.2)))
    if node.username:
        session.auth = (node.username, node.password)
    if node.ca_file:
        session.verify = node.ca_file
    return session


def web_client(node: PacsNode) -> Any:
    need("server", "dicomweb_client", feature="DICOMweb")
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(node.dicomweb, session=_session(node), timeout=TIMEOUT_S)
    # Its own retries back off exponentially over 5 attempts, half a minute for a node that
    # is simply down; a second attempt after 0.2 s is enough for a dropped connection.
    client.set_http_retry_params(max_attempts=2, wait_exponential_multiplier=200)
    return client


def web_unavailable(node: PacsNode, err: Exception) -> UnavailableError:
    import requests

    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        what = f"refused the credentials (HTTP {status}); check --username and --password"
    elif status is not None:
        what = f"answered HTTP {status}; check the --dicomweb URL"
    elif isinstance(err, requests.exceptions.SSLError):
        what = "could not be reached over TLS: its certificate is not trusted; give --ca"
    else:
        what = "does not answer; check that it runs and the URL"
    return UnavailableError(f"PACS node {node.name} ({node.dicomweb}) {what}")


def dimse_association(
    node: PacsNode,
    calling_ae: str,
    contexts: list[Any],
    *,
    roles: list[Any] | None = None,
    handlers: list[Any] | None = None,
) -> Any:
    """An established association with the node (pynetdicom), proposing ``contexts``
    (abstract syntaxes, or ``(abstract syntax, transfer syntaxes)`` pairs), with SCP/SCU
    ``roles`` and event ``handlers`` (for C-GET); else a one-line :class:`UnavailableError`
    saying whether it refused holo's AE title or did not answer."""
    need("server", "pynetdicom", feature="DIMSE (C-ECHO, C-FIND, C-GET)")
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    for context in contexts:
        if isinstance(context, tuple):  # (abstract syntax, transfer syntaxes)
            ae.add_requested_context(*context)
        else:
            ae.add_requested_context(context)
    assoc = ae.associate(
        node.host, node.port, ae_title=node.ae_title, ext_neg=roles, evt_handlers=handlers
    )
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise UnavailableError(
            f"PACS node {node.name} ({node.ae_title}@{node.host}:{node.port}) rejected holo "
            f"calling as {calling_ae}; ask its administrator to allow that AE title, or check "
            "--ae-title"
        )
    raise UnavailableError(
        f"PACS node {node.name} ({node.ae_title}@{node.host}:{node.port}) does not answer; "
        "check that it runs, its host and port"
    )


def end_association(assoc: Any, *, completed: bool) -> None:
    """Release an association whose exchange completed; abort one cut short.

    A release (A-RELEASE) is answered only once the node has finished what it was asked:
    mid C-GET or C-MOVE it first sends every remaining instance. holo no longer takes them
    then, so it waits for the ACSE timeout (:data:`TIMEOUT_S`): a server stopped by SIGTERM
    30 instances into the skull CT's 140 took 20.4 s to exit, over its 5 s grace. A pull
    cancelled, stopped or failed therefore ends with an A-ABORT (PS3.8 7.3), which the node
    acts on at once; what arrived is kept either way.
    """
    if not assoc.is_established:
        return
    if completed:
        assoc.release()
    else:
        assoc.abort()


def c_find(node: PacsNode, calling_ae: str, query: Any, what: str) -> Generator[Any, None, None]:
    """The identifiers a Study Root C-FIND of ``query`` matches, as the node sends them;
    ``what`` (a search, a listing) names the request in errors. Stopping early aborts the
    association."""
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind as find_model,
    )

    assoc = dimse_association(node, calling_ae, [find_model])
    try:
        for status, identifier in assoc.send_c_find(query, find_model):
            code = None if status is None else status.get("Status")
            if code is None:  # no answer in time, or the node ended the association
                raise UnavailableError(
                    f"PACS node {node.name} ended the {what} without an answer; it may not "
                    f"allow {calling_ae} to ask (ask its administrator), or it stopped"
                )
            if code in (0xFF00, 0xFF01) and identifier is not None:
                yield identifier
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise UnavailableError(
                    f"PACS node {node.name} refused the {what} (status 0x{code:04X})"
                )
    except GeneratorExit:
        assoc.abort()  # the caller has what it wanted: the rest is not waited for
        raise
    finally:
        if assoc.is_established:
            assoc.release()


def echo(node: PacsNode, calling_ae: str = DEFAULT_CALLING_AE) -> list[tuple[str, str]]:
    """Check each protocol the node has: ``[(protocol, "ok" or why not), ...]``."""
    results: list[tuple[str, str]] = []
    if node.dicomweb:
        try:
            web_client(node).search_for_studies(limit=1)
            results.append(("DICOMweb", "ok"))
        except Exception as err:  # requests' and dicomweb-client's own errors alike
            results.append(("DICOMweb", web_unavailable(node, err).message))
    if node.ae_title:
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        try:
            assoc = dimse_association(node, calling_ae, [Verification])
            try:
                status = assoc.send_c_echo()
            finally:
                assoc.release()
            ok = status is not None and status.get("Status") == 0
            results.append(("C-ECHO", "ok" if ok else f"PACS node {node.name} failed C-ECHO"))
        except UnavailableError as err:
            results.append(("C-ECHO", err.message))
    return results


def find_studies(
    node: PacsNode,
    *,
    patient_id: str = "",
    accession: str = "",
    modality: str = "",
    date: str = "",
    calling_ae: str = DEFAULT_CALLING_AE,
    limit: int = 200,
) -> list[StudyMatch]:
    """The node's studies matching every filter given (none: all, up to ``limit``).

    ``date`` is a DICOM date or range (``20240131``, ``20240101-20240131``). QIDO-RS where
    the node has DICOMweb, else C-FIND at study level (Study Root).
    """
    if date and not all(part.isdigit() and len(part) == 8 for part in date.split("-") if part):
        raise InvalidRequestError(
            f"--date {date!r} is not a DICOM date or range; write YYYYMMDD or YYYYMMDD-YYYYMMDD"
        )
    keys = {
        "PatientID": patient_id,
        "AccessionNumber": accession,
        "ModalitiesInStudy": modality,
        "StudyDate": date,
    }
    wanted = {k: v for k, v in keys.items() if v}
    if node.dicomweb:
        try:
            found = web_client(node).search_for_studies(
                search_filters=wanted, fields=list(_FIELDS), limit=limit
            )
        except Exception as err:
            raise web_unavailable(node, err) from None
        return [_match(_dataset_from_json(item)) for item in found]
    return _c_find(node, wanted, calling_ae, limit)


def _dataset_from_json(item: dict[str, Any]) -> Any:
    from pydicom import Dataset

    return Dataset.from_json(item)


def _c_find(
    node: PacsNode, wanted: dict[str, str], calling_ae: str, limit: int
) -> list[StudyMatch]:
    from pydicom import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for keyword in _FIELDS:
        setattr(query, keyword, wanted.get(keyword, ""))
    found: list[StudyMatch] = []
    matches = c_find(node, calling_ae, query, "search")
    for identifier in matches:
        found.append(_match(identifier))
        if len(found) >= limit:
            matches.close()
            break
    return found


def _match(ds: Any) -> StudyMatch:
    def text(keyword: str) -> str:
        value = ds.get(keyword, "")
        return "" if value is None else str(value)

    def number(keyword: str) -> int:
        try:
            return int(ds.get(keyword, 0) or 0)
        except (TypeError, ValueError):
            return 0

    modalities = ds.get("ModalitiesInStudy", "")
    listed = (
        tuple(str(m) for m in modalities)
        if not isinstance(modalities, str)
        else (tuple(m for m in modalities.split("\\") if m))
    )
    return StudyMatch(
        study_uid=text("StudyInstanceUID"),
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        date=text("StudyDate"),
        description=text("StudyDescription"),
        accession=text("AccessionNumber"),
        modalities=listed,
        series=number("NumberOfStudyRelatedSeries"),
        instances=number("NumberOfStudyRelatedInstances"),
    )
