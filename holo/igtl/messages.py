"""OpenIGTLink messages as the gateway reads and writes them (protocol version 2).

Every message is a 58-byte header (big-endian: ``uint16`` header version, ``char[12]``
type, ``char[20]`` device name, ``uint64`` timestamp, ``uint64`` body size, ``uint64``
CRC-64/ECMA-182 of the body) and its body. pyigtl 0.3.4 does the header, the CRC,
TRANSFORM and POINT here; holo writes what it gets wrong or lacks:

* POSITION: pyigtl reads and writes it in a POINT-like layout of its own (names, colours,
  148 bytes a position); the specification's body is 12, 24 or 28 bytes (position, then
  no, three or four quaternion elements), which this module reads and writes.
* POLYDATA: :mod:`holo.igtl.polydata`.
* Reading off a socket: pyigtl's client and server are threads with one message kept per
  device; the gateway is asyncio, so :func:`read_message` reads and checks one message
  from an ``asyncio.StreamReader`` with limits (strict when decoding what a socket sends:
  a malformed header, a wrong CRC, a body over :data:`MAX_BODY_BYTES` or one that does not
  fit its type is an :class:`~holo.errors.IgtlError`, never a crash).

Nothing here logs: the gateway logs one line per dropped connection, without device
names or values (they can name a patient's data).
"""

from __future__ import annotations

from holo.extras import need

need("igtl", "pyigtl", feature="the OpenIGTLink gateway")

import asyncio
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyigtl
from pyigtl.messages import CRC64, MessageBase

from holo.coords import matrix_from_pose
from holo.errors import IgtlError
from holo.igtl.polydata import PolyData, pack_polydata, unpack_polydata

__all__ = [
    "DEVICE_NAME_BYTES",
    "HEADER_BYTES",
    "MAX_BODY_BYTES",
    "Header",
    "PointItem",
    "check_device_name",
    "pack_points",
    "pack_polydata_message",
    "pack_position",
    "pack_transform",
    "parse_header",
    "polydata_of",
    "read_message",
    "tracker_matrix",
]

HEADER_BYTES = 58
DEVICE_NAME_BYTES = 20
_TYPE_BYTES = 12
_HEADER = struct.Struct(">H12s20sQQQ")
#: The largest body the gateway reads from a peer: 1 MiB. What it takes (TRANSFORM: 48
#: bytes, POSITION: at most 28) is tiny; this leaves room for a STRING or a STATUS it
#: skips, and refuses a header that claims gigabytes before any of them is buffered.
MAX_BODY_BYTES = 1 << 20
_POSITION_SIZES = (12, 24, 28)  # position only; + 3 quaternion elements; + all 4


@dataclass(frozen=True)
class Header:
    """A checked OpenIGTLink header. ``device_name`` may be any text a peer chose: never
    log it."""

    version: int
    message_type: str
    device_name: str
    timestamp: int
    body_size: int
    crc: int

    def fields(self) -> dict[str, Any]:
        """The header as pyigtl's ``unpack`` takes it."""
        seconds, fraction = self.timestamp >> 32, self.timestamp & 0xFFFFFFFF
        return {
            "header_version": self.version,
            "message_type": self.message_type,
            "device_name": self.device_name,
            "timestamp": seconds + fraction / 2**32,
            "body_size": self.body_size,
        }


