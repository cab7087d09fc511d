"""Faults of issue 20 for PACS pulls (issue 19), on real processes: a ``holo serve`` stopped
by SIGTERM in the middle of a pull, and clients that stop reading ``WatchPull`` while a
pull goes on (the server's memory, measured).

The archive is Debian's Orthanc (``tests/orthanc_server.py``) holding the 140-slice skull
phantom CT (72 MiB) of the shared data. It is reached by C-GET through a TCP proxy that
delays each direction by 15 ms (``tests/netdelay.py``): a PACS across a WAN link. C-GET
brings one instance per round trip (the archive sends the next once holo has answered the
last), so a pull takes ~6 s instead of ~2 s on loopback, long enough to stop it in the
middle whatever the machine's load. The bytes and both ends are real; only the path is
slowed. The same archive on loopback (node ``near``) makes the reference pulls.

SIGTERM during the other kinds of work, and the other streams' slow readers, are in
``test_faults.py``; a PACS that goes away mid-pull, and a cancelled pull, in
``test_pacs_service.py``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydicom
import pytest
from netdelay import DelayProxy
from orthanc_server import OrthancServer

from holo.pacs import PacsNode, PacsNodes
from holo.store import Store
from holo.testing import ServeProcess
from holo.v1 import asset_pb2, pacs_pb2, pacs_pb2_grpc

CASE = "case-pacs-faults"
SKULL = "ct_skull_phantom_philips_bone_1mm"
GRACE_S = 5.0  # holo serve's default grace period (ServerConfig.grace_s)
#: One way, each direction: a fresh pull by C-GET costs ~45 ms an instance (the 140 in
#: ~6 s, against ~2 s on loopback).
DELAY_S = 0.015
#: Instances fetched when the server is stopped mid-fetch. The rest of a series partly
#: held is fetched one C-GET per instance (holo.pacs.pull._batches: exactly what is
#: missing), ~180 ms each through the link: 40 left keep the test near 20 s.
STOP_AT = 100


class _ThreadedProxy:
    """:class:`netdelay.DelayProxy` on an event loop of its own thread (the tests here are
    synchronous: their clients block)."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        proxy = DelayProxy(target_port, base_s=delay_s, jitter_s=0.0)
        self._proxy = asyncio.run_coroutine_threadsafe(proxy.start(), self._loop).result(10)
        self.port = self._proxy.port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._proxy.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def skull(shared_data: Path) -> list[Path]:
    return sorted((shared_data / SKULL).glob("*.dcm"))


@pytest.fixture(scope="module")
def orthanc(skull: list[Path]) -> Iterator[OrthancServer]:
    with OrthancServer() as pacs:
        pacs.store(skull)
        yield pacs


@pytest.fixture(scope="module")
def far_port(orthanc: OrthancServer) -> Iterator[int]:
    """Orthanc's DICOM port across the slow link."""
    proxy = _ThreadedProxy(orthanc.dicom_port, DELAY_S)
    yield proxy.port
    proxy.close()


def _nodes(data: Path, orthanc: OrthancServer, far_port: int) -> None:
    """``far``: the archive by C-GET across the slow link; ``near``: the same on loopback."""
    for name, port in (("far", far_port), ("near", orthanc.dicom_port)):
        PacsNodes(data).add(PacsNode(name, ae_title=orthanc.ae_title, host="127.0.0.1", port=port))


def _study_uid(skull: list[Path]) -> str:
    return str(pydicom.dcmread(skull[0], stop_before_pixels=True).StudyInstanceUID)


def _pulled_files(data: Path) -> list[Path]:
    root = data / "pacs-pulls"
    return sorted(root.rglob("*.dcm")) if root.exists() else []


def _watch(node: ServeProcess, pull_id: str) -> Iterator[pacs_pb2.Pull]:
    """WatchPull's states, read as they come (a channel of its own; a stream that never
    ends fails DEADLINE_EXCEEDED after a minute: a pull here takes ~6 s)."""
    channel = grpc.insecure_channel(node.address)
    stub = pacs_pb2_grpc.PacsServiceStub(channel)
    meta = (("authorization", f"Bearer {node.token('radiologist', CASE)}"),)
    request = pacs_pb2.WatchPullRequest(pull_id=pacs_pb2.PullId(value=pull_id))
    try:
        yield from stub.WatchPull(request, metadata=meta, timeout=60)
    finally:
        channel.close()


# 1. SIGTERM mid-pull -----------------------------------------------------------------------


def _blobs(data: Path) -> int:
    """Files the store holds by content (``<data>/blobs``): a pull's storing under way."""
    root = data / "blobs"
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


