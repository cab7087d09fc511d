"""The OpenIGTLink gateway: one session participant that serves 3D Slicer and trackers.

:class:`IgtlGateway` joins a session with the SDK (:class:`~holo.client.session.SessionClient`;
its role and case are the token's) and listens for OpenIGTLink peers on TCP (loopback,
port 18944, by default). To every peer it sends each model of the session as POLYDATA, its
anchor as TRANSFORM and its annotations as POINT (:mod:`holo.igtl.scene` says in which
frames), and then what changes, as it changes. From every peer it takes TRANSFORM and
POSITION messages as tracker samples.

**Tracker samples: the hook.** Each TRANSFORM or POSITION becomes a
:class:`~holo.igtl.tracker.TrackerSample` handed to every tracker sink
(:meth:`IgtlGateway.add_tracker_sink`); by default the newest becomes the gateway
participant's pointer (:class:`~holo.igtl.tracker.PointerForwarder`). :mod:`holo.igtl.tracker`
shows how a registration step adds its own sink.

**What goes to peers, and how fast.** Nothing queues per peer: each peer's writer sends
what that peer has not yet seen of the current scene (a model's POLYDATA once, a
TRANSFORM when the anchor differs from the last one sent, a POINT list when the
annotations differ) and waits for the socket to drain before looking again, so a slow
peer skips intermediate anchors and gets the newest, and memory does not grow with it
(the rule for ephemeral values, ARCHITECTURE.md). A live drag is sent like an anchor.

**Bad input** (a malformed header, a wrong CRC, a body over 1 MiB, a tracker body that
does not fit its type, a body that stops arriving) drops that connection with one log
line naming the peer's address and what was wrong, never a device name or a value.
Messages of types the gateway does not take (STATUS, STRING, GET_*, ...) are skipped by
their body size, as the protocol intends, once their CRC checks.

**Security.** OpenIGTLink has none: whoever reaches the port sees every model and moves
the participant's pointer. Listen on loopback (the default) or a trusted interface only.
"""

from __future__ import annotations

from holo.extras import need

need("igtl", "pyigtl", feature="the OpenIGTLink gateway")

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from holo.client.assets import HoloClient
from holo.client.channel import ClientError
from holo.client.session import SessionClient
from holo.errors import HoloError, IgtlError
from holo.igtl.messages import read_message, tracker_matrix
from holo.igtl.scene import anchor_message, model_polydata, points_message
from holo.igtl.tracker import PointerForwarder, TrackerSample, TrackerSink, tracker_sample
from holo.session.records import Annotation, EphemeralUpdate, Pose, SceneModel
from holo.session.state import Event, SessionState

__all__ = ["DEFAULT_PORT", "GatewayConfig", "IgtlGateway", "parse_listen"]

logger = logging.getLogger(__name__)

#: The OpenIGTLink port (IANA-registered, what 3D Slicer's OpenIGTLinkIF connects to).
DEFAULT_PORT = 18944
_LOOPBACK = ("127.0.0.1", "::1", "localhost")

FetchModel = Callable[[str], Awaitable[bytes]]  # model id -> its GLB