def parse_header(raw: bytes, *, max_body_bytes: int = MAX_BODY_BYTES) -> Header:
    """Check and read a 58-byte header.

    Raises
    ------
    IgtlError
        Not 58 bytes, a header version other than 1 or 2 (protocol 1-3), a type name that
        is not printable ASCII, or a body size over ``max_body_bytes``.
    """
    if len(raw) != HEADER_BYTES:
        raise IgtlError(f"OpenIGTLink header is {len(raw)} bytes, not {HEADER_BYTES}")
    version, kind, device, timestamp, body_size, crc = _HEADER.unpack(raw)
    if version not in (1, 2):
        raise IgtlError(f"OpenIGTLink header version {version} is not 1 or 2 (protocol 1-3)")
    type_name = kind.rstrip(b"\0")
    if not type_name or not all(0x20 < c < 0x7F for c in type_name):
        raise IgtlError("OpenIGTLink type name is not printable ASCII: not an OpenIGTLink peer?")
    message_type = type_name.decode("ascii")
    if body_size > max_body_bytes:
        raise IgtlError(
            f"{message_type} body of {body_size} bytes is over the {max_body_bytes}-byte limit",
            message_type=message_type,
        )
    name = device.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return Header(version, message_type, name, timestamp, body_size, crc)


async def read_message(
    reader: asyncio.StreamReader,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout_s: float | None = None,
) -> tuple[Header, bytes]:
    """The next message from ``reader``, its header checked and its CRC verified; the
    header may take its time (a peer that only listens sends none), the body must arrive
    within ``body_timeout_s`` of it (None: no limit).

    Raises
    ------
    asyncio.IncompleteReadError
        The peer closed the connection (between messages: ``partial`` is empty).
    IgtlError
        As :func:`parse_header`, a body whose CRC-64 differs from the header's, or one
        that did not arrive in time.
    """
    header = parse_header(await reader.readexactly(HEADER_BYTES), max_body_bytes=max_body_bytes)
    try:
        body = await asyncio.wait_for(reader.readexactly(header.body_size), body_timeout_s)
    except TimeoutError:
        raise IgtlError(
            f"{header.message_type} body of {header.body_size} bytes did not arrive within "
            f"{body_timeout_s} s",
            message_type=header.message_type,
        ) from None
    if CRC64(body) != header.crc:
        raise IgtlError(
            f"{header.message_type} body does not match its CRC-64",
            message_type=header.message_type,
        )
    return header, body


def _unpack(message: MessageBase, header: Header, body: bytes) -> MessageBase:
    """pyigtl's unpack (extended header and metadata of header version 2 included), its
    failures on a body of the wrong size made an :class:`IgtlError`."""
    try:
        message.unpack(header.fields(), body)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError, TypeError) as err:
        raise IgtlError(
            f"{header.message_type} body of {len(body)} bytes does not fit its type",
            message_type=header.message_type,
        ) from err
    return message


