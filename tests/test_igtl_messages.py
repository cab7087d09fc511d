"""OpenIGTLink bodies holo packs and reads, byte by byte against the specification.

The same messages are checked against the reference C++ library in test_igtl_gateway.py;
here, their exact bytes (big-endian everywhere, the attribute header's byte order, the
name padding) and every way a peer's message can be malformed.
"""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from holo.errors import IgtlError
from holo.igtl.messages import (
    HEADER_BYTES,
    MAX_BODY_BYTES,
    PointItem,
    pack_points,
    pack_polydata_message,
    pack_position,
    pack_transform,
    parse_header,
    polydata_of,
    read_message,
    tracker_matrix,
)
from holo.igtl.polydata import pack_polydata, unpack_polydata

# A unit right tetrahedron: 4 points, 4 triangles (outward, counter-clockwise).
POINTS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
TRIANGLES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.uint32)
NORMALS = (-np.ones((4, 3)) / np.sqrt(3)).astype(np.float32)


def messages(data: bytes) -> list[tuple[object, bytes]]:
    """Every message in ``data``, read as the gateway reads a socket."""

    async def read_all() -> list[tuple[object, bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        found = []
        while not reader.at_eof():
            found.append(await read_message(reader))
        return found

    return asyncio.run(read_all())


def test_polydata_body_is_big_endian_with_the_reference_attribute_layout() -> None:
    body = pack_polydata(POINTS, TRIANGLES, NORMALS)
    header = struct.unpack_from(">10I", body)
    assert header == (4, 0, 0, 0, 0, 4, 4 * 16, 0, 0, 1)
    offset = 40
    assert body[offset : offset + 48] == POINTS.astype(">f4").tobytes()
    offset += 48
    # POLYGONS: each cell (3, i, j, k) as big-endian uint32: pyigtl writes native order.
    assert body[offset : offset + 16] == struct.pack(">4I", 3, 0, 2, 1)
    offset += 64
    # Attribute header: type byte (0x02: POINT_DATA normals) first, then 3 components,
    # then the count (the reference library's order), then "Normals\0" (8: even, no pad).
    assert body[offset : offset + 6] == bytes([0x02, 3]) + struct.pack(">I", 4)
    assert body[offset + 6 : offset + 14] == b"Normals\0"
    assert body[offset + 14 :] == NORMALS.astype(">f4").tobytes()


def test_polydata_round_trip() -> None:
    mesh = unpack_polydata(pack_polydata(POINTS, TRIANGLES, NORMALS))
    np.testing.assert_array_equal(mesh.points, POINTS)
    np.testing.assert_array_equal(mesh.triangles, TRIANGLES)
    assert mesh.normals is not None
    np.testing.assert_array_equal(mesh.normals, NORMALS)
    bare = unpack_polydata(pack_polydata(POINTS, TRIANGLES))
    assert bare.normals is None


def test_polydata_names_of_odd_length_are_padded() -> None:
    body = bytearray(pack_polydata(POINTS, TRIANGLES, NORMALS))
    # Rename the attribute "Normal" (7 bytes with its NUL): one byte of padding follows.
    start = 40 + 48 + 64 + 6
    renamed = bytes(body[:start]) + b"Normal\0\0" + bytes(body[start + 8 :])
    assert unpack_polydata(renamed).normals is not None


def test_polydata_message_frames_and_reads_back() -> None:
    data = pack_polydata_message("knee", POINTS, TRIANGLES, NORMALS)
    ((header, body),) = messages(data)
    assert header.message_type == "POLYDATA" and header.device_name == "knee"
    np.testing.assert_array_equal(polydata_of(header, body).triangles, TRIANGLES)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-4],  # cut short
        lambda b: b + b"\0\0\0\0",  # bytes left over
        lambda b: b[:24] + struct.pack(">I", 999) + b[28:],  # polygons past the body
        lambda b: b[:24] + struct.pack(">I", 63) + b[28:],  # not whole uint32s
        lambda b: b[:88] + struct.pack(">I", 4) + b[92:],  # a quad among triangles
        lambda b: b[:92] + struct.pack(">I", 77) + b[96:],  # index past the points
    ],
)
def test_damaged_polydata_is_refused(damage: object) -> None:
    body = pack_polydata(POINTS, TRIANGLES, NORMALS)
    with pytest.raises(IgtlError):
        unpack_polydata(damage(body))  # type: ignore[operator]


