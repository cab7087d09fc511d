"""``holo pacs``: the PACS nodes of a server's data folder, checked and searched (issue 19).

``holo pacs --data DIR add NAME ...`` keeps a node, ``nodes`` lists them (passwords never
shown), ``remove NAME`` forgets one, ``echo NAME`` checks each protocol it has, ``find
NAME`` searches it (a table, or ``--json``), ``pull NAME STUDY_UID -o FOLDER`` fetches a
study, resumably, and ``push NAME MODEL_ID`` sends a model back to its study (STL instances
and a Segmentation), recorded in the audit log.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from holo.cli.output import table

__all__ = ["add_commands"]


def _nodes(args: argparse.Namespace) -> Any:
    from holo.pacs import PacsNodes

    return PacsNodes(args.data)


def _cmd_add(args: argparse.Namespace) -> int:
    from holo.pacs import PacsNode

    node = PacsNode(
        name=args.name,
        dicomweb=args.dicomweb or "",
        ae_title=args.ae_title or "",
        host=args.host or "",
        port=args.port or 0,
        username=args.username or "",
        password=args.password or "",
        ca_file=str(Path(args.ca).resolve()) if args.ca else "",
    )
    added = _nodes(args).add(node, replace=args.replace)
    print(f"PACS node {added.name} kept in {_nodes(args).path}")
    return 0


def _cmd_nodes(args: argparse.Namespace) -> int:
    nodes = _nodes(args).list()
    if args.json:
        print(json.dumps([n.public() for n in nodes]))
        return 0
    rows = [
        [
            n.name,
            n.dicomweb or "-",
            f"{n.ae_title}@{n.host}:{n.port}" if n.ae_title else "-",
            n.username or "-",
        ]
        for n in nodes
    ]
    print(table(rows, ["node", "DICOMweb", "DIMSE", "user"]) if rows else "no PACS nodes yet")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    _nodes(args).remove(args.name)
    print(f"PACS node {args.name} removed")
    return 0


def _cmd_echo(args: argparse.Namespace) -> int:
    from holo.pacs import echo

    results = echo(_nodes(args).get(args.name), calling_ae=args.calling_ae)
    if args.json:
        print(json.dumps({protocol: outcome for protocol, outcome in results}))
    else:
        for protocol, outcome in results:
            print(f"{protocol}: {outcome}")
    return 0 if all(outcome == "ok" for _, outcome in results) else 1


def _cmd_find(args: argparse.Namespace) -> int:
    from holo.pacs import find_studies

    found = find_studies(
        _nodes(args).get(args.name),
        patient_id=args.patient_id or "",
        accession=args.accession or "",
        modality=args.modality or "",
        date=args.date or "",
        calling_ae=args.calling_ae,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in found]))
        return 0
    rows = [
        [s.study_uid, s.patient_id, s.date, "/".join(s.modalities), str(s.series),
         str(s.instances), s.description]
        for s in found
    ]  # fmt: skip
    header = ["study", "patient", "date", "modalities", "series", "instances", "description"]
    print(table(rows, header) if rows else "no study matches")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from holo.cli.output import ByteBar
    from holo.pacs import pull_study

    bar = ByteBar(not args.json, "pull", unit=" instances")
    try:
        result = pull_study(
            _nodes(args).get(args.name),
            args.study_uid,
            args.output,
            series_uid=args.series or "",
            calling_ae=args.calling_ae,
            progress=bar,
            via=args.via,
            move_listen=args.listen or "",
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "folder": str(result.folder)}))
    else:
        print(
            f"{result.folder}: {result.fetched} instance(s) fetched, {result.already_held} "
            f"already there, {result.listed} in all (holo convert {result.folder})"
        )
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from holo.audit import AuditLog
    from holo.pacs import push_model
    from holo.store import Store

    # Operator level (the store's files, no token): the audit subject is the account that
    # ran the command, as a server records a token's subject.
    subject = f"cli:{getpass.getuser()}"
    store = Store(args.data)
    try:
        result = push_model(
            store,
            _nodes(args).get(args.name),
            args.model_id,
            via=args.via or "",
            calling_ae=args.calling_ae,
            subject=subject,
        )
        log = AuditLog(store.audit_table() or Path(args.data) / "audit.jsonl")
        try:
            asyncio.run(
                log.record(
                    "model_pushed",
                    subject,
                    result.case_id,
                    model_id=result.model_id,
                    study_id=result.study_id,
                    pacs_node=result.node,
                )
            )
        finally:
            log.close()
    finally:
        store.close()
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "sop_uids": list(result.sop_uids)}))
    else:
        print(
            f"model {result.model_id} pushed to {result.node} by {result.protocol}: "
            f"{len(result.sop_uids) - 1} STL instance(s) in series {result.stl_series_uid}, "
            f"a Segmentation in series {result.seg_series_uid} (study {result.study_uid})"
        )
    return 0


def add_commands(sub: Any) -> None:
    """Register ``pacs`` on the ``holo`` parser."""
    from holo.pacs.pull import VIA
    from holo.pacs.push import PROTOCOLS
    from holo.pacs.query import DEFAULT_CALLING_AE

    p = sub.add_parser("pacs", help="the PACS nodes a server knows: add, list, check, search")
    p.add_argument("--data", type=Path, required=True, help="the server's data folder")
    pacs = p.add_subparsers(dest="pacs_command", required=True)

    q = pacs.add_parser("add", help="keep a PACS node (DICOMweb, DIMSE or both)")
    q.add_argument("name", help="what holo calls it")
    q.add_argument("--dicomweb", metavar="URL", help="its DICOMweb root, https://host/dicom-web")
    q.add_argument("--ae-title", help="its AE title (DIMSE)")
    q.add_argument("--host", help="its host (DIMSE)")
    q.add_argument("--port", type=int, help="its DICOM port (DIMSE)")
    q.add_argument("--username", help="DICOMweb user (HTTP basic)")
    q.add_argument("--password", help="DICOMweb password (kept in a 0600 file)")
    q.add_argument("--ca", help="the CA that signed its TLS certificate (PEM)")
    q.add_argument("--replace", action="store_true", help="replace a node of that name")
    q.set_defaults(func=_cmd_add)

    q = pacs.add_parser("nodes", help="list the PACS nodes (passwords are never shown)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_nodes)

    q = pacs.add_parser("remove", help="forget a PACS node")
    q.add_argument("name")
    q.set_defaults(func=_cmd_remove)

    for name, func, text in (
        ("echo", _cmd_echo, "check a node: a DICOMweb search and a C-ECHO, as it has them"),
        ("find", _cmd_find, "search a node's studies (QIDO-RS, or C-FIND without DICOMweb)"),
        (
            "pull",
            _cmd_pull,
            "fetch a study into a folder (WADO-RS, C-GET or C-MOVE); run it again to resume",
        ),
        (
            "push",
            _cmd_push,
            "send a model back to its study: STL per structure and a Segmentation "
            "(STOW-RS, or C-STORE)",
        ),
    ):
        q = pacs.add_parser(name, help=text)
        q.add_argument("name")
        flags = ("--calling-ae", "--ae-title") if name == "pull" else ("--calling-ae",)
        q.add_argument(*flags, dest="calling_ae", default=DEFAULT_CALLING_AE,
                       help=f"holo's AE title (default {DEFAULT_CALLING_AE})")  # fmt: skip
        q.add_argument("--json", action="store_true")
        if name == "find":
            q.add_argument("--patient-id")
            q.add_argument("--accession")
            q.add_argument("--modality", help="e.g. CT")
            q.add_argument("--date", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
            q.add_argument("--limit", type=int, default=200, help="at most this many (200)")
        if name == "pull":
            q.add_argument("study_uid", help="the StudyInstanceUID (holo pacs find shows it)")
            q.add_argument("--series", help="only this SeriesInstanceUID")
            q.add_argument("-o", "--output", type=Path, required=True, help="the folder")
            q.add_argument(
                "--via",
                choices=VIA,
                default="auto",
                help="auto (default): WADO-RS where the node has DICOMweb, else C-GET; c-move: "
                "the node sends to holo's AE title, received on --listen",
            )
            q.add_argument(
                "--listen",
                metavar="HOST:PORT",
                help="with --via c-move: where holo receives for the pull (the address the "
                "node has for holo's AE title)",
            )
        if name == "push":
            q.add_argument("model_id", help="the model (holo models lists them)")
            q.add_argument("--via", choices=PROTOCOLS,
                           help="dicomweb (STOW-RS) or dimse (C-STORE); default DICOMweb "
                           "where the node has it")  # fmt: skip
        q.set_defaults(func=func)
