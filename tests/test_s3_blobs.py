"""Blobs in an S3-compatible object store (``holo.store.s3``) against a real one: SeaweedFS's
S3 gateway, started for the module (``tests/s3_server.py``). Two nodes, each with its own
local cache, share one bucket: what one stores the other reads, checked against its name;
bytes in the bucket that do not match their name are refused; a silent store is
UNAVAILABLE.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import S3Server

from holo.errors import ChecksumError, InvalidRequestError, NotFoundError, UnavailableError
from holo.store.blobs import BlobDir
from holo.store.s3 import S3Blobs


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with S3Server() as endpoint:
        yield endpoint


def node(folder: Path, endpoint: str, url: str = "s3://holo-test/site") -> S3Blobs:
    return S3Blobs(url, BlobDir(folder / "blobs", folder / "tmp"), endpoint=endpoint)


def test_what_one_node_stores_another_reads(s3: str, tmp_path: Path) -> None:
    a, b = node(tmp_path / "a", s3), node(tmp_path / "b", s3)
    data = os.urandom(3 << 20)  # 3 MiB: several reads of the stream
    sha = a.put_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert b.has(sha) and not b.cache.has(sha)
    assert b.size(sha) == len(data)
    assert b.path(sha).read_bytes() == data  # fetched once into b's cache...
    assert b.cache.has(sha)
    assert b.path(sha) == b.cache.path(sha)  # ...and read from there after
    source = tmp_path / "file.bin"
    source.write_bytes(b"a file")
    assert a.path(b.put_file(source)).read_bytes() == b"a file"
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_an_absent_blob_is_not_found(s3: str, tmp_path: Path) -> None:
    a = node(tmp_path, s3)
    absent = "0" * 64
    assert not a.has(absent) and not a.has("not-a-digest")
    with pytest.raises(NotFoundError):
        a.path(absent)
    with pytest.raises(NotFoundError):
        a.size(absent)


def test_bytes_that_do_not_match_their_name_are_refused(s3: str, tmp_path: Path) -> None:
    a, b = node(tmp_path / "a", s3), node(tmp_path / "b", s3)
    sha = a.put_bytes(b"the model as published")
    # Someone overwrites the object behind holo's back.
    a._client.put_object(a.bucket, a._key(sha), io.BytesIO(b"something else"), 14)
    with pytest.raises(ChecksumError, match=f"blob {sha} in the object store"):
        b.path(sha)
    assert not b.cache.has(sha) and list((tmp_path / "b" / "tmp").iterdir()) == []
    assert a.path(sha).read_bytes() == b"the model as published"  # a's cache is intact


def test_a_prefix_keeps_sites_apart_in_one_bucket(s3: str, tmp_path: Path) -> None:
    a = node(tmp_path / "a", s3, "s3://holo-test/site-a")
    b = node(tmp_path / "b", s3, "s3://holo-test/site-b")
    sha = a.put_bytes(b"site a only")
    assert not b.has(sha)


def test_a_bad_url_or_no_endpoint_is_one_clear_line(tmp_path: Path) -> None:
    cache = BlobDir(tmp_path / "blobs", tmp_path / "tmp")
    with pytest.raises(InvalidRequestError, match="is not s3://bucket/prefix"):
        S3Blobs("http://bucket/x", cache, endpoint="http://127.0.0.1:1")
    os.environ.pop("HOLO_S3_ENDPOINT", None)
    with pytest.raises(InvalidRequestError, match="the S3 endpoint is not set"):
        S3Blobs("s3://bucket/x", cache)


def test_a_silent_object_store_is_unavailable(tmp_path: Path) -> None:
    server = S3Server()
    endpoint = server.__enter__()
    try:
        a = node(tmp_path, endpoint)
        stored = a.put_bytes(b"kept in the cache")
    finally:
        server.__exit__(None, None, None)
    with pytest.raises(UnavailableError, match=r"object store \(127\.0\.0\.1:\d+/holo-test\)"):
        a.put_bytes(b"new bytes")
    with pytest.raises(UnavailableError):
        a.path("1" * 64)
    assert a.path(stored).read_bytes() == b"kept in the cache"  # the local copy still serves


def test_a_gateway_answering_errors_that_are_not_s3_is_unavailable(tmp_path: Path) -> None:
    """A gateway whose backend is stopping answers 503 with a body that is not an S3 error
    document (SeaweedFS does, while it shuts down): that too is UNAVAILABLE, not a crash."""
    import http.server
    import threading

    class Stopping(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(503)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stopping)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UnavailableError, match="does not answer"):
            node(tmp_path, f"http://127.0.0.1:{gateway.server_address[1]}")
    finally:
        gateway.shutdown()


def test_an_object_store_over_tls_with_the_hospitals_own_ca(tmp_path: Path) -> None:
    from tls import make_pki

    pki = make_pki(tmp_path / "pki")
    ca = tmp_path / "pki" / "ca.pem"
    ca.write_bytes(pki.ca_pem)
    with S3Server(tls=(pki.cert, pki.key, ca)) as endpoint:
        assert endpoint.startswith("https://")
        with pytest.raises(UnavailableError, match=r"certificate is not trusted.*--s3-ca"):
            node(tmp_path / "untrusting", endpoint)  # the system's CAs do not know it
        a = S3Blobs(
            "s3://holo-test/tls", BlobDir(tmp_path / "a" / "b", tmp_path / "a" / "t"),
            endpoint=endpoint, ca_file=str(ca),
        )  # fmt: skip
        b = S3Blobs(
            "s3://holo-test/tls", BlobDir(tmp_path / "b" / "b", tmp_path / "b" / "t"),
            endpoint=endpoint, ca_file=str(ca),
        )  # fmt: skip
        sha = a.put_bytes(b"over TLS")
        assert b.path(sha).read_bytes() == b"over TLS"
    with pytest.raises(InvalidRequestError, match="--s3-ca"):
        S3Blobs("s3://holo-test/x", BlobDir(tmp_path / "c", tmp_path / "t"),
                endpoint=endpoint, ca_file=str(tmp_path / "missing.pem"))  # fmt: skip
