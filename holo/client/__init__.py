"""The Python client SDK of a holo node: what the CLI, the headset simulator, tests and
scripts use. It needs only grpcio, protobuf and numpy (``pip install holo``).

=========================  =============================================================
:class:`HoloClient`        uploads, conversions, models (blocking; :mod:`.assets`)
:class:`SessionClient`     one participant of a shared session (asyncio; :mod:`.session`)
:class:`VideoClient`       tracks, frames, recordings, replays (asyncio; :mod:`.video`)
:class:`ClockSync`         the session clock, NTP-style (:mod:`.clock`)
:class:`SessionTimeline`   the session as of any recent moment, to pair with video frames
                           (:mod:`.timeline`)
=========================  =============================================================

Example::

    from holo.client import HoloClient

    with HoloClient("127.0.0.1:50051", token=token, insecure=True) as client:
        model = client.list_models()[0]
        client.fetch_model(model.model_id.value, "knee.glb")

Failures raise :class:`ClientError` (a :class:`~holo.errors.HoloError`) with the status
code and the server's one-line message.
"""

from holo.client.assets import FetchResult, HoloClient, study_files
from holo.client.channel import ClientError, aio_channel_for, call_metadata, channel_for
from holo.client.clock import ClockSync
from holo.client.retry import RetryPolicy
from holo.client.session import SessionClient
from holo.client.timeline import FrameSync, SessionTimeline
from holo.client.video import VideoClient, WatchItem

__all__ = [
    "ClientError",
    "ClockSync",
    "FetchResult",
    "FrameSync",
    "HoloClient",
    "RetryPolicy",
    "SessionClient",
    "SessionTimeline",
    "VideoClient",
    "WatchItem",
    "aio_channel_for",
    "call_metadata",
    "channel_for",
    "study_files",
]
