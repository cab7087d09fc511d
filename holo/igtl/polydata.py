"""The body of an OpenIGTLink POLYDATA message: a triangle mesh with per-point normals.

Written from the protocol specification (``Documents/Protocol/polydata.md`` of the
reference library, protocol version 2 and later) and checked against the reference C
library's packer (``igtl_polydata.c``) with its own C++ client in the tests. pyigtl 0.3.4
cannot be used for this: it does not unpack POLYDATA, packs no attributes (so no normals),
and writes the VERTICES section in the machine's byte order instead of big-endian.

Layout of the body (every number big-endian)::

    header      10 x uint32: NPOINTS, NVERTICES, SIZE_VERTICES, NLINES, SIZE_LINES,
                NPOLYGONS, SIZE_POLYGONS, NTRIANGLE_STRIPS, SIZE_TRIANGLE_STRIPS, NATTRIBUTES
    POINTS      NPOINTS x float32[3]
    VERTICES, LINES, POLYGONS, TRIANGLE_STRIPS
                each cell as uint32 (n, i_1 ... i_n); SIZE_* is the section's bytes
    attribute headers   NATTRIBUTES x (uint8 type, uint8 components, uint32 count)
    attribute names     NATTRIBUTES x NUL-terminated name, then one NUL if the names'
                        total length is odd
    attribute data      NATTRIBUTES x float32[count][components]

The specification's prose calls the attribute header's first field one uint16 with the
type in bits 0-7 and the components in bits 8-15, which big-endian would put components
first; the reference library (whose peers, 3D Slicer included, are what matter) writes the
type byte first, then the components byte. holo follows the reference library.

holo sends each model as one POLYDATA: its triangles as POLYGONS of 3 indices, and the
vertex normals as a POINT_DATA / Normals attribute, which 3D Slicer shades with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from holo.errors import IgtlError

__all__ = ["NORMALS_NAME", "PolyData", "pack_polydata", "unpack_polydata"]

_HEADER = struct.Struct(">10I")
_ATTRIBUTE_HEADER = struct.Struct(">BBI")
# Attribute types (low byte; 0x10 set: CELL_DATA) and their component counts.
_POINT_NORMALS = 0x02
_COMPONENTS = {0x00: None, 0x01: 3, 0x02: 3, 0x03: 9, 0x04: 4}  # None: as the header says
_MAX_NAME = 255  # the specification's limit for an attribute name
#: The name the normals attribute is sent under (VTK's own name for a normals array).
NORMALS_NAME = "Normals"


@dataclass(frozen=True)
class PolyData:
    """A triangle mesh as a POLYDATA body carries it.

    Attributes
    ----------
    points
        Shape ``(N, 3)`` float32: point coordinates as sent (holo sends RAS millimetres).
    triangles
        Shape ``(M, 3)`` uint32: indices into ``points``, counter-clockwise seen from outside.
    normals
        Shape ``(N, 3)`` float32 unit vectors per point (same frame as ``points``), or None
        when the message had no POINT_DATA normals.
    """

    points: npt.NDArray[np.float32]
    triangles: npt.NDArray[np.uint32]
    normals: npt.NDArray[np.float32] | None = None


def pack_polydata(
    points: npt.ArrayLike, triangles: npt.ArrayLike, normals: npt.ArrayLike | None = None
) -> bytes:
    """The POLYDATA body of a triangle mesh.

    Parameters
    ----------
    points
        Shape ``(N, 3)``, millimetres in the frame the peer expects (RAS for 3D Slicer);
        sent as float32.
    triangles
        Shape ``(M, 3)`` indices into ``points``.
    normals
        Shape ``(N, 3)`` per-point normals in the same frame, or None to send none.

    Raises
    ------
    IgtlError
        Shapes that disagree or an index outside ``points`` (strict when encoding: a
        peer would otherwise read past its arrays).
    """
    pts = np.ascontiguousarray(points, dtype=">f4")
    tris = np.asarray(triangles)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise IgtlError(f"POLYDATA points must have shape (N, 3), not {pts.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise IgtlError(f"POLYDATA triangles must have shape (M, 3), not {tris.shape}")
    if tris.size and (tris.min() < 0 or tris.max() >= len(pts)):
        raise IgtlError(f"POLYDATA triangle indices must lie in [0, {len(pts)})")
    cells = np.empty((len(tris), 4), dtype=">u4")  # each cell: 3, i, j, k
    cells[:, 0] = 3
    cells[:, 1:] = tris
    polygons = cells.tobytes()
    attributes: list[tuple[int, int, str, bytes]] = []
    if normals is not None:
        nrm = np.ascontiguousarray(normals, dtype=">f4")
        if nrm.shape != pts.shape:
            raise IgtlError(
                f"POLYDATA normals must have the points' shape {pts.shape}, not {nrm.shape}"
            )
        attributes.append((_POINT_NORMALS, 3, NORMALS_NAME, nrm.tobytes()))
    header = _HEADER.pack(len(pts), 0, 0, 0, 0, len(tris), len(polygons), 0, 0, len(attributes))
    parts = [header, pts.tobytes(), polygons]
    names = b""
    for kind, components, name, data in attributes:
        parts.append(_ATTRIBUTE_HEADER.pack(kind, components, len(data) // (4 * components)))
        names += name.encode("ascii") + b"\0"
    parts.append(names + b"\0" * (len(names) % 2))  # names padded to an even length
    parts.extend(data for _, _, _, data in attributes)
    return b"".join(parts)


def unpack_polydata(body: bytes) -> PolyData:
    """Read a POLYDATA body (tolerant of what holo does not send: vertices, lines, strips
    and other attributes are skipped; polygons must be triangles).

    Raises
    ------
    IgtlError
        A body shorter than its header says, a section size that is not whole uint32s, a
        polygon that is not a triangle, an index outside the points, an attribute name
        without its NUL or over 255 characters, or bytes left over at the end.
    """
    reader = _Reader(body)
    (
        n_points,
        _n_vertices,
        size_vertices,
        _n_lines,
        size_lines,
        n_polygons,
        size_polygons,
        _n_strips,
        size_strips,
        n_attributes,
    ) = reader.unpack(_HEADER)
    if any(size % 4 for size in (size_vertices, size_lines, size_polygons, size_strips)):
        raise IgtlError("POLYDATA section sizes must be multiples of 4 bytes (uint32 indices)")
    points = reader.array(">f4", 3 * n_points, "POINTS").reshape(-1, 3).astype(np.float32)
    reader.skip(size_vertices + size_lines, "VERTICES and LINES")
    polygons = reader.array(">u4", size_polygons // 4, "POLYGONS")
    reader.skip(size_strips, "TRIANGLE_STRIPS")
    triangles = _triangles(polygons, n_polygons, n_points)
    headers = [reader.unpack(_ATTRIBUTE_HEADER) for _ in range(n_attributes)]
    names_length = 0
    for _ in range(n_attributes):
        end = body.find(b"\0", reader.offset, reader.offset + _MAX_NAME + 1)
        if end < 0:
            raise IgtlError("POLYDATA attribute name has no NUL within 255 characters")
        names_length += end + 1 - reader.offset
        reader.offset = end + 1
    reader.skip(names_length % 2, "attribute name padding")
    normals = None
    for kind, components, count in headers:
        width = _COMPONENTS.get(kind & 0x0F) or components
        data = reader.array(">f4", width * count, "attribute data")
        if kind == _POINT_NORMALS and count == n_points:
            normals = data.reshape(-1, 3).astype(np.float32)
    if reader.offset != len(body):
        raise IgtlError(f"POLYDATA body has {len(body) - reader.offset} bytes past its data")
    return PolyData(points, triangles, normals)


def _triangles(
    polygons: npt.NDArray[np.generic], count: int, n_points: int
) -> npt.NDArray[np.uint32]:
    cells = polygons.reshape(-1, 4) if len(polygons) % 4 == 0 else None
    if cells is None or len(cells) != count or np.any(cells[:, 0] != 3):
        raise IgtlError("POLYDATA polygons must all be triangles (3 indices each)")
    triangles = cells[:, 1:].astype(np.uint32)
    if triangles.size and triangles.max() >= n_points:
        raise IgtlError(f"POLYDATA polygon index past the {n_points} points")
    return triangles


class _Reader:
    """Bounds-checked reads from a body: every short read is an :class:`IgtlError`."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.offset = 0

    def _take(self, size: int, what: str) -> int:
        start = self.offset
        if size < 0 or start + size > len(self.body):
            raise IgtlError(
                f"POLYDATA body ends inside its {what} ({len(self.body)} bytes, "
                f"needs {start + size})"
            )
        self.offset += size
        return start

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return layout.unpack_from(self.body, self._take(layout.size, "header"))

    def array(self, dtype: str, count: int, what: str) -> npt.NDArray[np.generic]:
        start = self._take(4 * count, what)
        return np.frombuffer(self.body, dtype=dtype, count=count, offset=start)

    def skip(self, size: int, what: str) -> None:
        self._take(size, what)
