"""holo.v1 PACS messages <-> :mod:`holo.pacs`: nodes, search results, pulls.

Only radiologists reach these (the PACS service's methods are theirs alone): the search
results and pulls carry the patient's identity and original UIDs as the PACS has them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from holo.v1 import asset_pb2, pacs_pb2
from holo.wire.asset import JOB_STATE_VALUES

if TYPE_CHECKING:
    from holo.pacs import PacsNode, StudyMatch
    from holo.pacs.pulls import PullState

__all__ = ["node_message", "pull_message", "study_match_message"]


def node_message(node: PacsNode) -> pacs_pb2.PacsNode:
    """A node as the API shows it: name and protocols, never credentials."""
    return pacs_pb2.PacsNode(
        name=node.name,
        dicomweb=node.dicomweb,
        ae_title=node.ae_title,
        host=node.host,
        port=node.port,
    )


def study_match_message(match: StudyMatch) -> pacs_pb2.PacsStudy:
    return pacs_pb2.PacsStudy(
        study_instance_uid=match.study_uid,
        patient_id=match.patient_id,
        patient_name=match.patient_name,
        study_date=match.date,
        study_description=match.description,
        accession_number=match.accession,
        modalities=list(match.modalities),
        series=match.series,
        instances=match.instances,
    )


def pull_message(state: PullState) -> pacs_pb2.Pull:
    return pacs_pb2.Pull(
        pull_id=pacs_pb2.PullId(value=state.pull_id),
        case_id=state.case_id,
        node=state.node,
        study_instance_uid=state.study_uid,
        series_instance_uid=state.series_uid,
        state=JOB_STATE_VALUES[state.state],
        stage=state.stage,
        via=state.via,
        instances_total=state.total,
        instances_held=state.held,
        instances_fetched=state.fetched,
        bytes=state.bytes,
        message=state.message,
        study_id=asset_pb2.StudyId(value=state.study_id),
        job_id=asset_pb2.JobId(value=state.job_id),
        created_unix_ns=state.created_unix_ns,
        finished_unix_ns=state.finished_unix_ns,
    )