@pytest.mark.parametrize("moment", ["fetching", "storing"])
def test_sigterm_mid_pull_exits_0_stores_no_half_study_and_the_next_pull_fetches_the_rest(
    tmp_path: Path, skull: list[Path], orthanc: OrthancServer, far_port: int, moment: str
) -> None:
    """SIGTERM to ``holo serve`` while it pulls the skull CT: ``fetching``, once 100 of the
    140 instances are in (by C-GET across the slow link); ``storing``, once the fetched
    files are being stored as a study (10 in the store). The process exits 0 within the
    grace period, no traceback; the pull's watcher hears it cancelled; no study exists
    (nothing half-stored) and the pull's folder keeps what arrived, whole instances only.
    Restarted on the same data folder, the same pull fetches only the rest (its
    ``instances_held`` is what the folder kept) and makes the study a complete pull makes:
    the same files, byte for byte, and the same summary."""
    data = tmp_path / "data"
    _nodes(data, orthanc, far_port)
    total = len(skull)
    study_uid = _study_uid(skull)
    via = "far" if moment == "fetching" else "near"
    node = ServeProcess(data, verbose=True)
    states: list[pacs_pb2.Pull] = []
    try:
        with node.client("radiologist", CASE) as radiologist:
            pull = radiologist.start_pull(via, study_uid)
        sent = 0.0
        for state in _watch(node, pull.pull_id.value):
            states.append(state)
            if sent:
                continue
            if moment == "fetching" and state.instances_fetched >= STOP_AT:
                assert state.instances_fetched < total, "the pull was not slowed"
            elif moment == "storing" and state.stage == "store":
                deadline = time.monotonic() + 30
                while _blobs(data) < 10:  # the storing thread has begun copying
                    assert time.monotonic() < deadline, "the pull stores nothing"
                    time.sleep(0.005)
            else:
                continue
            sent = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
        code = node.process.wait(3 * GRACE_S)
        took = time.monotonic() - sent
        assert code == 0, "".join(node.lines[-30:])
        assert took < GRACE_S + 2, f"stopping took {took:.1f} s"
    finally:
        node.stop()
    log = "".join(node.lines)
    assert "Traceback" not in log, log
    assert states[-1].state == asset_pb2.JOB_STATE_CANCELLED, states[-1]
    assert "the next pull of this study resumes" in states[-1].message
    kept = _pulled_files(data)
    stored = _blobs(data)
    print(
        f"SIGTERM {moment} ({states[-1].instances_fetched} of {total} fetched, {stored} "
        f"stored): exit 0 in {took:.2f} s; {len(kept)} instances kept"
    )
    if moment == "fetching":
        assert STOP_AT <= len(kept) < total, len(kept)
    else:
        assert len(kept) == total and 10 <= stored < total, (len(kept), stored)
    for path in kept:  # whole instances only (each landed by an atomic rename)
        pydicom.dcmread(path)
    with Store(data) as store:
        assert store.list_studies(CASE) == []

    again = ServeProcess(data, verbose=True)
    try:
        with again.client("radiologist", CASE) as radiologist:
            assert radiologist.list_studies() == []
            rest = radiologist.wait_pull(radiologist.start_pull(via, study_uid).pull_id.value)
            assert rest.state == asset_pb2.JOB_STATE_SUCCEEDED, rest.message
            assert (rest.instances_total, rest.instances_held) == (total, len(kept))
            assert rest.instances_fetched == total - len(kept)
            assert len(radiologist.list_studies()) == 1
        with again.client("radiologist", "case-reference") as reference:
            whole = reference.wait_pull(reference.start_pull("near", study_uid).pull_id.value)
            assert whole.state == asset_pb2.JOB_STATE_SUCCEEDED, whole.message
            assert (whole.instances_held, whole.instances_fetched) == (0, total)
    finally:
        assert again.stop() == 0
    with Store(data) as store:
        resumed = store.get_study(rest.study_id.value)
        complete = store.get_study(whole.study_id.value)
    assert len(resumed.files) == total
    assert sorted(resumed.files) == sorted(complete.files)  # (name, SHA-256) of each file
    assert resumed.summary == complete.summary
    assert not _pulled_files(data)


# 2. Clients that stop reading WatchPull ----------------------------------------------------