def test_polydata_packing_is_strict() -> None:
    with pytest.raises(IgtlError, match="indices"):
        pack_polydata(POINTS, TRIANGLES + 4)
    with pytest.raises(IgtlError, match="normals"):
        pack_polydata(POINTS, TRIANGLES, NORMALS[:2])


def test_transform_and_position_give_the_same_matrix() -> None:
    quarter = np.sin(np.pi / 4)
    rotation_z = [[0, -1, 0, 10], [1, 0, 0, 20], [0, 0, 1, 30], [0, 0, 0, 1]]
    data = pack_transform("Stylus", rotation_z) + pack_position(
        "Stylus", (10, 20, 30), (0, 0, quarter, quarter)
    )
    (transform, position) = messages(data)
    for header, body in (transform, position):
        np.testing.assert_allclose(tracker_matrix(header, body), rotation_z, atol=1e-6)


@pytest.mark.parametrize("size", [12, 24, 28])
def test_position_bodies_of_every_specified_size(size: int) -> None:
    full = pack_position("Stylus", (1, 2, 3), (0, 0, 0, 1))
    body = full[HEADER_BYTES : HEADER_BYTES + size]
    from pyigtl.messages import CRC64

    header = full[: HEADER_BYTES - 16] + struct.pack(">QQ", size, CRC64(body))
    ((h, b),) = messages(header + body)
    matrix = tracker_matrix(h, b)
    np.testing.assert_allclose(matrix[:3, 3], (1, 2, 3))
    np.testing.assert_allclose(matrix[:3, :3], np.eye(3), atol=1e-6)


def test_points_pack_with_pyigtl_and_an_empty_list_is_allowed() -> None:
    items = [PointItem("m1", "marker", (1.0, 2.0, 3.0), owner="knee")]
    ((header, body),) = messages(pack_points("knee", items))
    assert header.message_type == "POINT" and len(body) == 136
    assert body[:2] == b"m1" and struct.unpack_from(">3f", body, 100) == (1.0, 2.0, 3.0)
    ((header, body),) = messages(pack_points("knee", []))
    assert header.message_type == "POINT" and body == b""


def header_bytes(
    *, version: int = 1, kind: bytes = b"TRANSFORM", size: int = 48, crc: int = 0
) -> bytes:
    return struct.pack(">H12s20sQQQ", version, kind, b"Stylus", 0, size, crc)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (header_bytes(version=7), "header version 7"),
        (header_bytes(kind=b"\xff\xfeTRANS"), "not printable"),
        (header_bytes(kind=b""), "not printable"),
        (header_bytes(size=MAX_BODY_BYTES + 1), "over the"),
        (header_bytes(size=1 << 62), "over the"),
        (b"\0" * 57, "57 bytes"),
    ],
)
def test_malformed_headers_are_refused(raw: bytes, match: str) -> None:
    with pytest.raises(IgtlError, match=match):
        parse_header(raw)


def test_a_wrong_crc_is_refused() -> None:
    data = bytearray(pack_transform("Stylus", np.eye(4)))
    data[-1] ^= 0x01
    with pytest.raises(IgtlError, match="CRC"):
        messages(bytes(data))


@pytest.mark.parametrize(
    ("kind", "body"),
    [(b"TRANSFORM", b"\0" * 40), (b"POSITION", b"\0" * 20), (b"POSITION", b"\0" * 28)],
)
def test_tracker_bodies_that_do_not_fit_their_type_are_refused(kind: bytes, body: bytes) -> None:
    from pyigtl.messages import CRC64

    data = header_bytes(kind=kind, size=len(body), crc=CRC64(body)) + body
    ((header, payload),) = messages(data)
    with pytest.raises(IgtlError):
        tracker_matrix(header, payload)  # 40 bytes; 20 bytes; a zero quaternion


def test_non_finite_transforms_are_refused() -> None:
    matrix = np.eye(4)
    matrix[0, 3] = np.nan
    ((header, body),) = messages(pack_transform("Stylus", matrix))
    with pytest.raises(IgtlError, match="finite"):
        tracker_matrix(header, body)


def test_device_names_longer_than_the_header_are_refused() -> None:
    with pytest.raises(IgtlError, match="20"):
        pack_transform("a" * 21, np.eye(4))