@dataclass
class GatewayConfig:
    """How the gateway serves.

    Attributes
    ----------
    host, port
        Where to listen (``parse_listen``); port 0 picks a free one (tests).
    level
        Level of detail of the POLYDATA sent: 0 coarsest ... -1 full detail.
    pointer_device, pointer_axis
        As :class:`PointerForwarder`'s ``device`` and ``axis``.
    max_peers
        Connections served at once; more are closed at once with a log line.
    body_timeout_s
        A body that has not fully arrived this long after its header drops the peer.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    level: int = -1
    pointer_device: str | None = None
    pointer_axis: tuple[float, float, float] = (0.0, 0.0, -1.0)
    max_peers: int = 16
    body_timeout_s: float = 10.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise IgtlError(f"--listen {listen!r} is not HOST:PORT; e.g. 127.0.0.1:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Peer:
    """One connected OpenIGTLink peer and what it has been sent of the scene."""

    address: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    polydata: set[str] = field(default_factory=set)
    anchors: dict[str, Pose] = field(default_factory=dict)
    points: dict[str, tuple[Annotation, ...]] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  # message types skipped (logged once)


class IgtlGateway:
    """Serve one session to OpenIGTLink peers (see the module's docstring).

    Parameters
    ----------
    server
        The holo server, ``HOST:PORT``.
    token
        The gateway participant's token: its case and role (an expert's or a presenter's
        to point; an observer's only shows the session).
    session_id
        The session to join; empty: the open session of the token's case.
    ca, insecure
        TLS as for every client (:class:`~holo.client.session.SessionClient`).
    config
        Where and how to serve.
    fetch_model
        ``await fetch_model(model_id)``: the model's GLB; default: downloaded from
        ``server`` with :class:`~holo.client.HoloClient` (in a thread).
    """

    def __init__(
        self,
        server: str,
        *,
        token: str,
        session_id: str = "",
        ca: bytes | None = None,
        insecure: bool = False,
        config: GatewayConfig | None = None,
        fetch_model: FetchModel | None = None,
        display_name: str = "OpenIGTLink gateway",
    ) -> None:
        self.config = config or GatewayConfig()
        self.session = SessionClient(
            server,
            token=token,
            ca=ca,
            insecure=insecure,
            display_name=display_name,
            on_event=self._on_event,
            on_ephemeral=self._on_ephemeral,
            on_reset=self._on_reset,
        )
        self.session_id = session_id
        self._assets: HoloClient | None = None
        self._asset_args = (server, token, ca, insecure)
        self._fetch_model = fetch_model or self._download
        self._peers: set[_Peer] = set()
        self._meshes: dict[str, bytes] = {}  # model id -> its POLYDATA message
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._dragging: dict[str, Pose] = {}  # model id -> the live drag's pose
        self._sinks: list[TrackerSink] = []
        self._failed_sinks: set[int] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._peer_tasks: set[asyncio.Task[None]] = set()
        self.pointer = PointerForwarder(
            self.session, device=self.config.pointer_device, axis=self.config.pointer_axis
        )
        self.add_tracker_sink(self.pointer)
        self.samples = 0  # tracker samples received
        self.dropped = 0  # connections dropped for bad input

    async def _download(self, model_id: str) -> bytes:
        if self._assets is None:
            server, token, ca, insecure = self._asset_args
            self._assets = HoloClient(server, token=token, ca=ca, insecure=insecure)
        result = await asyncio.to_thread(self._assets.fetch_model, model_id)
        return result.data

    # the hook ------------------------------------------------------------------------------

    def add_tracker_sink(self, sink: TrackerSink) -> None:
        """Deliver every tracker sample to ``sink`` too (called on the event loop; it must
        not block: hand the sample to a queue or a task)."""
        self._sinks.append(sink)

    def remove_tracker_sink(self, sink: TrackerSink) -> None:
        self._sinks.remove(sink)

    def _deliver(self, sample: TrackerSample) -> None:
        self.samples += 1
        for sink in list(self._sinks):
            try:
                sink(sample)
            except Exception as err:  # a sink's failure must not cost the others or the peer
                if id(sink) not in self._failed_sinks:
                    self._failed_sinks.add(id(sink))
                    logger.warning(
                        "a tracker sink failed (%s); it goes on receiving", type(err).__name__
                    )

    # serving ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the session, listen, start the pointer forwarder; returns once listening.

        Raises
        ------
        ClientError
            The session cannot be found or joined (the token's case has none open, or
            the token is refused).
        OSError
            The address cannot be listened on (in use, not this machine's).
        """
        if not self.session_id:
            self.session_id = (await self.session.find_session()).session_id.value
        await self.session.join(self.session_id)
        self._server = await asyncio.start_server(
            self._serve_peer, self.config.host, self.config.port
        )
        self._spawn(self.pointer.run(), "pointer")
        if self.config.host not in _LOOPBACK:
            logger.warning(
                "OpenIGTLink has no security of its own: anyone who reaches %s:%d sees the "
                "session's models and moves this participant's pointer",
                self.config.host,
                self.port,
            )

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the gateway first"
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, *, leave: bool = True) -> None:
        """Stop serving; ``leave`` the session too (else presence times the gateway out)."""
        if self._server is not None:
            self._server.close()
        for task in [*self._tasks, *self._loading.values(), *self._peer_tasks]:
            task.cancel()
        await asyncio.gather(
            *self._tasks, *self._loading.values(), *self._peer_tasks, return_exceptions=True
        )
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        with contextlib.suppress(ClientError):
            if leave and self.session.participant_id:
                await self.session.leave()
        await self.session.close()
        if self._assets is not None:
            self._assets.close()

    def _spawn(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port, *_ = writer.get_extra_info("peername") or ("?", 0)
        peer = _Peer(f"{host}:{port}")
        if len(self._peers) >= self.config.max_peers:
            logger.warning(
                "OpenIGTLink peer %s refused: %d peers connected already",
                peer.address,
                len(self._peers),
            )
            writer.close()
            return
        self._peers.add(peer)
        task = asyncio.current_task()
        if task is not None:
            self._peer_tasks.add(task)
        logger.info("OpenIGTLink peer %s connected", peer.address)
        reading = asyncio.ensure_future(self._read_peer(peer, reader))
        writing = asyncio.ensure_future(self._write_peer(peer, writer))
        reason = "closed the connection"
        try:
            done, _ = await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, IgtlError):
                    self.dropped += 1
                    reason = f"dropped: {error.message}"
                elif isinstance(error, (ConnectionError, asyncio.IncompleteReadError)):
                    reason = "closed the connection"
                elif error is not None:
                    reason = f"dropped: {type(error).__name__}"
        finally:
            self._peers.discard(peer)
            if task is not None:
                self._peer_tasks.discard(task)
            for task in (reading, writing):
                task.cancel()
            await asyncio.gather(reading, writing, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
        logger.log(
            logging.WARNING if reason.startswith("dropped") else logging.INFO,
            "OpenIGTLink peer %s %s",
            peer.address,
            reason,
        )

    async def _read_peer(self, peer: _Peer, reader: asyncio.StreamReader) -> None:
        while True:
            header, body = await read_message(reader, body_timeout_s=self.config.body_timeout_s)
            if header.message_type in ("TRANSFORM", "POSITION"):
                matrix = tracker_matrix(header, body)
                self._deliver(tracker_sample(header.device_name, header.message_type, matrix))
            elif header.message_type not in peer.skipped:
                peer.skipped.add(header.message_type)
                logger.info(
                    "OpenIGTLink peer %s: skipping %s messages", peer.address, header.message_type
                )

    async def _write_peer(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        while True:
            peer.wake.clear()
            for data in self._news(peer):
                writer.write(data)
                await writer.drain()
            await peer.wake.wait()

    def _news(self, peer: _Peer) -> Iterator[bytes]:
        """What ``peer`` has not seen of the scene, computed lazily (after each drain)."""
        state = self.session.state
        for model_id, model in list(state.models.items()):
            mesh = self._meshes.get(model_id)
            if mesh is not None and model_id not in peer.polydata:
                peer.polydata.add(model_id)
                yield mesh
            pose = self._dragging.get(model_id, model.anchor_pose)
            if peer.anchors.get(model_id) != pose:
                peer.anchors[model_id] = pose
                yield anchor_message(model_id, pose)
            annotations = tuple(a for a in state.annotations.values() if a.model_id == model_id)
            if peer.points.get(model_id, ()) != annotations:
                peer.points[model_id] = annotations
                yield points_message(model_id, list(annotations))

    def _changed(self) -> None:
        for peer in self._peers:
            peer.wake.set()

    # the session --------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.kind in ("model_loaded", "anchor_committed") and isinstance(
            event.data, SceneModel
        ):
            self._dragging.pop(event.data.model_id, None)  # committed: the drag is over
            self._load(event.data.model_id)
        self._changed()

    def _on_ephemeral(self, update: EphemeralUpdate) -> None:
        value = update.value
        if isinstance(value, SceneModel) and value.model_id in self.session.state.models:
            self._dragging[value.model_id] = value.anchor_pose  # the drag channel's value
            self._changed()

    def _on_reset(self, state: SessionState) -> None:
        self._dragging.clear()
        for model_id in state.models:
            self._load(model_id)
        self._changed()

    def _load(self, model_id: str) -> None:
        if model_id not in self._meshes and model_id not in self._loading:
            self._loading[model_id] = asyncio.ensure_future(self._fetch(model_id))

    async def _fetch(self, model_id: str) -> None:
        try:
            glb = await self._fetch_model(model_id)
            # Draco decoding (DracoPy releases the GIL) and packing: off the event loop.
            self._meshes[model_id] = await asyncio.to_thread(
                model_polydata, glb, model_id, self.config.level
            )
            self._changed()
        except HoloError as err:
            logger.warning("model %s is not sent as POLYDATA: %s", model_id, err.message)
        finally:
            self._loading.pop(model_id, None)
