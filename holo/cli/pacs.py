"""``holo pacs``: the PACS nodes a server knows, checked, searched, pulled from, pushed to
(issue 19).

With ``--data DIR`` (the operator, on the server's machine): ``add NAME ...`` keeps a node,
``nodes`` lists them (passwords never shown), ``remove NAME`` forgets one, ``echo NAME``
checks each protocol it has, ``find NAME`` searches it (a table, or ``--json``), ``pull
NAME STUDY_UID -o FOLDER`` fetches a study into a folder, resumably, and ``push NAME
MODEL_ID`` sends a model of the store back to its study (STL instances and a
Segmentation), audited.

Without ``--data``, through a running server as a radiologist (``--server``, ``--token``):
``nodes``, ``find``, ``pull NAME STUDY_UID [--convert PRESET]`` into the token's case (the
server's ``StartPull``, with progress), and ``push NAME MODEL_ID``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from holo.cli.output import table
from holo.errors import InvalidRequestError

__all__ = ["add_commands"]


def _nodes(args: argparse.Namespace) -> Any:
    from holo.pacs import PacsNodes

    if args.data is None:
        raise InvalidRequestError(
            f"holo pacs {args.pacs_command} works on a server's data folder: give --data DIR "
            "(on the server's machine)"
        )
    return PacsNodes(args.data)


def _remote(args: argparse.Namespace) -> bool:
    """Through a running server (no --data): the radiologist's way."""
    return args.data is None


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
    if _remote(args):
        from holo.cli.remote import connect
        from holo.wire.common import message_dict

        with connect(args) as client:
            served = client.pacs_nodes()
        if args.json:
            print(json.dumps([message_dict(n) for n in served]))
            return 0
        rows = [
            [n.name, n.dicomweb or "-", f"{n.ae_title}@{n.host}:{n.port}" if n.ae_title else "-"]
            for n in served
        ]
        print(table(rows, ["node", "DICOMweb", "DIMSE"]) if rows else "no PACS nodes yet")
        return 0
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
    from holo.pacs import StudyMatch, find_studies

    if _remote(args):
        from holo.cli.remote import connect

        with connect(args) as client:
            served = client.find_pacs_studies(
                args.name,
                patient_id=args.patient_id or "",
                accession_number=args.accession or "",
                modality=args.modality or "",
                study_date=args.date or "",
                limit=args.limit,
            )
        found = [
            StudyMatch(s.study_instance_uid, s.patient_id, s.patient_name, s.study_date,
                       s.study_description, s.accession_number, tuple(s.modalities),
                       s.series, s.instances)
            for s in served
        ]  # fmt: skip
    else:
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

    if _remote(args):
        return _pull_into_server(args)
    if args.output is None:
        raise InvalidRequestError(
            "holo pacs --data DIR pull needs -o FOLDER (without --data the study goes into "
            "the server's store)"
        )
    if args.convert:
        raise InvalidRequestError(
            "--convert is for pulls into the server's store; convert the folder with "
            f"holo convert {args.output}"
        )
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


def _pull_into_server(args: argparse.Namespace) -> int:
    from holo.cli.output import ByteBar
    from holo.cli.remote import connect, follow_job
    from holo.wire.asset import JOB_STATE_NAMES
    from holo.wire.common import message_dict

    if args.output is not None or args.via != "auto" or args.listen:
        raise InvalidRequestError(
            "-o, --via and --listen are for pulls into a folder (with --data DIR); the "
            "server pulls by WADO-RS where the node has DICOMweb, else by C-GET"
        )
    bar = ByteBar(not args.json, "pull", unit=" instances")
    with connect(args) as client:
        try:
            started = client.start_pull(
                args.name, args.study_uid, series_uid=args.series or "",
                convert_preset=args.convert or "",
            )  # fmt: skip

            def show(p: Any) -> None:
                if p.instances_total:
                    bar(p.instances_held + p.instances_fetched, p.instances_total)

            pull = client.wait_pull(started.pull_id.value, on_update=show)
        finally:
            bar.close()
        out: dict[str, Any] = {"pull": message_dict(pull)}
        if pull.job_id.value:
            out["job"] = message_dict(follow_job(client, pull.job_id.value, show=not args.json))
    state = JOB_STATE_NAMES.get(pull.state, "?")
    if args.json:
        print(json.dumps(out))
    else:
        print(f"pull {pull.pull_id.value}: {state} {pull.message}")
        if "job" in out:
            job = out["job"]
            print(f"job {job['job_id']['value']}: {job.get('state')} {job.get('message', '')}")
    converted = "job" not in out or out["job"].get("state") == "JOB_STATE_SUCCEEDED"
    return 0 if state == "succeeded" and converted else 1


def _cmd_push(args: argparse.Namespace) -> int:
    if _remote(args):
        from holo.cli.remote import connect
        from holo.wire.common import message_dict

        with connect(args) as client:
            reply = client.push_model(args.name, args.model_id, via=args.via or "")
        if args.json:
            print(json.dumps(message_dict(reply)))
        else:
            print(
                f"model {args.model_id} pushed to {args.name} by {reply.via}: "
                f"{len(reply.stl_sop_instance_uids)} STL instance(s) in series "
                f"{reply.stl_series_instance_uid}, a Segmentation in series "
                f"{reply.seg_series_instance_uid}"
            )
        return 0
    result = _push_from_store(args)
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "sop_uids": list(result.sop_uids)}))
    else:
        print(
            f"model {result.model_id} pushed to {result.node} by {result.protocol}: "
            f"{len(result.sop_uids) - 1} STL instance(s) in series {result.stl_series_uid}, "
            f"a Segmentation in series {result.seg_series_uid} (study {result.study_uid})"
        )
    return 0


def _push_from_store(args: argparse.Namespace) -> Any:
    import asyncio
    import getpass

    from holo.audit import AuditLog
    from holo.pacs import push_audited
    from holo.store import Store

    node = _nodes(args).get(args.name)
    # Operator level (the store's files, no token): the audit subject is the account that
    # ran the command, as a server records a token's subject.
    subject = f"cli:{getpass.getuser()}"
    store = Store(args.data)
    try:
        log = AuditLog(store.audit_table() or Path(args.data) / "audit.jsonl")
        try:
            return asyncio.run(
                push_audited(
                    log, asyncio.to_thread, store, node, args.model_id,
                    via=args.via or "", calling_ae=args.calling_ae, subject=subject,
                )
            )  # fmt: skip
        finally:
            log.close()
    finally:
        store.close()


def add_commands(sub: Any) -> None:
    """Register ``pacs`` on the ``holo`` parser."""
    from holo.cli.remote import connection_options
    from holo.pacs.pull import VIA
    from holo.pacs.push import PROTOCOLS
    from holo.pacs.query import DEFAULT_CALLING_AE
    from segmentation.presets import PRESET_NAMES

    p = sub.add_parser(
        "pacs",
        help="PACS nodes: kept, checked, searched, pulled from, pushed to (--data DIR), or "
        "through a running server as a radiologist (without --data)",
    )
    p.add_argument(
        "--data",
        type=Path,
        help="the server's data folder (the operator's commands); without it, find, pull, "
        "push and nodes go through the server (--server, --token)",
    )
    connection_options(p)
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
            q.add_argument("-o", "--output", type=Path, help="the folder (with --data)")
            q.add_argument(
                "--convert",
                choices=PRESET_NAMES,
                metavar="PRESET",
                help="without --data: convert the pulled study with this preset "
                f"({', '.join(PRESET_NAMES)})",
            )
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
