"""holo.v1 asset messages <-> the records of :mod:`holo.store`: uploads, studies, jobs, models.

What a study message shows depends on who asks: radiologists see the patient's identity
and the original UIDs; everyone else the de-identified summary (replacement UIDs, no
names, ids or descriptions).
"""

from __future__ import annotations

from typing import cast

from holo.store import JobRecord, ModelRecord, StudyRecord, UploadRecord
from holo.store.records import JOB_STATES
from holo.v1 import asset_pb2, common_pb2

__all__ = [
    "JOB_STATE_NAMES",
    "JOB_STATE_VALUES",
    "job_message",
    "model_manifest_message",
    "study_message",
    "upload_status_message",
]

#: Job state names (the store's) <-> wire values: JOB_STATE_<NAME> for every stored state.
JOB_STATE_VALUES = {
    name: cast("asset_pb2.JobState", asset_pb2.JobState.Value(f"JOB_STATE_{name.upper()}"))
    for name in JOB_STATES
}
JOB_STATE_NAMES = {value: name for name, value in JOB_STATE_VALUES.items()}


def upload_status_message(record: UploadRecord, max_chunk_bytes: int) -> asset_pb2.UploadStatus:
    return asset_pb2.UploadStatus(
        upload_id=asset_pb2.UploadId(value=record.upload_id),
        offset=record.offset,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        complete=record.complete,
        max_chunk_bytes=max_chunk_bytes,
    )


def study_message(record: StudyRecord, *, radiologist: bool) -> asset_pb2.Study:
    """A study as a radiologist (identity included) or anyone else (de-identified) sees it."""
    summary = record.summary
    series = summary["series"] if radiologist else summary["public_series"]
    message = asset_pb2.Study(
        study_id=asset_pb2.StudyId(value=record.study_id),
        case_id=record.case_id,
        study_instance_uid=series[0]["StudyInstanceUID"] if series else "",
        size_bytes=record.size_bytes,
        created_unix_ns=record.created_unix_ns,
        series=[
            asset_pb2.SeriesSummary(
                series_instance_uid=s["SeriesInstanceUID"],
                modality=s["Modality"],
                kind=s["kind"],
                images=int(s["images"]),
                series_description=s.get("SeriesDescription", "") if radiologist else "",
            )
            for s in series
        ],
    )
    if radiologist:
        identity = summary["identity"]
        message.patient_name = identity["PatientName"]
        message.patient_id = identity["PatientID"]
        message.study_description = identity["StudyDescription"]
    return message


def job_message(job: JobRecord) -> asset_pb2.Job:
    return asset_pb2.Job(
        job_id=asset_pb2.JobId(value=job.job_id),
        study_id=asset_pb2.StudyId(value=job.study_id),
        case_id=job.case_id,
        preset=job.preset,
        state=JOB_STATE_VALUES[job.state],
        stage=job.stage,
        fraction=job.fraction,
        message=job.message,
        model_id=common_pb2.ModelId(value=job.model_id),
        created_unix_ns=job.created_unix_ns,
        finished_unix_ns=job.finished_unix_ns,
    )


def model_manifest_message(record: ModelRecord) -> asset_pb2.ModelManifest:
    """The wire manifest of a stored model (its JSON manifest as the store keeps it)."""
    m = record.manifest
    bounds = m["bounds_gltf_m"]
    return asset_pb2.ModelManifest(
        model_id=common_pb2.ModelId(value=record.model_id),
        study_id=asset_pb2.StudyId(value=record.study_id),
        case_id=record.case_id,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        media_type=m["media_type"],
        preset=record.preset,
        structures=[
            asset_pb2.StructureInfo(name=s["name"], triangles=s["triangles"])
            for s in m["structures"]
        ],
        lods=[
            asset_pb2.LevelOfDetail(
                index=lod["index"],
                name=lod["name"],
                triangles=lod["triangles"],
                bytes=lod["bytes"],
                complete_at_bytes=lod["complete_at_bytes"],
                prefix_sha256=lod.get("prefix_sha256", ""),  # older records have none
            )
            for lod in m["lods"]
        ],
        bounds=None
        if bounds is None
        else asset_pb2.BoundingBox(
            min=common_pb2.Vec3(x=bounds["min"][0], y=bounds["min"][1], z=bounds["min"][2]),
            max=common_pb2.Vec3(x=bounds["max"][0], y=bounds["max"][1], z=bounds["max"][2]),
        ),
        frame_of_reference_uid=m.get("frame_of_reference_uid") or "",
        mesh_compressions=m.get("mesh_compressions", []),
        created_unix_ns=record.created_unix_ns,
    )
