"""The Redis session bus: several holo nodes share sessions through one Redis.

Same methods and semantics as :class:`holo.session.bus.MemoryBus`, over ``redis.asyncio``:

- ``{prefix}:session:{session_id}`` and ``{prefix}:case:{case_id}``: plain keys, set with NX.
- ``{prefix}:log:{session_id}``: the durable log, one stream per session. Event ``seq = n`` is
  the entry with the explicit id ``n-0`` and the field ``p`` = payload. A Lua script checks
  the length and adds in one step, so appends from many nodes stay gap-free. Never trimmed.
- ``{prefix}:eph:{session_id}``: the ephemeral channel, plain pub/sub (at most once).
- A node that archived a session (:meth:`RedisBus.retire`) sets its keys to expire; any
  append lifts that for the log and record.

Two connection pools: one for commands (redis-py retries transient errors) and one for
blocking reads, where every :meth:`RedisBus.tail` and :meth:`RedisBus.subscribe` holds its
own connection (named ``{prefix}:blocking`` in ``CLIENT LIST``) and reconnects itself, so a
long ``XREAD BLOCK`` never holds up a command. A hub should tail each session once per node
and fan out, not once per participant.

While Redis does not answer (restarted, not yet started, cut off), every command raises
:class:`~holo.errors.UnavailableError` in one line once redis-py's retries are spent
(about 1.5 s), and :meth:`RedisBus.down` says why; tails and subscriptions wait and resume.
An append either lands whole (one Lua script) or not at all. What survives a restart of
Redis is what Redis persisted: run it with ``appendonly yes`` (``appendfsync everysec``
can lose the last second) or the session logs go with it.
"""

from __future__ import annotations

from holo.extras import need

need("server", "redis", feature="the Redis session bus")

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from holo.errors import SessionError, UnavailableError
from holo.session.bus import SeqConflictError

__all__ = ["RedisBus"]

logger = logging.getLogger(__name__)

# KEYS[1] the stream, KEYS[2] the session's record, KEYS[3] its case's key; ARGV: expected
# seq, the new entry's id, payload, the session id. XLEN is the seq because the stream is
# never trimmed; the explicit id makes a second writer's XADD on the same seq impossible
# even if someone did trim it. An append means the session is in use: an expiry set by a
# node that archived it (retire) is lifted, from the case's claim too while it still names
# this session (else a session served on for a day after another node archived it would
# lose its case, and the case's next CreateSession would open a second one).
_APPEND = """
local length = redis.call('XLEN', KEYS[1])
if length ~= tonumber(ARGV[1]) then
  return {0, length}
end
redis.call('XADD', KEYS[1], ARGV[2], 'p', ARGV[3])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('PERSIST', KEYS[3])
end
return {1, length + 1}
"""

# KEYS: the log, the record, the case key; ARGV: seconds, the session id. The case key
# expires only while it still names this session.
_RETIRE = """
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('EXPIRE', KEYS[3], ARGV[1])
end
return 1
"""

# KEYS[1] the key; ARGV[1] the value. SET NX then GET, atomically (SET NX GET needs Redis 7).
_SET_NX_GET = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

_READ_BATCH = 1000  # entries per XRANGE reply
_TAIL_BATCH = 500  # entries per XREAD reply
_BLOCK_MS = 1000  # XREAD BLOCK, well under the 5 s socket timeout
_BACKOFF = (0.05, 2.0)  # first and longest wait before reconnecting a tail or subscription
_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
#: How long a health check waits for PING: a LAN round trip is well under a millisecond,
#: and health is asked every 2 s.
PING_TIMEOUT_S = 2.0


def _redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _seq(entry_id: bytes | str | None) -> int:
    return int((entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)).split("-")[0])


