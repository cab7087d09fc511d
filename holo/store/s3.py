"""Blobs in an S3-compatible object store, for nodes that share their blobs (issue 18).

``s3://bucket/prefix``: each blob is the object ``prefix/ab/cdef...`` named by the SHA-256
of its bytes, as in the local folder; the AWS S3 API as MinIO, Ceph, SeaweedFS and cloud
stores speak it, through the MinIO client library. The endpoint and credentials come from
the arguments or the environment (``HOLO_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``); none means anonymous access.

A node keeps a local read cache: a :class:`~holo.store.blobs.BlobDir` in front. A blob is
written to the cache first (hashed as it lands, so its name describes its bytes), then put
in the bucket; a blob another node stored is fetched once into the cache, checked against
its name, and read from there after. Content addressing makes the cache always right: a
name is never reused for other bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from holo.errors import ChecksumError, InvalidRequestError, NotFoundError, UnavailableError
from holo.extras import need
from holo.store.blobs import BlobDir
from holo.store.records import is_sha256

__all__ = ["S3Blobs"]

logger = logging.getLogger(__name__)

_READ_BYTES = 1 << 20
# Seconds a call to the object store may take to connect or answer before the store is
# UNAVAILABLE: a gateway failing over answers within seconds.
_TIMEOUT_S = 10
# The object store's codes for "no such object" (a HEAD answers NotFound, a GET NoSuchKey).
_ABSENT = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})


class S3Blobs:
    """The blobs of ``url`` (``s3://bucket/prefix``), with ``cache`` as the local copy.

    Raises
    ------
    InvalidRequestError
        If ``url`` is not ``s3://bucket[/prefix]`` or no endpoint is given.
    UnavailableError
        If the object store does not answer.
    """

    def __init__(
        self,
        url: str,
        cache: BlobDir,
        *,
        endpoint: str = "",
        access_key: str = "",
        secret_key: str = "",
        ca_file: str = "",
    ) -> None:
        need("server", "minio", feature="blobs in an S3 object store")
        import urllib3
        from minio import Minio
        from minio.error import MinioException, S3Error

        self._s3_error = S3Error
        self._minio_error = MinioException
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InvalidRequestError(f"blob store {url!r} is not s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        endpoint = endpoint or os.environ.get("HOLO_S3_ENDPOINT", "")
        if not endpoint:
            raise InvalidRequestError(
                "the S3 endpoint is not set: give --s3-endpoint or HOLO_S3_ENDPOINT "
                "(https://host:port of the object store)"
            )
        where = urlsplit(endpoint if "//" in endpoint else f"https://{endpoint}")
        self.where = f"{where.netloc}/{self.bucket}"  # for messages: no credentials
        self.cache = cache
        # A hospital's object store often has a certificate of the hospital's own CA.
        ca_file = ca_file or os.environ.get("HOLO_S3_CA", "")
        if ca_file and not Path(ca_file).is_file():
            raise InvalidRequestError(
                f"--s3-ca {ca_file}: no such file; give the PEM file of the CA that signed "
                "the object store's certificate"
            )
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file} if ca_file else {}
        self._client = Minio(
            where.netloc,
            access_key=access_key or os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            secure=where.scheme == "https",
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=_TIMEOUT_S, read=_TIMEOUT_S),
                retries=urllib3.Retry(total=2, backoff_factor=0.2),
                **tls,
            ),
        )
        try:
            with self._unavailable():
                if not self._client.bucket_exists(self.bucket):
                    self._client.make_bucket(self.bucket)
        except ValueError as err:  # the client checks bucket names before it sends them
            raise InvalidRequestError(
                f"blob store {url!r}: {err}; S3 bucket names are 3-63 characters of a-z 0-9 . -"
            ) from None

    def ping(self) -> None:
        """Ask for the bucket; :class:`UnavailableError` if the object store does not answer
        (or the bucket is gone)."""
        with self._unavailable():
            if not self._client.bucket_exists(self.bucket):
                raise UnavailableError(
                    f"the object store ({self.where}) has no bucket {self.bucket!r} any more; "
                    "restore it from a backup"
                )

    def _key(self, sha256: str) -> str:
        name = f"{sha256[:2]}/{sha256[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """The object store down or refusing: UNAVAILABLE, naming it (never credentials).
        An absent object or bucket is the caller's to decide on."""
        try:
            yield
        except self._s3_error as err:
            if err.code in _ABSENT:
                raise
            raise self._down(err) from None
        except self._minio_error as err:
            # Not an S3 error document: a 5xx with another body (a gateway whose backend is
            # stopping answers 500/503 so) or a reply that is not S3 at all.
            raise self._down(err) from None
        except Exception as err:
            # Connection errors reach here as OSErrors or urllib3's own (MaxRetryError...).
            if isinstance(err, OSError) or type(err).__module__.startswith("urllib3"):
                raise self._down(err) from None
            raise

    def _down(self, err: Exception) -> UnavailableError:
        if _is_tls_refusal(err):
            logger.warning("object store %s: TLS refused: %s", self.where, type(err).__name__)
            return UnavailableError(
                f"the object store ({self.where}) could not be reached over TLS: its "
                "certificate is not trusted here; give the CA that signed it (--s3-ca or "
                "HOLO_S3_CA)"
            )
        logger.warning("object store %s does not answer: %s", self.where, type(err).__name__)
        return UnavailableError(
            f"the object store ({self.where}) does not answer; try again shortly"
        )

    def _stat(self, sha256: str) -> Any:
        """The object's metadata, or None if the bucket does not hold it."""
        with self._unavailable():
            try:
                return self._client.stat_object(self.bucket, self._key(sha256))
            except self._s3_error as err:
                if err.code in _ABSENT:
                    return None
                raise

    def has(self, sha256: str) -> bool:
        """Tell whether the blob is stored (here, or in the bucket)."""
        if not is_sha256(sha256):
            return False
        return self.cache.has(sha256) or self._stat(sha256) is not None

    def path(self, sha256: str) -> Path:
        """The blob's local file: from the cache, else fetched from the bucket and checked.

        Raises
        ------
        NotFoundError
            If neither holds it.
        ChecksumError
            If the bucket's bytes do not hash to their name (nothing is cached then).
        """
        if self.cache.has(sha256):
            return self.cache.path(sha256)
        if not is_sha256(sha256) or self._stat(sha256) is None:
            raise NotFoundError("blob", str(sha256))
        fd, name = tempfile.mkstemp(prefix="fetch.", suffix=".tmp", dir=self.cache.tmp)
        tmp = Path(name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, self._unavailable():
                response = self._client.get_object(self.bucket, self._key(sha256))
                try:
                    for block in response.stream(_READ_BYTES):
                        digest.update(block)
                        out.write(block)
                finally:
                    response.close()
                    response.release_conn()
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                logger.error("object %s in %s does not match its name", sha256, self.where)
                raise ChecksumError(
                    f"blob {sha256} in the object store ({self.where}) does not match its "
                    "name; restore it from a backup"
                )
            self.cache.adopt(tmp, sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return self.cache.path(sha256)

    def size(self, sha256: str) -> int:
        """The blob's size in bytes (:class:`NotFoundError` if absent)."""
        if self.cache.has(sha256):
            return self.cache.size(sha256)
        stat = self._stat(sha256) if is_sha256(sha256) else None
        if stat is None:
            raise NotFoundError("blob", str(sha256))
        return int(stat.size)

    def _upload(self, sha256: str) -> None:
        """Put the cached blob in the bucket unless it is there already."""
        if self._stat(sha256) is not None:
            return
        with self._unavailable():
            self._client.fput_object(self.bucket, self._key(sha256), str(self.cache.path(sha256)))

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its SHA-256."""
        sha256 = self.cache.put_bytes(data)
        self._upload(sha256)
        return sha256

    def put_file(self, source: Path) -> str:
        """Copy a file into the store and return its SHA-256."""
        sha256 = self.cache.put_file(source)
        self._upload(sha256)
        return sha256

    def adopt(self, path: Path, sha256: str) -> None:
        """Move a complete file whose bytes hash to ``sha256`` into the store."""
        self.cache.adopt(path, sha256)
        self._upload(sha256)

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_object(self, key: str, data: bytes) -> None:
        """Put ``data`` as the object ``key`` (under the prefix), replacing any such object:
        for what is not a blob (an unfinished upload's chunks, :mod:`holo.store.parts`)."""
        with self._unavailable():
            self._client.put_object(self.bucket, self._object_key(key), io.BytesIO(data), len(data))

    def read_object(self, key: str) -> Iterator[bytes]:
        """The bytes of the object ``key``, in blocks of up to 1 MiB."""
        with self._unavailable():
            response = self._client.get_object(self.bucket, self._object_key(key))
            try:
                yield from response.stream(_READ_BYTES)
            finally:
                response.close()
                response.release_conn()

    def list_folders(self, folder: str) -> list[str]:
        """The names of the "folders" right under ``folder`` (under the prefix): the keys'
        next part up to a ``/``."""
        start = self._object_key(folder)
        with self._unavailable():
            return [
                o.object_name[len(start) :].rstrip("/")
                for o in self._client.list_objects(self.bucket, prefix=start, recursive=False)
                if o.is_dir
            ]

    def remove_under(self, folder: str) -> None:
        """Delete every object whose key starts with ``folder`` (under the prefix)."""
        from minio.deleteobjects import DeleteObject

        with self._unavailable():
            names = [
                DeleteObject(o.object_name)
                for o in self._client.list_objects(
                    self.bucket, prefix=self._object_key(folder), recursive=True
                )
            ]
            if names:
                for failed in self._client.remove_objects(self.bucket, names):
                    logger.warning(
                        "object store %s: could not delete an object: %s", self.where, failed.code
                    )

    def clear_tmp(self) -> int:
        """Delete the cache's leftover temporary files."""
        return self.cache.clear_tmp()

    @property
    def tmp(self) -> Path:
        """The cache's scratch folder (the store hands it out as its ``tmp_dir``)."""
        return self.cache.tmp


def _is_tls_refusal(err: BaseException) -> bool:
    """Whether a connection failed on the certificate (urllib3 wraps the SSLError in a
    MaxRetryError whose ``reason`` it is)."""
    import ssl

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or type(seen).__name__ == "SSLError":
            return True
        seen = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
    return False
