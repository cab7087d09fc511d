"""Every Prometheus metric of the server: its name, labels and meaning, in one place.

The core counts what only it sees (a frame a viewer skipped, how long an event waited for
its subscriber, how a job ended) with one call on a metric defined here; the server counts
calls (:mod:`holo.server.monitor`) and samples what it holds (participants, viewers, the
queue, the store) when it is scraped, through :class:`Sampled`. ``holo serve --metrics``
exposes :data:`REGISTRY` over HTTP.

Label values are bounded and say nothing of a patient or a procedure: a method name, a
status code, a role, a stream kind, a job outcome. Never a case, session, participant,
study or model id (each would be one series per procedure, and an id in a metrics system
is an id outside the audit trail).

``prometheus_client`` comes with the ``server`` extra. Without it (the lean SDK) every
metric here is a stand-in that does nothing, so the core imports this module freely.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = [
    "FANOUT_LAG",
    "JOB_DURATION",
    "OPEN_STREAMS",
    "REGISTRY",
    "RPC_DURATION",
    "RPC_HANDLED",
    "RPC_RECEIVED",
    "RPC_SENT",
    "RPC_STARTED",
    "SESSION_BUS_UP",
    "SESSION_RESYNCS",
    "VIDEO_FRAMES_SKIPPED",
    "Sample",
    "Sampled",
]

logger = logging.getLogger(__name__)

try:
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import CollectorRegistry
except ImportError:  # the lean SDK: metrics are counted nowhere
    prometheus_client = None  # type: ignore[assignment]

#: Latency of a call: unary calls take milliseconds, GetModel seconds, and a Join stream
#: lasts the procedure (hours): the buckets reach 2 h so a stream's length still lands.
RPC_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0),
)
#: Fan-out lag: an event is handed to a keeping-up subscriber within a millisecond or two;
#: a pacing interval is 17-33 ms; past a second a headset shows it late.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A conversion: seconds for a radiograph, ~10 s for the sample knee, minutes for a
#: full-body CT; an hour is the outlier to look at.
JOB_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class _Idle:
    """Stands in for every metric kind when prometheus_client is not installed."""

    def labels(self, *values: str) -> _Idle:
        return self

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, value: float) -> None: ...


#: One sampled series: (metric name, label values in the metric's order, value).
Sample = tuple[str, tuple[str, ...], float]

#: The metrics sampled at scrape time: name -> (help, label names).
SAMPLED: dict[str, tuple[str, tuple[str, ...]]] = {
    "holo_session_participants": (
        "Participants of the sessions this node serves, by role (present or away)",
        ("role",),
    ),
    "holo_sessions_live": ("Sessions this node serves now", ()),
    "holo_video_viewers": ("Viewers of the video tracks this node serves", ()),
    "holo_jobs_queued": ("Conversion jobs waiting for a worker (every node's, the catalog's)", ()),
    "holo_jobs_running": ("Conversion jobs running on this node", ()),
    "holo_store_blob_bytes": (
        "Bytes of the blobs the catalog names (uploaded files and models, each content once)",
        (),
    ),
    "holo_store_studies": ("Studies in the store", ()),
    "holo_store_models": ("Models in the store", ()),
}


class Sampled:
    """The metrics of :data:`SAMPLED`, read from sources when the registry is collected.

    A source is a callable returning :data:`Sample` tuples; a running server adds its
    own (:meth:`add`) and removes them when it stops. Sources of several servers in one
    process (tests) are summed. A source that fails is logged and left out of that scrape.
    """

    def __init__(self) -> None:
        self._sources: dict[int, Callable[[], Iterable[Sample]]] = {}
        self._lock = threading.Lock()

    def add(self, source: Callable[[], Iterable[Sample]]) -> Callable[[], None]:
        """Sample ``source`` at every scrape; returns the function that removes it."""
        with self._lock:
            key = id(source)
            self._sources[key] = source

        def remove() -> None:
            with self._lock:
                self._sources.pop(key, None)

        return remove

    def collect(self) -> Iterator[Any]:
        if prometheus_client is None:
            return
        with self._lock:
            sources = list(self._sources.values())
        totals: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in SAMPLED}
        for source in sources:
            try:
                for name, labels, value in source():
                    series = totals[name]
                    series[labels] = series.get(labels, 0.0) + value
            except Exception as err:  # one source down (the catalog) leaves the others
                logger.warning("a metrics source failed: %s", err)
        for name, (text, label_names) in SAMPLED.items():
            family = GaugeMetricFamily(name, text, labels=list(label_names))
            for labels, value in sorted(totals[name].items()):
                family.add_metric(list(labels), value)
            yield family

    def describe(self) -> Iterator[Any]:
        return iter(())  # names are not reserved: collected afresh at every scrape


SAMPLED_SOURCES = Sampled()


class Cached:
    """A sample source asked at most once per ``max_age_s`` (the store's counts are SQL
    queries: a scrape every 15 s by several Prometheus servers costs one per interval)."""

    def __init__(self, source: Callable[[], list[Sample]], max_age_s: float = 30.0) -> None:
        self._source = source
        self._max_age_s = max_age_s
        self._at = -float("inf")
        self._last: list[Sample] = []
        self._lock = threading.Lock()

    def __call__(self) -> list[Sample]:
        with self._lock:
            if time.monotonic() - self._at >= self._max_age_s:
                self._last = self._source()
                self._at = time.monotonic()
            return self._last


if prometheus_client is not None:
    REGISTRY: Any = CollectorRegistry()
    prometheus_client.ProcessCollector(registry=REGISTRY)  # CPU, memory, open files
    REGISTRY.register(SAMPLED_SOURCES)

    def _counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        return prometheus_client.Counter(name, text, labels, registry=REGISTRY)

    def _gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        return prometheus_client.Gauge(name, text, labels, registry=REGISTRY)

    def _histogram(
        name: str, text: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Any:
        return prometheus_client.Histogram(name, text, labels, registry=REGISTRY, buckets=buckets)

else:
    REGISTRY = None

    def _counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        return _Idle()

    def _gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        return _Idle()

    def _histogram(
        name: str, text: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Any:
        return _Idle()


# Calls (holo.server.monitor): both ports, every service.
RPC_STARTED = _counter("holo_rpc_started", "Calls started", ("method",))
RPC_HANDLED = _counter("holo_rpc_handled", "Calls finished, by status code", ("method", "code"))
RPC_DURATION = _histogram(
    "holo_rpc_duration_seconds",
    "How long a call took, start to status (a stream: its whole life)",
    ("method",),
    RPC_BUCKETS,
)
RPC_RECEIVED = _counter("holo_rpc_messages_received", "Request messages received", ("method",))
RPC_SENT = _counter("holo_rpc_messages_sent", "Response messages sent", ("method",))
OPEN_STREAMS = _gauge("holo_open_streams", "Response streams open now, by kind", ("kind",))

# Sessions (holo.session).
FANOUT_LAG = _histogram(
    "holo_session_fanout_lag_seconds",
    "From a durable event reaching this node's log to its subscriber taking it "
    "(per message: its oldest event)",
    (),
    LAG_BUCKETS,
)
SESSION_RESYNCS = _counter(
    "holo_session_resyncs", "Subscribers that fell too far behind and were sent a snapshot"
)
SESSION_BUS_UP = _gauge("holo_session_bus_up", "1 while the session bus answers, 0 while not")

# Video (holo.video).
VIDEO_FRAMES_SKIPPED = _counter(
    "holo_video_frames_skipped", "Frames not sent to a viewer that fell behind"
)

# Jobs (holo.jobs).
JOB_DURATION = _histogram(
    "holo_job_duration_seconds",
    "How long a conversion ran on this node, by outcome "
    "(succeeded, failed, cancelled, handed_back, lost)",
    ("outcome",),
    JOB_BUCKETS,
)
