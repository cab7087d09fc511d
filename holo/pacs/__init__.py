"""The hospital's PACS: the nodes holo knows, checked and searched (issue 19).

Nodes are kept in ``<data>/pacs-nodes.json`` (:mod:`holo.pacs.nodes`); each speaks
DICOMweb, DIMSE or both. :func:`echo` checks a node, :func:`find_studies` searches it
(QIDO-RS where it has DICOMweb, C-FIND otherwise), :func:`pull_study` fetches a study into
a folder, resumably (WADO-RS, C-GET or C-MOVE), ``holo serve --dicom-listen`` receives
studies a node sends (:mod:`holo.pacs.receive`), and :func:`push_model` sends a model back
to its study as Encapsulated STL and a Segmentation (STOW-RS, or C-STORE;
:mod:`holo.pacs.objects` builds them), through the libraries made for this:
``dicomweb-client``, ``pynetdicom`` and ``highdicom`` (the ``server`` extra)::

    from holo.pacs import PacsNodes, find_studies

    node = PacsNodes("/srv/holo").get("archive")
    for study in find_studies(node, patient_id="12345", modality="CT"):
        print(study.study_uid, study.date, study.description)
"""

from holo.pacs.nodes import PacsNode, PacsNodes
from holo.pacs.objects import ModelObjects, model_objects
from holo.pacs.pull import PullResult, pull_study
from holo.pacs.push import PushResult, push_audited, push_model
from holo.pacs.query import StudyMatch, echo, find_studies

__all__ = [
    "ModelObjects",
    "PacsNode",
    "PacsNodes",
    "PullResult",
    "PushResult",
    "StudyMatch",
    "echo",
    "find_studies",
    "model_objects",
    "pull_study",
    "push_audited",
    "push_model",
]
