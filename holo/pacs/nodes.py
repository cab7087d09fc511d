"""The PACS nodes a server knows: ``<data>/pacs-nodes.json``, private to the server's user.

A node has a name, and a DICOMweb base URL, or an AE title with host and port (DIMSE), or
both; optionally credentials for DICOMweb (HTTP basic) and the CA of its TLS certificate.
The file holds credentials, so it is 0600 and written atomically (temporary file, fsync,
rename): a crash leaves the old list or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from holo.atomic import atomic_path
from holo.errors import InvalidRequestError, NotFoundError

__all__ = ["PacsNode", "PacsNodes", "check_ae_title"]

_FILE = "pacs-nodes.json"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# PS3.5 8.2: an AE title is 1-16 characters of the default repertoire, no backslash or
# control characters; leading and trailing spaces are not significant.
_AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")


def check_ae_title(title: str, flag: str) -> str:
    """``title`` if it is an AE title, else :class:`InvalidRequestError` naming ``flag``."""
    if not _AE_TITLE.fullmatch(title) or not title.strip():
        raise InvalidRequestError(
            f"{flag} {title!r} is not an AE title; give 1-16 printable ASCII characters "
            "without a backslash"
        )
    return title


@dataclass(frozen=True)
class PacsNode:
    """One PACS node.

    Attributes
    ----------
    name
        What holo calls it (1-64 characters of ``A-Za-z0-9._-``).
    dicomweb
        The DICOMweb base URL (``https://pacs/dicom-web``), or empty.
    ae_title, host, port
        Its DIMSE address, or empty and 0.
    username, password
        HTTP basic credentials for DICOMweb, or empty.
    ca_file
        The CA that signed its TLS certificate (PEM), or empty for the system's CAs.
    """

    name: str
    dicomweb: str = ""
    ae_title: str = ""
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = ""
    ca_file: str = ""

    def checked(self) -> PacsNode:
        """This node if it is well formed; else :class:`InvalidRequestError` naming the field."""
        if not _NAME.fullmatch(self.name):
            raise InvalidRequestError(
                f"PACS node name {self.name!r} is not allowed; use 1-64 characters of "
                "A-Z a-z 0-9 . _ -"
            )
        if self.dicomweb:
            parts = urlsplit(self.dicomweb)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidRequestError(
                    f"PACS node {self.name}: --dicomweb {self.dicomweb!r} is not an http(s) URL; "
                    "give the DICOMweb root, e.g. https://pacs.hospital/dicom-web"
                )
        dimse = (self.ae_title, self.host, self.port)
        if any(dimse):
            if not _AE_TITLE.fullmatch(self.ae_title) or not self.ae_title.strip():
                raise InvalidRequestError(
                    f"PACS node {self.name}: AE title {self.ae_title!r} is not allowed; give "
                    "1-16 printable ASCII characters without a backslash"
                )
            if not self.host or not 0 < self.port < 65536:
                raise InvalidRequestError(
                    f"PACS node {self.name}: a DIMSE node needs --ae-title, --host and --port "
                    "(1-65535)"
                )
        elif not self.dicomweb:
            raise InvalidRequestError(
                f"PACS node {self.name}: give --dicomweb URL, or --ae-title with --host and "
                "--port, or both"
            )
        if self.ca_file and not Path(self.ca_file).is_file():
            raise InvalidRequestError(
                f"PACS node {self.name}: --ca {self.ca_file}: no such file; give the PEM file "
                "of the CA that signed the node's certificate"
            )
        return self

    def public(self) -> dict[str, object]:
        """The node as shown to a user: the password never, only whether there is one."""
        shown = {k: v for k, v in asdict(self).items() if k != "password"}
        shown["password"] = "set" if self.password else ""
        return shown


class PacsNodes:
    """The nodes kept in ``<data_dir>/pacs-nodes.json`` (none until one is added)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / _FILE

    def list(self) -> list[PacsNode]:
        """Every node, by name."""
        if not self.path.exists():
            return []
        try:
            entries = json.loads(self.path.read_text())
            known = {f.name for f in fields(PacsNode)}
            return sorted(
                (PacsNode(**{k: v for k, v in e.items() if k in known}) for e in entries),
                key=lambda n: n.name,
            )
        except (ValueError, TypeError, AttributeError) as err:
            raise InvalidRequestError(
                f"{self.path} is not a list of PACS nodes ({type(err).__name__}); restore it "
                "from a backup or remove it and add the nodes again"
            ) from err

    def get(self, name: str) -> PacsNode:
        """The node called ``name`` (:class:`NotFoundError` if there is none)."""
        for node in self.list():
            if node.name == name:
                return node
        raise NotFoundError("PACS node", name)

    def add(self, node: PacsNode, *, replace: bool = False) -> PacsNode:
        """Keep ``node``; a name already kept is refused unless ``replace``."""
        node = node.checked()
        nodes = {n.name: n for n in self.list()}
        if node.name in nodes and not replace:
            raise InvalidRequestError(
                f"PACS node {node.name} exists already; remove it first or pass --replace"
            )
        nodes[node.name] = node
        self._write(nodes.values())
        return node

    def remove(self, name: str) -> None:
        """Forget the node called ``name`` (:class:`NotFoundError` if there is none)."""
        nodes = {n.name: n for n in self.list()}
        if name not in nodes:
            raise NotFoundError("PACS node", name)
        del nodes[name]
        self._write(nodes.values())

    def _write(self, nodes: object) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = json.dumps([asdict(n) for n in nodes], indent=2)  # type: ignore[attr-defined]
        with atomic_path(self.path) as tmp:
            os.chmod(tmp, 0o600)  # before a byte is written: it holds credentials
            tmp.write_text(text)
