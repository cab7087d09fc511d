"""The asset store: SQLite metadata plus content-addressed blob files in one folder, or
PostgreSQL and an S3 object store shared by several nodes.

A store path is all a user configures::

    from holo.store import Store

    store = Store("/var/lib/holo")
    upload = store.start_upload(case_id="c1", name="IM0001", size_bytes=n, sha256=digest,
                                subject="alice")
    store.append_chunk(upload.upload_id, 0, data)

Several nodes share one store with ``Store(root, catalog="postgresql://...",
blobs="s3://bucket/prefix")``: ``root`` is then the node's cache.

Writes are atomic and durable (fsync before anything points at them), so a crash or a
``kill -9`` at any moment leaves a store that opens, recovers and serves only whole,
correctly named blobs. The store is below the server layer: it knows nothing of gRPC.
"""

from holo.store.records import JobRecord, ModelRecord, StudyRecord, UploadRecord
from holo.store.store import Store

__all__ = ["JobRecord", "ModelRecord", "Store", "StudyRecord", "UploadRecord"]
