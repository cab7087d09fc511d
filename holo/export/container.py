"""The GLB container (glTF 2.0 binary): a 12-byte header, a JSON chunk, an optional BIN chunk.

One parser and one writer for every module that takes a GLB apart (Draco re-encoding, the
coarse-first layout, the manifest). "Strict when decoding": a file that is not a whole
GLB 2.0 is a :class:`~holo.errors.PipelineError` naming what is wrong. Nothing here
decodes meshes: only the JSON and the chunk offsets.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from holo.errors import PipelineError

__all__ = ["CHUNK_HEADER", "HEADER", "Glb", "pack_glb", "read_glb"]

MAGIC = b"glTF"
HEADER = 12  # magic, version, length
CHUNK_HEADER = 8  # length, type
JSON_CHUNK, BIN_CHUNK = 0x4E4F534A, 0x004E4942  # "JSON", "BIN\0" little endian


@dataclass
class Glb:
    """A parsed GLB: its JSON document, its BIN chunk's bytes and where they sit in the file.

    ``json_end`` is the file offset just past the JSON chunk; ``bin_start`` the offset of
    BIN byte 0 (where the BIN chunk's data begins, if there is one).
    """

    tree: dict[str, Any]
    binary: bytes
    json_end: int

    @property
    def bin_start(self) -> int:
        return self.json_end + CHUNK_HEADER

    @property
    def has_bin(self) -> bool:
        """Whether buffer 0 is the BIN chunk (a buffer with a ``uri`` is external)."""
        buffers = self.tree.get("buffers")
        first = buffers[0] if isinstance(buffers, list) and buffers else None
        # Not a buffer object (JSON of the wrong type): no BIN to lay out or count.
        return isinstance(first, dict) and "uri" not in first and bool(self.binary)


def read_glb(glb: bytes) -> Glb:
    """Parse the container.

    Raises
    ------
    PipelineError
        Not a GLB 2.0, a length that disagrees with the data, a JSON chunk that is not
        first, whole and a JSON object, or a BIN chunk that runs past the end.
    """
    if len(glb) < HEADER + CHUNK_HEADER:
        raise PipelineError(
            f"not a GLB: {len(glb)} bytes is shorter than a GLB header and JSON chunk; "
            "pass a binary glTF 2.0 file"
        )
    magic, version, length = struct.unpack_from("<4sII", glb, 0)
    if magic != MAGIC:
        raise PipelineError(
            f"not a GLB: starts with {magic!r} instead of {MAGIC!r}; pass a binary glTF 2.0 file"
        )
    if version != 2:
        raise PipelineError(f"GLB version {version} is not supported; export glTF 2.0")
    if length != len(glb):
        raise PipelineError(
            f"GLB header says {length} bytes but {len(glb)} were given; "
            "the file is truncated or has trailing data"
        )
    json_length, kind = struct.unpack_from("<II", glb, HEADER)
    json_end = HEADER + CHUNK_HEADER + json_length
    if kind != JSON_CHUNK or json_end > len(glb):
        raise PipelineError("GLB does not start with a whole JSON chunk; re-export the file")
    try:
        tree = json.loads(glb[HEADER + CHUNK_HEADER : json_end])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(f"GLB JSON chunk does not parse: {err}") from err
    except RecursionError as err:  # arrays or objects nested ~1,000 deep; no model needs 10
        raise PipelineError(
            "GLB JSON chunk nests arrays or objects too deeply to parse; re-export the file"
        ) from err
    if not isinstance(tree, dict):
        raise PipelineError("GLB JSON chunk is not a glTF object; re-export the file")
    binary = b""
    # The spec allows the BIN chunk only right after the JSON chunk; other chunks are
    # ignored (and dropped when the file is written again).
    if json_end + CHUNK_HEADER <= len(glb):
        bin_length, kind = struct.unpack_from("<II", glb, json_end)
        if kind == BIN_CHUNK:
            start = json_end + CHUNK_HEADER
            if start + bin_length > len(glb):
                raise PipelineError("GLB BIN chunk runs past the end of the file")
            binary = glb[start : start + bin_length]
    return Glb(tree, binary, json_end)


def pack_glb(tree: dict[str, Any], binary: bytes) -> bytes:
    """A GLB of ``tree`` and ``binary``: the JSON padded with spaces and the BIN chunk with
    zeros to 4 bytes, as the spec requires; no BIN chunk when ``binary`` is empty."""
    text = json.dumps(tree, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary:
        chunks += struct.pack("<II", len(binary), BIN_CHUNK) + binary
    return struct.pack("<4sII", MAGIC, 2, HEADER + len(chunks)) + chunks
