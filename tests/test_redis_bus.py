"""The session bus: the same behaviour checks against MemoryBus and RedisBus (real Redis).

Each Redis test gets its own key prefix on a module-wide ``redis-server``; several
``RedisBus`` instances on it stand for several holo nodes. For the memory backend every
"node" is the same ``MemoryBus`` (one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import pytest
import redis.asyncio
from redis_server import redis_url  # noqa: F401  (the fixture)

from holo.errors import SessionError
from holo.session.bus import Bus, MemoryBus, SeqConflictError
from holo.session.redis_bus import RedisBus

T = TypeVar("T")
MakeBus = Callable[[], Bus]

TIMEOUT = 15.0  # seconds for one test's whole coroutine: a hang fails, it does not stall


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
def make_bus(request: pytest.FixtureRequest) -> MakeBus:
    """Makes one bus per "node": a new RedisBus each call, or the one shared MemoryBus."""
    if request.param == "memory":
        shared: list[MemoryBus] = []

        def make_memory() -> Bus:
            if not shared:
                shared.append(MemoryBus())
            return shared[0]

        return make_memory
    url = request.getfixturevalue("redis_url")
    prefix = _prefix()
    return lambda: RedisBus(url, prefix=prefix)


@asynccontextmanager
async def nodes(make_bus: MakeBus, count: int) -> AsyncIterator[list[Bus]]:
    buses = [make_bus() for _ in range(count)]
    try:
        yield buses
    finally:
        for bus in buses:
            await bus.close()


async def take(source: AsyncIterator[T], count: int) -> list[T]:
    """The first ``count`` items of ``source``, then close it."""
    items: list[T] = []
    async with aclosing(source):  # type: ignore[type-var]
        async for item in source:
            items.append(item)
            if len(items) == count:
                break
    return items


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def append_retrying(bus: Bus, session_id: str, payload: bytes) -> int:
    """Append as a hub does: on a conflict, catch up to the log and try again."""
    expected = 0
    while True:
        try:
            return await bus.append(session_id, payload, expected_seq=expected)
        except SeqConflictError as conflict:
            expected = conflict.actual


def test_append_numbers_from_one_and_reads_in_order(make_bus: MakeBus) -> None:
    async def main() -> None:
        async with nodes(make_bus, 1) as (bus,):
            assert [await bus.append("s", b"e%d" % i, expected_seq=i) for i in range(3)] == [
                1,
                2,
                3,
            ]
            assert await bus.read("s", 0) == [(1, b"e0"), (2, b"e1"), (3, b"e2")]
            assert await bus.read("s", 2) == [(3, b"e2")]
            assert await bus.read("s", 3) == []
            assert await bus.read("other", 0) == []
            assert await bus.append("other", b"x", expected_seq=0) == 1

    run(main())


def test_append_on_a_stale_seq_raises_seq_conflict(make_bus: MakeBus) -> None:
    async def main() -> None:
        async with nodes(make_bus, 2) as (one, two):
            await one.append("s", b"first", expected_seq=0)
            for expected in (0, 5):
                with pytest.raises(SeqConflictError) as caught:
                    await two.append("s", b"loser", expected_seq=expected)
                assert (caught.value.expected, caught.value.actual) == (expected, 1)
                assert isinstance(caught.value, SessionError)
            assert await two.read("s", 0) == [(1, b"first")]

    run(main())


def test_concurrent_appenders_make_one_gap_free_log(make_bus: MakeBus) -> None:
    async def node(bus: Bus, name: int) -> list[int]:
        return [await append_retrying(bus, "s", b"%d:%d" % (name, i)) for i in range(50)]

    async def main() -> None:
        async with nodes(make_bus, 4) as buses:
            seqs = await asyncio.gather(*(node(bus, n) for n, bus in enumerate(buses)))
            log = await buses[0].read("s", 0)
            assert [seq for seq, _ in log] == list(range(1, 201))
            expected = {b"%d:%d" % (n, i) for n in range(4) for i in range(50)}
            assert sorted(payload for _, payload in log) == sorted(expected)
            assert sorted(s for node_seqs in seqs for s in node_seqs) == list(range(1, 201))
            for n, node_seqs in enumerate(seqs):  # each node's own events stay in its order
                assert [payload for seq, payload in log if seq in set(node_seqs)] == [
                    b"%d:%d" % (n, i) for i in range(50)
                ]
            for bus in buses[1:]:
                assert await bus.read("s", 0) == log

    run(main())


def test_tail_delivers_history_then_live_events_identically(make_bus: MakeBus) -> None:
    async def main() -> None:
        async with nodes(make_bus, 3) as (writer, one, two):
            for i in range(5):
                await writer.append("s", b"%d" % i, expected_seq=i)
            seen: list[list[tuple[int, bytes]]] = [[], []]

            async def follow(bus: Bus, into: list[tuple[int, bytes]], after: int) -> None:
                async with aclosing(bus.tail("s", after)) as events:  # type: ignore[type-var]
                    async for event in events:
                        into.append(event)
                        if event[0] == 10:
                            return

            tails = [
                asyncio.create_task(follow(b, s, 0)) for b, s in zip((one, two), seen, strict=True)
            ]
            late: list[tuple[int, bytes]] = []
            tails.append(asyncio.create_task(follow(one, late, 3)))
            await wait_until(lambda: all(len(s) == 5 for s in seen))  # history first
            for i in range(5, 10):
                await writer.append("s", b"%d" % i, expected_seq=i)
                await asyncio.sleep(0.005)
            await asyncio.gather(*tails)
            expected = [(i + 1, b"%d" % i) for i in range(10)]
            assert seen == [expected, expected]
            assert late == expected[3:]

    run(main())


def test_tail_resumes_exactly_once_after_its_connection_is_killed(redis_url: str) -> None:  # noqa: F811
    prefix = _prefix()

    async def main() -> None:
        bus = RedisBus(redis_url, prefix=prefix)
        admin = redis.asyncio.Redis.from_url(redis_url)
        kills = 0
        try:
            for i in range(10):
                await bus.append("s", b"%d" % i, expected_seq=i)
            tail = asyncio.create_task(take(bus.tail("s", 0), 150))

            async def kill_tail_connections() -> None:
                nonlocal kills
                for client in await admin.client_list():
                    if client["name"] == f"{prefix}:blocking":
                        kills += await admin.client_kill_filter(_id=client["id"])

            await asyncio.sleep(0.05)
            await kill_tail_connections()  # while blocked in XREAD
            for i in range(10, 150):
                await bus.append("s", b"%d" % i, expected_seq=i)
                if i % 20 == 0:  # and while events are flowing
                    await kill_tail_connections()
                await asyncio.sleep(0.002)
            events = await tail
        finally:
            await bus.close()
            await admin.aclose()
        assert events == [(i + 1, b"%d" % i) for i in range(150)]
        assert kills >= 3

    run(main())


def test_publish_reaches_every_subscriber_on_every_node(make_bus: MakeBus) -> None:
    async def main() -> None:
        async with nodes(make_bus, 3) as buses:
            warm = b"warm-up"
            got: list[list[bytes]] = [[] for _ in range(5)]
            wanted = [b"%d" % i for i in range(20)]
            # Four subscribers to "a" (two on node 0), one to "b" on node 2.
            where = [(buses[0], "a"), (buses[0], "a"), (buses[1], "a"), (buses[2], "a")]
            where.append((buses[2], "b"))

            async def listen(bus: Bus, session_id: str, into: list[bytes], count: int) -> None:
                async with aclosing(bus.subscribe(session_id)) as values:  # type: ignore[type-var]
                    async for value in values:
                        into.append(value)
                        if len([v for v in into if v != warm]) == count:
                            return

            counts = [len(wanted)] * 4 + [1]
            listeners = [
                asyncio.create_task(listen(bus, session_id, into, count))
                for (bus, session_id), into, count in zip(where, got, counts, strict=True)
            ]
            # A subscription only hears what is published once it is active: warm up first.
            while not all(got):
                for session_id in ("a", "b"):
                    await buses[1].publish(session_id, warm)
                await asyncio.sleep(0.01)
            for value in wanted:
                await buses[1].publish("a", value)
            await buses[0].publish("b", b"only-b")
            await asyncio.gather(*listeners)
            heard = [[v for v in into if v != warm] for into in got]
            assert heard == [wanted] * 4 + [[b"only-b"]]

    run(main())


def test_put_session_and_claim_case_keep_the_first(make_bus: MakeBus) -> None:
    async def main() -> None:
        async with nodes(make_bus, 4) as buses:
            bus = buses[0]
            assert await bus.get_session("s1") is None
            assert await bus.put_session("s1", b"first") == b"first"
            assert await buses[1].put_session("s1", b"second") == b"first"
            assert await buses[2].get_session("s1") == b"first"
            assert await bus.find_session("case") is None
            winners = await asyncio.gather(
                *(b.claim_case("case", f"s{n}") for n, b in enumerate(buses))
            )
            assert len(set(winners)) == 1
            assert await buses[3].find_session("case") == winners[0]
            assert await bus.claim_case("case", "late") == winners[0]

    run(main())


def test_an_append_after_retire_keeps_the_log_the_record_and_the_case_claim(
    redis_url: str,  # noqa: F811
) -> None:
    """A node archived the session and let its keys expire (retire); another node serves
    it on: its next append lifts the expiry of the log, the record and the case's claim,
    so the case does not lose its session a day later. A claim that names another
    session is not touched."""

    async def main() -> None:
        prefix = _prefix()
        bus = RedisBus(redis_url, prefix=prefix)
        raw = redis.asyncio.Redis.from_url(redis_url)
        try:
            await bus.put_session("s1", b"record")
            assert await bus.claim_case("case", "s1") == "s1"
            await bus.append("s1", b"e1", expected_seq=0, case_id="case")
            await bus.retire("s1", "case", keep_s=600)
            keys = [f"{prefix}:{kind}" for kind in ("log:s1", "session:s1", "case:case")]
            ttls = [await raw.ttl(k) for k in keys]
            assert all(0 < t <= 600 for t in ttls), ttls
            await bus.append("s1", b"e2", expected_seq=1, case_id="case")
            assert [await raw.ttl(k) for k in keys] == [-1, -1, -1]  # no expiry
            await raw.set(f"{prefix}:case:other", "s2", ex=600)
            await bus.append("s1", b"e3", expected_seq=2, case_id="other")
            assert 0 < await raw.ttl(f"{prefix}:case:other") <= 600
        finally:
            await raw.aclose()
            await bus.close()

    run(main())


def test_connect_without_redis_names_the_url_and_the_fix() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    with pytest.raises(SessionError) as caught:
        run(RedisBus.connect(url))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "redis-server" in message
    assert "hunter2" not in message
    assert "\n" not in message
    with pytest.raises(SessionError, match="bad Redis URL"):
        RedisBus("http://127.0.0.1:1/0")


def test_connect_close_and_resp3(redis_url: str) -> None:  # noqa: F811
    async def main() -> None:
        bus = await RedisBus.connect(f"{redis_url}?protocol=3", prefix=_prefix())
        try:
            hello = await bus._redis.execute_command("HELLO")
            assert hello[b"proto"] == 3  # the URL's protocol really is in use
            for i in range(3):
                await bus.append("s", b"%d" % i, expected_seq=i)
            assert await take(bus.tail("s", 1), 2) == [(2, b"1"), (3, b"2")]
            tail = asyncio.create_task(take(bus.tail("s", 3), 1))
            await asyncio.sleep(0.05)
        finally:
            await bus.close()
        with pytest.raises(SessionError, match="closed"):
            await tail

    run(main())


def test_closing_a_subscription_unsubscribes(redis_url: str) -> None:  # noqa: F811
    prefix = _prefix()
    channel = f"{prefix}:eph:s"

    async def main() -> None:
        bus = RedisBus(redis_url, prefix=prefix)
        admin = redis.asyncio.Redis.from_url(redis_url)

        async def subscribers() -> Any:
            return dict(await admin.pubsub_numsub(channel))[channel.encode()]

        try:
            values = bus.subscribe("s")
            first = asyncio.create_task(values.__anext__())
            await wait_until_async(lambda: subscribers(), 1)
            await bus.publish("s", b"x")
            assert await first == b"x"
            await values.aclose()  # type: ignore[attr-defined]
            assert await subscribers() == 0
            cancelled = asyncio.create_task(take(bus.subscribe("s"), 1))
            await wait_until_async(lambda: subscribers(), 1)
            cancelled.cancel()
            await asyncio.gather(cancelled, return_exceptions=True)
            assert await subscribers() == 0
        finally:
            await bus.close()
            await admin.aclose()

    run(main())


async def wait_until_async(probe: Callable[[], Awaitable[Any]], value: Any) -> None:
    while await probe() != value:
        await asyncio.sleep(0.01)


def test_subscription_survives_its_connection_being_killed(redis_url: str) -> None:  # noqa: F811
    prefix = _prefix()

    async def main() -> None:
        bus = RedisBus(redis_url, prefix=prefix)
        admin = redis.asyncio.Redis.from_url(redis_url)
        got: list[bytes] = []

        async def listen() -> None:
            async with aclosing(bus.subscribe("s")) as values:  # type: ignore[type-var]
                async for value in values:
                    got.append(value)
                    if value == b"done":
                        return

        async def heard(value: bytes) -> None:  # publish until the subscription hears it
            while value not in got:
                await bus.publish("s", value)
                await asyncio.sleep(0.01)

        try:
            listener = asyncio.create_task(listen())
            await heard(b"before")
            killed = 0
            for client in await admin.client_list():
                if client["name"] == f"{prefix}:blocking":
                    killed += await admin.client_kill_filter(_id=client["id"])
            assert killed == 1
            await heard(b"after")
            await bus.publish("s", b"done")
            await listener
        finally:
            await bus.close()
            await admin.aclose()

    run(main())


def test_a_session_started_on_a_node_hears_what_is_published_at_once(
    redis_url: str,  # noqa: F811
) -> None:
    """Issue 14, point 9: a live session is started only once Redis confirmed its ephemeral
    subscription, so a value published right after is not lost (before, it was marked
    started one loop turn after asking, long before Redis had subscribed it)."""
    import json

    from holo.session import SessionHub

    async def main() -> None:
        prefix = _prefix()
        creator, node = RedisBus(redis_url, prefix=prefix), RedisBus(redis_url, prefix=prefix)
        hubs = SessionHub(creator), SessionHub(node)
        heard = []
        for k in range(5):
            info = await hubs[0].create_session(f"case-{k}")
            live = await hubs[1].get(info.session_id)  # starts it on the second node
            alive = {"participant_id": "p_x", "channel": "heartbeat", "t_ns": 0, "value": {}}
            await creator.publish(info.session_id, json.dumps(alive).encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_until(lambda live=live: "p_x" in live.last_seen), 2)
            heard.append("p_x" in live.last_seen)
        for hub in hubs:
            await hub.close()
        for bus in (creator, node):
            await bus.close()
        assert heard == [True] * 5

    run(main())
