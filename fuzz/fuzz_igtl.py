"""Fuzz what the OpenIGTLink gateway reads from a peer: framing, tracker bodies, POLYDATA.

Documented errors: :class:`~holo.errors.IgtlError` (a message the gateway refuses: it
drops the connection) and ``asyncio.IncompleteReadError`` (the stream ended).

An input's first byte chooses what the rest is: even, a TCP stream read the way the
gateway reads a peer (``read_message`` in a loop, then ``tracker_matrix`` on TRANSFORM
and POSITION, ``polydata_of`` on POLYDATA), with CRCs as the input has them (almost always
wrong) when byte 0 is 0 mod 4, recomputed so the body parsers are reached otherwise;
odd, a POLYDATA body for ``unpack_polydata``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["holo"]):
    from holo.errors import IgtlError
    from holo.igtl.messages import (
        HEADER_BYTES,
        pack_points,
        pack_polydata_message,
        pack_position,
        pack_transform,
        polydata_of,
        read_message,
        tracker_matrix,
    )
    from holo.igtl.polydata import pack_polydata, unpack_polydata

from common import fuzz
from pyigtl.messages import CRC64

LOOP = asyncio.new_event_loop()  # one for every input: a loop per input would dominate


def _fix_crcs(stream: bytes) -> bytes:
    """``stream`` with each message's CRC set to its body's (as far as headers parse)."""
    out, at = bytearray(), 0
    while at + HEADER_BYTES <= len(stream):
        header = bytearray(stream[at : at + HEADER_BYTES])
        (size,) = struct.unpack_from(">Q", header, 42)
        body = stream[at + HEADER_BYTES : at + HEADER_BYTES + min(size, 1 << 20)]
        struct.pack_into(">Q", header, 50, CRC64(body))
        out += header + body
        at += HEADER_BYTES + len(body)
    return bytes(out + stream[at:])


async def _read_all(stream: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    while True:
        header, body = await read_message(reader)
        if header.message_type in ("TRANSFORM", "POSITION"):
            tracker_matrix(header, body)
        elif header.message_type == "POLYDATA":
            polydata_of(header, body)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        with contextlib.suppress(IgtlError):
            unpack_polydata(data[1:])
        return
    stream = data[1:] if data[0] % 4 == 0 else _fix_crcs(data[1:])
    with contextlib.suppress(IgtlError, asyncio.IncompleteReadError):
        LOOP.run_until_complete(_read_all(stream))


def write_seeds(folder: Path) -> None:
    tetra = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    normals = np.ones((4, 3), dtype=np.float32) / np.sqrt(3)
    stream = (
        pack_transform("Stylus", np.eye(4))
        + pack_position("Stylus", (1, 2, 3), (0, 0, 0, 1))
        + pack_polydata_message("knee", tetra, faces, normals)
        + pack_points("knee", [])
    )
    (folder / "stream_crc_kept").write_bytes(b"\0" + stream)
    (folder / "stream_crc_fixed").write_bytes(b"\2" + stream)
    (folder / "polydata_body").write_bytes(b"\1" + pack_polydata(tetra, faces, normals))
    (folder / "polydata_bare").write_bytes(b"\1" + pack_polydata(tetra, faces))


if __name__ == "__main__":
    fuzz(test_one_input, write_seeds)
