"""The blocking client of a holo node's asset services: uploads, conversions, models.

Thread-safe (one gRPC channel per :class:`HoloClient`). Every call carries the token as
``authorization: Bearer <token>``; failures raise :class:`~holo.client.channel.ClientError`
with the status code and the server's one-line message. Uploads and model downloads
resume where they stopped when the connection drops (:class:`~holo.client.retry.RetryPolicy`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from holo.atomic import atomic_path
from holo.client.channel import ClientError, call_metadata, channel_for, client_error, read_ca
from holo.client.retry import TRANSFER_RETRY, RetryPolicy
from holo.v1 import asset_pb2, asset_pb2_grpc, common_pb2, pacs_pb2, pacs_pb2_grpc

__all__ = ["FetchResult", "HoloClient", "study_files"]

_READ = 1 << 20

Progress = Callable[[int, int], None]  # (done, total) in bytes


@dataclass
class FetchResult:
    """A downloaded model and how long its parts took (seconds from the call)."""

    manifest: asset_pb2.ModelManifest
    path: Path | None
    data: bytes
    bytes_received: int
    seconds_to_manifest: float
    seconds_to_first_lod: float
    seconds_total: float
    cached: bool


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def study_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files an upload of ``paths`` sends: folders walked (sorted), files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        else:
            out.append(p)
    return out


class HoloClient:
    """A connection to one holo server, as one caller (one token).

    Parameters
    ----------
    server
        ``HOST:PORT``.
    token
        From ``holo token``; default the ``HOLO_TOKEN`` environment variable.
    ca
        PEM of the CA that signed the server's certificate (a path or the bytes); None uses
        the system's roots.
    insecure
        Plain text (loopback development servers started with ``--insecure``).
    retry
        Which failures an upload or download resumes after, how often and how soon
        (default :data:`~holo.client.retry.TRANSFER_RETRY`: 60 s, across a server restart).
    timeout_s
        Deadline of each unary call. Model downloads have none (a large model on a slow
        link takes what it takes); keepalive pings detect a dead connection instead.
    own_connection
        A TCP connection of its own (see :func:`channel_for`).
    client_cert
        ``(certificate_pem_path, key_pem_path)`` for servers that require mutual TLS.
    """

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        ca: str | os.PathLike[str] | bytes | None = None,
        insecure: bool = False,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        own_connection: bool = False,
        client_cert: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    ) -> None:
        pem = read_ca(ca)
        pair = None
        if client_cert is not None:
            pair = (Path(client_cert[0]).read_bytes(), Path(client_cert[1]).read_bytes())
        self.channel = channel_for(
            server, ca=pem, insecure=insecure, own_connection=own_connection, client_cert=pair
        )
        self._metadata = call_metadata(token)
        self._retry = retry or TRANSFER_RETRY
        self._timeout = timeout_s
        self.uploads = asset_pb2_grpc.UploadServiceStub(self.channel)
        self.conversions = asset_pb2_grpc.ConversionServiceStub(self.channel)
        self.assets = asset_pb2_grpc.AssetServiceStub(self.channel)
        self.pacs = pacs_pb2_grpc.PacsServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> HoloClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., object], request: object) -> object:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise client_error(err) from None

    # uploads ------------------------------------------------------------------------------

    def upload_file(
        self, path: str | os.PathLike[str], *, case_id: str = "", progress: Progress | None = None
    ) -> asset_pb2.UploadStatus:
        """Upload one file, resuming after dropped connections; identical content that the
        server already holds is not sent again."""
        path = Path(path)
        with open(path, "rb") as fh:

            def read(offset: int, size: int) -> bytes:
                fh.seek(offset)
                return fh.read(size)

            return self._upload(
                read, path.name, path.stat().st_size, _sha256_file(path), case_id, progress
            )

    def upload_bytes(
        self, data: bytes, name: str, *, case_id: str = "", progress: Progress | None = None
    ) -> asset_pb2.UploadStatus:
        """Upload content held in memory under a file ``name``."""
        return self._upload(
            lambda offset, size: data[offset : offset + size],
            name,
            len(data),
            hashlib.sha256(data).hexdigest(),
            case_id,
            progress,
        )

    def _upload(
        self,
        read: Callable[[int, int], bytes],
        name: str,
        size: int,
        sha256: str,
        case_id: str,
        progress: Progress | None,
    ) -> asset_pb2.UploadStatus:
        # Announcing the same file again resumes this caller's unfinished upload of it on
        # the server (same case, name, size and SHA-256), from the offset the server holds:
        # after a restart within this run, and when the command is run again.
        status = self._retrying(
            self.uploads.StartUpload,
            asset_pb2.StartUploadRequest(
                case_id=case_id, name=name, size_bytes=size, sha256=sha256
            ),
        )
        assert isinstance(status, asset_pb2.UploadStatus)
        failures = 0
        first_failure = 0.0
        while not status.complete:
            data = read(status.offset, status.max_chunk_bytes or _READ)
            try:
                status = self.uploads.UploadChunk(
                    asset_pb2.UploadChunkRequest(
                        upload_id=status.upload_id, offset=status.offset, data=data
                    ),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                failures += 1
                if failures == 1:
                    first_failure = time.monotonic()
                # A dropped connection or a restarting server, or a chunk the server already
                # had (its reply was lost): ask where the upload stands and go on from there.
                resent = code == grpc.StatusCode.FAILED_PRECONDITION
                elapsed = time.monotonic() - first_failure
                wait = self._retry.wait_s(err, failures, elapsed)
                if resent and failures <= self._retry.attempts:
                    wait = self._retry.delay_s(failures)
                if wait is None:
                    raise client_error(err) from None
                time.sleep(wait)
                status = self._resume(status)
                continue
            failures = 0
            if progress is not None:
                progress(status.offset, size)
        return status

    def _retrying(
        self, method: Callable[..., object], request: object, policy: RetryPolicy | None = None
    ) -> object:
        """A unary call, retried under ``policy`` (default the client's) while the server
        is unreachable: a dropped link, or a server restarting."""
        policy = policy or self._retry
        failures = 0
        first_failure = 0.0
        while True:
            try:
                return method(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.RpcError as err:
                failures += 1
                if failures == 1:
                    first_failure = time.monotonic()
                wait = policy.wait_s(err, failures, time.monotonic() - first_failure)
                if wait is None:
                    raise client_error(err) from None
                time.sleep(wait)

    def _resume(self, status: asset_pb2.UploadStatus) -> asset_pb2.UploadStatus:
        fresh = self._retrying(
            self.uploads.GetUpload, asset_pb2.GetUploadRequest(upload_id=status.upload_id)
        )
        assert isinstance(fresh, asset_pb2.UploadStatus)
        return fresh

    def upload_study(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        case_id: str = "",
        progress: Progress | None = None,
    ) -> asset_pb2.Study:
        """Upload a zip, a folder or DICOM files as one study."""
        files = study_files(paths)
        total = sum(f.stat().st_size for f in files)
        done = 0
        uploads = []
        for f in files:
            base = done

            def each(n: int, _size: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + n, total)

            status = self.upload_file(f, case_id=case_id, progress=each)
            done += status.size_bytes
            if progress is not None:
                progress(done, total)
            uploads.append(status.upload_id)
        # Retried only while the server is unreachable (UNAVAILABLE), not after a deadline:
        # the study may then be in the making, and a retry would make a second one.
        study = self._retrying(
            self.uploads.CreateStudy,
            asset_pb2.CreateStudyRequest(case_id=case_id, uploads=uploads),
            dataclasses.replace(self._retry, codes=frozenset({grpc.StatusCode.UNAVAILABLE})),
        )
        assert isinstance(study, asset_pb2.Study)
        return study

    def list_studies(self, case_id: str = "") -> list[asset_pb2.Study]:
        reply = self._call(self.uploads.ListStudies, asset_pb2.ListStudiesRequest(case_id=case_id))
        assert isinstance(reply, asset_pb2.ListStudiesResponse)
        return list(reply.studies)

    # jobs ---------------------------------------------------------------------------------

    def start_conversion(
        self, study_id: str, *, preset: str = "bone", series_uid: str = ""
    ) -> asset_pb2.Job:
        job = self._call(
            self.conversions.StartConversion,
            asset_pb2.StartConversionRequest(
                study_id=asset_pb2.StudyId(value=study_id),
                preset=preset,
                series_instance_uid=series_uid,
            ),
        )
        assert isinstance(job, asset_pb2.Job)
        return job

    def watch_job(self, job_id: str, *, timeout_s: float = 3600.0) -> Iterator[asset_pb2.Job]:
        """The job's states until it ends (the stream closes after the final one)."""
        try:
            yield from self.conversions.WatchJob(
                asset_pb2.WatchJobRequest(job_id=asset_pb2.JobId(value=job_id)),
                metadata=self._metadata,
                timeout=timeout_s,
            )
        except grpc.RpcError as err:
            raise client_error(err) from None

    def wait_job(
        self, job_id: str, *, on_update: Callable[[asset_pb2.Job], None] | None = None
    ) -> asset_pb2.Job:
        last = None
        for last in self.watch_job(job_id):
            if on_update is not None:
                on_update(last)
        if last is None:
            raise ClientError(
                f"job {job_id}: the server sent no state", code=grpc.StatusCode.UNKNOWN
            )
        return last

    def cancel_job(self, job_id: str) -> asset_pb2.Job:
        job = self._call(
            self.conversions.CancelJob,
            asset_pb2.CancelJobRequest(job_id=asset_pb2.JobId(value=job_id)),
        )
        assert isinstance(job, asset_pb2.Job)
        return job

    def list_jobs(self, case_id: str = "") -> list[asset_pb2.Job]:
        reply = self._call(self.conversions.ListJobs, asset_pb2.ListJobsRequest(case_id=case_id))
        assert isinstance(reply, asset_pb2.ListJobsResponse)
        return list(reply.jobs)

    # PACS (radiologists) ------------------------------------------------------------------

    def pacs_nodes(self) -> list[pacs_pb2.PacsNode]:
        """The PACS nodes the server knows (names and protocols)."""
        reply = self._call(self.pacs.ListPacsNodes, pacs_pb2.ListPacsNodesRequest())
        assert isinstance(reply, pacs_pb2.ListPacsNodesResponse)
        return list(reply.nodes)

    def find_pacs_studies(
        self,
        node: str,
        *,
        patient_id: str = "",
        accession_number: str = "",
        modality: str = "",
        study_date: str = "",
        limit: int = 0,
    ) -> list[pacs_pb2.PacsStudy]:
        """Search a node; ``study_date`` is "YYYYMMDD" or a range "A-B"; ``limit`` 0: 200."""
        request = pacs_pb2.FindPacsStudiesRequest(
            node=node,
            patient_id=patient_id,
            accession_number=accession_number,
            modality=modality,
            study_date=study_date,
            limit=limit,
        )
        reply = self._call(self.pacs.FindPacsStudies, request)
        assert isinstance(reply, pacs_pb2.FindPacsStudiesResponse)
        return list(reply.studies)

    def start_pull(
        self, node: str, study_uid: str, *, series_uid: str = "", convert_preset: str = ""
    ) -> pacs_pb2.Pull:
        """Pull a study into the token's case (and queue its conversion with a preset)."""
        pull = self._call(
            self.pacs.StartPull,
            pacs_pb2.StartPullRequest(
                node=node,
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                convert_preset=convert_preset,
            ),
        )
        assert isinstance(pull, pacs_pb2.Pull)
        return pull

    def wait_pull(
        self,
        pull_id: str,
        *,
        on_update: Callable[[pacs_pb2.Pull], None] | None = None,
        timeout_s: float = 3600.0,
    ) -> pacs_pb2.Pull:
        """Follow a pull to its final state and return it."""
        last = None
        try:
            for last in self.pacs.WatchPull(
                pacs_pb2.WatchPullRequest(pull_id=pacs_pb2.PullId(value=pull_id)),
                metadata=self._metadata,
                timeout=timeout_s,
            ):
                if on_update is not None:
                    on_update(last)
        except grpc.RpcError as err:
            raise client_error(err) from None
        if last is None:
            raise ClientError(
                f"pull {pull_id}: the server sent no state", code=grpc.StatusCode.UNKNOWN
            )
        return last

    def cancel_pull(self, pull_id: str) -> pacs_pb2.Pull:
        pull = self._call(
            self.pacs.CancelPull,
            pacs_pb2.CancelPullRequest(pull_id=pacs_pb2.PullId(value=pull_id)),
        )
        assert isinstance(pull, pacs_pb2.Pull)
        return pull

    def push_model(self, node: str, model_id: str, *, via: str = "") -> pacs_pb2.PushModelResponse:
        """Send a model of the case back to a node (STL per structure and a Segmentation)."""
        reply = self._call(
            self.pacs.PushModel,
            pacs_pb2.PushModelRequest(
                node=node, model_id=common_pb2.ModelId(value=model_id), via=via
            ),
        )
        assert isinstance(reply, pacs_pb2.PushModelResponse)
        return reply

    # models -------------------------------------------------------------------------------

    def list_models(self, case_id: str = "") -> list[asset_pb2.ModelManifest]:
        reply = self._call(self.assets.ListModels, asset_pb2.ListModelsRequest(case_id=case_id))
        assert isinstance(reply, asset_pb2.ListModelsResponse)
        return list(reply.models)

    def fetch_model(
        self,
        model_id: str,
        output: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
        on_lod: Callable[[int, bytes], None] | None = None,
    ) -> FetchResult:
        """Download a model, coarse level first; resumes at the received offset when the
        stream breaks, verifies the sha256, and writes ``output`` atomically.

        ``on_lod(k, prefix)`` is called as soon as level k is complete in the received
        prefix (a viewer shows it and refines), once the prefix matches the level's
        ``prefix_sha256`` (when the manifest has one). An ``output`` that already holds the same
        content is kept: only the manifest is asked for.
        """
        start = time.perf_counter()
        out = None if output is None else Path(output)
        have = _sha256_file(out) if out is not None and out.is_file() else ""
        parts: list[bytes] = []  # joined once at the end: one copy of the model, not two
        received = 0
        digest = hashlib.sha256()  # updated as chunks arrive: no second pass at the end
        manifest: asset_pb2.ModelManifest | None = None
        t_manifest = t_first = 0.0
        lods_done = 0
        failures = 0
        first_failure = 0.0
        while True:
            request = asset_pb2.GetModelRequest(
                model_id=common_pb2.ModelId(value=model_id), offset=received, have_sha256=have
            )
            try:
                for reply in self.assets.GetModel(request, metadata=self._metadata):
                    if reply.HasField("manifest"):
                        if manifest is None:
                            manifest = reply.manifest
                            t_manifest = time.perf_counter() - start
                        elif reply.manifest.sha256 != manifest.sha256:
                            raise ClientError(
                                f"model {model_id} changed during the download; fetch it again",
                                code=grpc.StatusCode.ABORTED,
                            )
                        continue
                    part = reply.data  # one access: each one builds a new wrapper
                    if part.offset != received:
                        raise ClientError(
                            f"model {model_id}: chunk at {part.offset}, expected {received}",
                            code=grpc.StatusCode.DATA_LOSS,
                        )
                    chunk = part.data
                    parts.append(chunk)
                    received += len(chunk)
                    digest.update(chunk)
                    failures = 0
                    lods = manifest.lods if manifest is not None else []
                    while lods_done < len(lods) and received >= lods[lods_done].complete_at_bytes:
                        if lods_done == 0:
                            t_first = time.perf_counter() - start
                        if on_lod is not None:
                            prefix = b"".join(parts)
                            _check_level(model_id, lods[lods_done], prefix)
                            on_lod(lods_done, prefix)
                        lods_done += 1
                    if progress is not None and manifest is not None:
                        progress(received, manifest.size_bytes)
                break
            except grpc.RpcError as err:
                failures += 1
                if failures == 1:
                    first_failure = time.monotonic()
                wait = self._retry.wait_s(err, failures, time.monotonic() - first_failure)
                if wait is None:
                    raise client_error(err) from None
                time.sleep(wait)
        assert manifest is not None
        total = time.perf_counter() - start
        if have and have == manifest.sha256:
            assert out is not None
            return FetchResult(
                manifest, out, out.read_bytes(), 0, t_manifest, t_manifest, total, True
            )
        data = b"".join(parts)
        if digest.hexdigest() != manifest.sha256:
            raise ClientError(
                f"model {model_id}: the received bytes do not match the manifest's sha256; "
                "fetch it again",
                code=grpc.StatusCode.DATA_LOSS,
            )
        if out is not None:
            with atomic_path(out) as tmp:
                tmp.write_bytes(data)
        return FetchResult(manifest, out, data, len(data), t_manifest, t_first, total, False)


def _check_level(model_id: str, level: asset_pb2.LevelOfDetail, prefix: bytes) -> None:
    """Raise unless ``prefix`` holds ``level`` as published (its ``prefix_sha256``; a model
    published before holo recorded it is checked whole, at the end)."""
    if not level.prefix_sha256:
        return
    if hashlib.sha256(prefix[: level.complete_at_bytes]).hexdigest() != level.prefix_sha256:
        raise ClientError(
            f"model {model_id}: level {level.name} does not match its checksum; fetch it again",
            code=grpc.StatusCode.DATA_LOSS,
        )