class _Position(MessageBase):
    """POSITION as the specification has it (pyigtl's own class does not)."""

    def __init__(
        self,
        position: Sequence[float] = (0, 0, 0),
        quaternion: Sequence[float] = (0, 0, 0, 1),
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self._message_type = "POSITION"
        self.position = tuple(float(v) for v in position)
        self.quaternion = tuple(float(v) for v in quaternion)

    def _pack_content(self) -> bytes:
        return struct.pack(">7f", *self.position, *self.quaternion)

    def _unpack_content(self, content: bytes) -> None:
        if len(content) not in _POSITION_SIZES:
            raise ValueError(f"POSITION body of {len(content)} bytes")
        values = struct.unpack(f">{len(content) // 4}f", content)
        self.position = values[:3]
        if len(values) == 3:
            self.quaternion = (0.0, 0.0, 0.0, 1.0)
        elif len(values) == 6:  # x, y, z of a unit quaternion: w >= 0 is implied
            x, y, z = values[3:]
            self.quaternion = (x, y, z, math.sqrt(max(0.0, 1.0 - x * x - y * y - z * z)))
        else:
            self.quaternion = values[3:]


class _Message(MessageBase):
    """A message whose body holo packs itself (POLYDATA; a POINT list of no points)."""

    def __init__(self, message_type: str, content: bytes, **kw: Any) -> None:
        super().__init__(**kw)
        self._message_type = message_type
        self.content = content

    def _pack_content(self) -> bytes:
        return self.content

    def _unpack_content(self, content: bytes) -> None:
        self.content = content


def tracker_matrix(header: Header, body: bytes) -> npt.NDArray[np.float64]:
    """The 4x4 (tool -> the peer's world, millimetres) of a TRANSFORM or POSITION.

    Raises
    ------
    IgtlError
        Another type, a body of the wrong size, or values that are not finite, or a
        POSITION quaternion of zero length.
    """
    if header.message_type == "TRANSFORM":
        matrix = np.asarray(_unpack(pyigtl.TransformMessage(), header, body).matrix, dtype=float)
    elif header.message_type == "POSITION":
        position = _unpack(_Position(), header, body)
        q = np.asarray(position.quaternion, dtype=np.float64)
        if not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-6:
            raise IgtlError("POSITION quaternion is zero or not finite", message_type="POSITION")
        matrix = matrix_from_pose(position.position, q)
    else:
        raise IgtlError(
            f"{header.message_type} is not a tracker pose", message_type=header.message_type
        )
    if not np.all(np.isfinite(matrix)):
        raise IgtlError(
            f"{header.message_type} holds values that are not finite",
            message_type=header.message_type,
        )
    return matrix


def check_device_name(name: str) -> str:
    """``name`` if it fits the header's 20 bytes as ASCII (holo's model ids do); else an
    :class:`IgtlError` (pyigtl would cut it silently, and two models could share a name)."""
    encoded = name.encode("ascii", errors="replace")
    if len(encoded) > DEVICE_NAME_BYTES or "\0" in name:
        raise IgtlError(f"device name of {len(encoded)} bytes is over the {DEVICE_NAME_BYTES}")
    return name


def pack_transform(device_name: str, matrix: npt.ArrayLike) -> bytes:
    """A TRANSFORM message: a 4x4 (millimetres) as OpenIGTLink's 3x4 float32."""
    return bytes(
        pyigtl.TransformMessage(
            np.asarray(matrix), device_name=check_device_name(device_name)
        ).pack()
    )


def pack_position(
    device_name: str, position: Sequence[float], quaternion_xyzw: Sequence[float]
) -> bytes:
    """A POSITION message (28 bytes: position in mm, quaternion x, y, z, w)."""
    return bytes(
        _Position(position, quaternion_xyzw, device_name=check_device_name(device_name)).pack()
    )


@dataclass(frozen=True)
class PointItem:
    """One point of a POINT message: ``name`` (64 bytes at most), ``group`` (32),
    ``position`` in millimetres, ``owner`` (20: the device it belongs to)."""

    name: str
    group: str
    position: tuple[float, float, float]
    owner: str = ""
    rgba: tuple[int, int, int, int] = (255, 255, 0, 255)
    diameter: float = 0.0


def pack_points(device_name: str, items: Sequence[PointItem]) -> bytes:
    """A POINT message of ``items`` (an empty list is an empty body: a list cleared)."""
    name = check_device_name(device_name)
    if not items:  # pyigtl refuses a list of no points; the specification allows it
        return bytes(_Message("POINT", b"", device_name=name).pack())
    message = pyigtl.PointMessage(
        positions=[p.position for p in items],
        names=[p.name[:64] for p in items],
        rgba_colors=[p.rgba for p in items],
        diameters=[p.diameter for p in items],
        groups=[p.group[:32] for p in items],
        owners=[p.owner[:20] for p in items],
        device_name=name,
    )
    return bytes(message.pack())


def pack_polydata_message(
    device_name: str,
    points: npt.ArrayLike,
    triangles: npt.ArrayLike,
    normals: npt.ArrayLike | None,
) -> bytes:
    """A POLYDATA message of a triangle mesh (:func:`~holo.igtl.polydata.pack_polydata`)."""
    content = pack_polydata(points, triangles, normals)
    return bytes(_Message("POLYDATA", content, device_name=check_device_name(device_name)).pack())


def polydata_of(header: Header, body: bytes) -> PolyData:
    """The mesh of a POLYDATA message (for tests and tools; the gateway only sends them)."""
    message = _unpack(_Message("POLYDATA", b""), header, body)
    return unpack_polydata(message.content)