def _xread_entries(reply: Any) -> list[Any]:
    """The entries of the one stream asked for, from any XREAD reply shape.

    redis-py gives ``[[key, entries]]`` (RESP2, and RESP3 by default) or, when the URL says
    ``protocol=3``, ``{key: [entries]}``.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        return cast(list[Any], entries[0] if entries and isinstance(entries[0], list) else entries)
    return cast(list[Any], reply[0][1])


async def _subscribed(pubsub: redis.asyncio.client.PubSub, channel: str) -> None:
    """Subscribe and wait for Redis to confirm: from then on nothing published is missed."""
    await pubsub.subscribe(channel)
    while True:
        message = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "subscribe":
            return


async def _close_pubsub(pubsub: redis.asyncio.client.PubSub) -> None:
    await cast(Any, pubsub).aclose()  # redis-py leaves PubSub.aclose unannotated


class RedisBus:
    """The session bus over Redis, shared by every holo node pointed at the same URL.

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``).
    prefix
        Namespace of every key and channel, so several deployments can share one Redis.

    Notes
    -----
    Nothing is sent until the first call; :meth:`connect` checks the server first. redis-py
    retries a command whose reply was lost; for an append that had landed, the retry raises
    :class:`SeqConflictError` (the caller's event is already in the log), never a duplicate.
    """

    def __init__(self, url: str, *, prefix: str = "holo") -> None:
        self.url = url
        self.prefix = prefix
        self._closed = False
        try:
            # Commands retry a dropped connection (a lost append reply then comes back as
            # SeqConflictError with our event in the log, which the hub recognises).
            self._redis = redis.asyncio.Redis.from_url(
                url,
                decode_responses=False,
                client_name=f"{prefix}:bus",
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
                retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            )
            self._blocking_pool = redis.asyncio.ConnectionPool.from_url(
                url,
                decode_responses=False,
                client_name=f"{prefix}:blocking",
                retry=Retry(NoBackoff(), 0),  # tail() and subscribe() reconnect themselves
            )
        except ValueError as err:
            raise SessionError(
                f"bad Redis URL {_redacted(url)!r}: {err}; use redis://host:port/db"
            ) from err
        self._blocking = redis.asyncio.Redis(connection_pool=self._blocking_pool)
        self._append = self._redis.register_script(_APPEND)
        self._set_nx_get = self._redis.register_script(_SET_NX_GET)
        self._retire = self._redis.register_script(_RETIRE)

    @classmethod
    async def connect(cls, url: str, *, prefix: str = "holo") -> RedisBus:
        """A bus on ``url``, after checking that Redis answers PING.

        Raises
        ------
        SessionError
            Redis is unreachable, refuses the credentials, or the URL is malformed.
        """
        bus = cls(url, prefix=prefix)
        try:
            await bus._blocking.ping()  # no retries on this pool: fail fast
        except (*_LOST, redis.exceptions.ResponseError) as err:
            await bus.close()
            raise SessionError(
                f"cannot reach Redis at {_redacted(url)} ({err}); start redis-server there "
                "or pass the URL of a running one (holo serve --bus redis://host:port/0)"
            ) from err
        return bus

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """A command's lost connection, after redis-py's retries, as UnavailableError."""
        try:
            yield
        except _LOST as err:
            self._check_open(err)
            raise UnavailableError(
                f"the session bus (Redis at {_redacted(self.url)}) does not answer; "
                "try again shortly"
            ) from err

    def _key(self, kind: str, ident: str) -> str:
        return f"{self.prefix}:{kind}:{ident}"

    def _check_open(self, err: Exception) -> None:
        if self._closed:
            raise SessionError(f"the Redis bus on {_redacted(self.url)} was closed") from err

    async def put_session(self, session_id: str, record: bytes) -> bytes:
        with self._answering():
            stored = await self._set_nx_get(keys=[self._key("session", session_id)], args=[record])
        return cast(bytes, stored)

    async def get_session(self, session_id: str) -> bytes | None:
        with self._answering():
            return cast(bytes | None, await self._redis.get(self._key("session", session_id)))

    async def find_session(self, case_id: str) -> str | None:
        with self._answering():
            stored = cast(bytes | None, await self._redis.get(self._key("case", case_id)))
        return None if stored is None else stored.decode()

    async def claim_case(self, case_id: str, session_id: str) -> str:
        with self._answering():
            stored = await self._set_nx_get(keys=[self._key("case", case_id)], args=[session_id])
        return cast(bytes, stored).decode()

    async def append(
        self, session_id: str, payload: bytes, *, expected_seq: int, case_id: str = ""
    ) -> int:
        key = self._key("log", session_id)
        # Without a case id, KEYS[3] is the record's key, which never equals the session id.
        case_key = self._key("case", case_id) if case_id else self._key("session", session_id)
        with self._answering():
            reply = await self._append(
                keys=[key, self._key("session", session_id), case_key],
                args=[expected_seq, f"{expected_seq + 1}-0", payload, session_id],
            )
        added, seq = cast(Sequence[int], reply)
        if not added:
            raise SeqConflictError(session_id, expected_seq, int(seq))
        return int(seq)

    async def read(self, session_id: str, after_seq: int) -> list[tuple[int, bytes]]:
        key = self._key("log", session_id)
        events: list[tuple[int, bytes]] = []
        seq = max(after_seq, 0)
        while True:  # in batches: a long session's log is one reply per batch, not one
            with self._answering():
                batch = await self._redis.xrange(key, f"{seq + 1}-0", "+", count=_READ_BATCH)
            for entry_id, fields in batch or ():
                seq = self._next(session_id, seq, entry_id)
                events.append((seq, cast(dict[bytes, bytes], fields)[b"p"]))
            if len(batch or ()) < _READ_BATCH:
                return events

    def _next(self, session_id: str, seq: int, entry_id: bytes | str | None) -> int:
        """The seq of the entry after ``seq``; refuse a gap rather than skip it."""
        if (entry_seq := _seq(entry_id)) != seq + 1:
            raise SessionError(
                f"session {session_id}: the Redis log {self._key('log', session_id)} jumps "
                f"from seq {seq} to {entry_seq}; it was edited outside holo, restore it"
            )
        return entry_seq

    async def tail(self, session_id: str, after_seq: int) -> AsyncIterator[tuple[int, bytes]]:
        """Durable events with ``seq > after_seq``, in order, as they are appended; forever.

        Holds one connection of its own. When it drops, the tail logs, waits (backing off)
        and resumes after the last seq it yielded, so nothing is skipped or repeated.

        Raises
        ------
        SessionError
            The bus was closed, or the stream has a gap.
        """
        key = self._key("log", session_id)
        seq = max(after_seq, 0)
        client = redis.asyncio.Redis(
            connection_pool=self._blocking_pool, single_connection_client=True
        )
        delay = _BACKOFF[0]
        try:
            while True:
                try:
                    # Entries after id ``seq-0``: the history first (in batches), then live.
                    reply = await client.xread(
                        {key: f"{seq}-0"}, count=_TAIL_BATCH, block=_BLOCK_MS
                    )
                except _LOST as err:
                    self._check_open(err)
                    logger.warning(
                        "tail of session %s lost Redis (%s); resuming after seq %d in %.2f s",
                        session_id,
                        err,
                        seq,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, _BACKOFF[1])
                    continue
                delay = _BACKOFF[0]
                for entry_id, fields in _xread_entries(reply):
                    seq = self._next(session_id, seq, entry_id)
                    yield seq, cast(dict[bytes, bytes], fields)[b"p"]
        finally:
            await client.aclose()

    async def publish(self, session_id: str, payload: bytes) -> None:
        with self._answering():
            await self._redis.publish(self._key("eph", session_id), payload)

    async def subscribe(
        self, session_id: str, ready: asyncio.Event | None = None
    ) -> AsyncIterator[bytes]:
        """Ephemeral values published once Redis confirmed the subscription; forever.

        The generator subscribes when first iterated and sets ``ready`` once Redis
        confirmed it: values published before that are not received (as with
        :class:`MemoryBus`), nor are those sent while the connection is down (the
        subscription reconnects itself, backing off).

        Raises
        ------
        SessionError
            The bus was closed.
        """
        channel = self._key("eph", session_id)
        pubsub = self._blocking.pubsub(ignore_subscribe_messages=False)
        delay = _BACKOFF[0]
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await _subscribed(pubsub, channel)
                        if ready is not None:
                            ready.set()
                    message = await pubsub.get_message(timeout=None)
                except _LOST as err:
                    self._check_open(err)
                    logger.warning(
                        "subscription to session %s lost Redis (%s); resubscribing in %.2f s",
                        session_id,
                        err,
                        delay,
                    )
                    await _close_pubsub(pubsub)  # forget the channel: resubscribe and confirm anew
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, _BACKOFF[1])
                    continue
                delay = _BACKOFF[0]
                if message is not None and message["type"] == "message":
                    yield cast(bytes, message["data"])
        finally:
            await _close_pubsub(pubsub)

    async def unavailable(self) -> str:
        """Why Redis cannot serve now (it does not answer PING within
        :data:`PING_TIMEOUT_S`, or refuses it), in one line; empty while it answers."""
        try:
            # The blocking pool: no retries there, so a dead Redis is told at once.
            await asyncio.wait_for(self._blocking.ping(), PING_TIMEOUT_S)
        except TimeoutError:
            return f"the Redis session bus at {_redacted(self.url)} did not answer PING"
        except (*_LOST, redis.exceptions.ResponseError) as err:
            return f"the Redis session bus at {_redacted(self.url)} does not answer ({err})"
        return ""

    async def retire(self, session_id: str, case_id: str, *, keep_s: float) -> None:
        """Let the session's keys expire in ``keep_s`` (at least 1 s): other nodes may still
        serve it, and their next append lifts the expiry of its log and record."""
        keys = [
            self._key("log", session_id),
            self._key("session", session_id),
            self._key("case", case_id),
        ]
        await self._retire(keys=keys, args=[max(1, int(keep_s)), session_id])

    async def close(self) -> None:
        """Close both pools; open tails and subscriptions then raise :class:`SessionError`."""
        self._closed = True
        await self._redis.aclose()
        await self._blocking_pool.aclose()