MiB = 1 << 20
#: A client on a constrained link that stops reading: the HTTP/2 window it grants a stream
#: is 1 KiB (7 Pull messages of ~140 bytes), not grown by BDP probing, so the server's
#: writes to it block and what WatchPull keeps for it is what the server holds. (With
#: gRPC's default 64 KiB window the whole progress of this pull, 146 messages ~20 KiB,
#: fits in the window: the client's transport holds it and the server never waits.)
SMALL_WINDOW = (("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0))
#: Each stalled client on a connection of its own, as separate devices are.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
STALLED_EACH = 20  # stalled streams of each kind: small window, default window
#: What the server may grow by, from the limits of what it holds:
#: - per stalled WatchPull stream: the one PullState and Pull message it is about to send
#:   (coalesced, never a queue: ~2 KiB as Python objects, 140 bytes encoded), gRPC's call
#:   (its arena, ~16 KiB, with the one message waiting for the window) and the client's
#:   connection (HPACK tables 2 x 4 KiB, read and write buffers: at most the 64 KiB window
#:   unsent): ~180 KiB x 40 streams = 7 MiB;
#: - the pull itself: one instance in flight by C-GET (0.5 MiB, ~3 copies between the
#:   socket, the PDU and the file), the storing thread reading one header and copying one
#:   file at a time, and what glibc's per-thread arenas keep of what the pull's threads
#:   (the fetch, pynetdicom's two, the storing one) freed: 16 MiB (measured: +6.5 MiB
#:   with no stalled stream, after a first pull made the baseline).
#: Sum 23 MiB; asserted with 24 MiB. A queue of every state per stream would add only
#: 146 x 2 KiB x 40 = 11 MiB here, within that bound: the backlog is checked by count
#: (what a small-window stream receives), the bound catches anything per stream that grows
#: with the pull (the pulled data, a copy per watcher: 72 MiB each).
STALLED_BOUND = 24 * MiB


def test_clients_that_stop_reading_watchpull_leave_memory_bounded_and_get_the_newest_state(
    tmp_path: Path, skull: list[Path], orthanc: OrthancServer, far_port: int
) -> None:
    """40 WatchPull streams opened on a pull and never read while it fetches the skull CT
    across the slow link: 20 from clients granting a 1 KiB window (the server's writes
    block), 20 with gRPC's default. The server's RSS grows by less than the bound its
    limits give, the pull completes, a reader follows it and other calls are answered
    meanwhile. Read at last, every stalled stream ends with the final state; a
    small-window one gets what its window held, then the newest state: no backlog."""
    from test_faults import rss_bytes

    data = tmp_path / "data"
    _nodes(data, orthanc, far_port)
    total = len(skull)
    study_uid = _study_uid(skull)
    node = ServeProcess(data)
    meta = (("authorization", f"Bearer {node.token('radiologist', CASE)}"),)
    channels: list[grpc.Channel] = []
    try:
        with node.client("radiologist", "case-warm-up") as warm:
            # A pull first: the modules and buffers a pull needs are in the baseline.
            done = warm.wait_pull(warm.start_pull("near", study_uid).pull_id.value)
            assert done.state == asset_pb2.JOB_STATE_SUCCEEDED, done.message
        time.sleep(1.0)
        baseline = rss_bytes(node.pid)
        with node.client("radiologist", CASE) as radiologist:
            pull = radiologist.start_pull("far", study_uid)
        request = pacs_pb2.WatchPullRequest(pull_id=pull.pull_id)
        stalled = []
        for options in [SMALL_WINDOW] * STALLED_EACH + [()] * STALLED_EACH:
            channel = grpc.insecure_channel(node.address, options=[*options, *OWN_CONNECTION])
            channels.append(channel)
            stub = pacs_pb2_grpc.PacsServiceStub(channel)
            # Opened, never read (until the end; the deadline ends a stream that hangs).
            stalled.append(stub.WatchPull(request, metadata=meta, timeout=60))
        peak = baseline
        sampling = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not sampling.wait(0.05):
                peak = max(peak, rss_bytes(node.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        read: list[pacs_pb2.Pull] = []
        served: list[float] = []
        try:
            with node.client("radiologist", CASE) as radiologist:
                for state in _watch(node, pull.pull_id.value):
                    read.append(state)
                    if len(read) % 20 == 0:  # other calls are answered meanwhile
                        asked = time.monotonic()
                        assert [n.name for n in radiologist.pacs_nodes()] == ["far", "near"]
                        served.append(time.monotonic() - asked)
        finally:
            sampling.set()
            sampler.join()
        after = rss_bytes(node.pid)
        final = read[-1]
        assert final.state == asset_pb2.JOB_STATE_SUCCEEDED, final.message
        assert final.instances_fetched == total
        grown = peak - baseline
        print(
            f"server RSS {baseline / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB, "
            f"{after / MiB:.1f} MiB after, with {len(stalled)} stalled WatchPull streams: "
            f"+{grown / MiB:.1f} MiB (bound {STALLED_BOUND / MiB:.0f} MiB); {len(read)} "
            f"states to a reader; other calls answered in at most {max(served) * 1000:.0f} ms"
        )
        assert grown < STALLED_BOUND, f"the server grew by {grown / MiB:.1f} MiB"
        got = []
        for k, call in enumerate(stalled):
            states = list(call)  # read at last: each ends with the final state
            assert states[-1].state == asset_pb2.JOB_STATE_SUCCEEDED, k
            assert states[-1].instances_fetched == total
            got.append(len(states))
        small, default = got[:STALLED_EACH], got[STALLED_EACH:]
        print(
            f"states received by the small-window streams {min(small)}-{max(small)}, by the "
            f"default ones {min(default)}-{max(default)}"
        )
        # 1 KiB holds 7; one more waiting for the window, then the newest.
        assert max(small) <= 12 < len(read), small
    finally:
        for channel in channels:
            channel.close()
        assert node.stop() == 0
