"""What the gateway shows OpenIGTLink peers of a session: models, anchors, annotations, in RAS.

Transport-neutral: this module turns session records into OpenIGTLink messages and knows
nothing of sockets or gRPC. Frames (one rule, :mod:`holo.coords`):

* POLYDATA ``<model>``: the model's mesh in **its own frame**, as RAS millimetres (the GLB
  stores LPS millimetres, the patient frame of the study; RAS is LPS with x and y negated).
  With an identity anchor a model therefore lies where the study's CT lies in 3D Slicer.
* TRANSFORM ``<model>``: the anchor (model -> room) as RAS millimetres: the room frame,
  which is glTF (metres, +Y up), meets RAS through the same axis rule as a patient.
  Put the model (and its POINT list) under this transform in Slicer to see it in the room.
* POINT ``<model>``: the model's annotations, in the model's frame like the POLYDATA: a
  marker or label is one point named after the annotation, a stroke one point per vertex
  (``<id>#k``); the group is the shape. The POINT message carries the model's device
  name; each point's ``owner`` field repeats it only when it has at most 19 characters:
  the reference library (and so 3D Slicer) reads a 20-byte owner wrongly (it ends its copy
  with a newline instead of a NUL, then refuses the over-long result), and holo's model
  ids have 20.

Device names are a header's 20 bytes: holo's model ids fit; a longer id is shortened to
its first 11 characters, ``~`` and 8 hex digits of its SHA-256 (:func:`device_name`).
"""

from __future__ import annotations

import hashlib

from holo.coords import matrix_from_pose, ras_from_gltf, ras_from_lps, ras_transform_from_gltf
from holo.errors import PipelineError
from holo.export.meshes import joined, level_meshes
from holo.igtl.messages import (
    DEVICE_NAME_BYTES,
    PointItem,
    pack_points,
    pack_polydata_message,
    pack_transform,
)
from holo.session.records import Annotation, Pose

__all__ = ["anchor_message", "annotation_points", "device_name", "model_polydata", "points_message"]

# Annotation colours in Slicer: markers yellow (OpenIGTLink's default), strokes cyan,
# labels white; nothing is encoded in them.
_RGBA = {"marker": (255, 255, 0, 255), "stroke": (0, 255, 255, 255), "label": (255, 255, 255, 255)}


def device_name(model_id: str) -> str:
    """The OpenIGTLink device name of a model: its id when it fits 20 ASCII bytes."""
    if model_id.isascii() and len(model_id) <= DEVICE_NAME_BYTES and "\0" not in model_id:
        return model_id
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{model_id.encode('ascii', errors='replace').decode()[:11]}~{digest}"


def model_polydata(glb: bytes, model_id: str, level: int = -1) -> bytes:
    """The POLYDATA message of a model at level of detail ``level`` (-1: full detail):
    every structure in one mesh, RAS millimetres, unit normals per point.

    Raises
    ------
    PipelineError
        The GLB cannot be read, has no such level, or holds no structure (a radiograph
        panel has none: nothing to show as a surface).
    """
    meshes = level_meshes(glb, level)
    if not meshes:
        raise PipelineError(f"model {model_id!r} has no surface meshes to send as POLYDATA")
    vertices, faces, normals = joined(list(meshes.values()))
    # Normals are directions: the same linear map as the points.
    return pack_polydata_message(
        device_name(model_id), ras_from_lps(vertices), faces, ras_from_lps(normals)
    )


def anchor_message(model_id: str, pose: Pose) -> bytes:
    """The TRANSFORM of a model's anchor (model -> room) in RAS millimetres."""
    matrix = ras_transform_from_gltf(matrix_from_pose(pose.position, pose.rotation))
    return pack_transform(device_name(model_id), matrix)


def annotation_points(model_id: str, annotations: list[Annotation]) -> list[PointItem]:
    """The points of ``annotations`` (all anchored to ``model_id``), RAS mm in its frame."""
    owner = device_name(model_id)
    owner = owner if len(owner) < DEVICE_NAME_BYTES else ""  # see the module's docstring
    items = []
    for a in annotations:
        many = len(a.points) > 1
        for k, point in enumerate(a.points):
            x, y, z = (float(c) for c in ras_from_gltf(point))
            name = f"{a.annotation_id}#{k}" if many else a.annotation_id
            items.append(
                PointItem(name, a.shape, (x, y, z), owner, _RGBA.get(a.shape, _RGBA["marker"]))
            )
    return items


def points_message(model_id: str, annotations: list[Annotation]) -> bytes:
    """The POINT message of a model's annotations (empty: every one was removed)."""
    return pack_points(device_name(model_id), annotation_points(model_id, annotations))
