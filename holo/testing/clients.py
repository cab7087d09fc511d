"""A session client with test instruments: what a test or the simulator observes.

:class:`InstrumentedSessionClient` is a :class:`~holo.client.session.SessionClient` that
records the seq of every event it applied (a test checks them gap-free, without repeats),
can stop reading its stream while keeping it open (a stalled headset: the server must
resync it, not queue for it without bound), can take ephemeral values without
converting them (a load generator that only reads their ``t_ns``), and counts the stream
messages and bytes it received (ephemeral ones apart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from holo.client.session import SessionClient
from holo.session.state import Event

__all__ = ["InstrumentedSessionClient"]


class InstrumentedSessionClient(SessionClient):
    """Arguments as for :class:`SessionClient`, plus ``on_ephemeral_t_ns``: given, each
    ephemeral value received goes to it as its ``t_ns`` only (no conversion, nothing kept).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, *args: Any, on_ephemeral_t_ns: Callable[[int], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.seqs: list[int] = []  # every event applied, in order
        self._on_ephemeral_t_ns = on_ephemeral_t_ns
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.messages = self.message_bytes = 0  # every stream message received
        self.ephemeral_messages = self.ephemeral_bytes = 0  # the ephemeral ones among them

    def stall(self) -> None:
        """Stop reading the stream, keeping it open: the transport's windows fill, and the
        server must resync this client rather than grow its queue. :meth:`unstall` reads on."""
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    async def _before_message(self) -> None:
        await self._flowing.wait()

    async def _handle(self, message: Any) -> None:  # a holo.v1 SessionMessage
        size = message.ByteSize()
        self.messages += 1
        self.message_bytes += size
        if message.WhichOneof("kind") in ("ephemeral", "ephemerals"):
            self.ephemeral_messages += 1
            self.ephemeral_bytes += size
        await super()._handle(message)

    def _apply(self, event: Event) -> None:
        before = self.state.seq
        super()._apply(event)
        if self.state.seq != before:
            self.seqs.append(event.seq)

    def _take_ephemerals(self, updates: Sequence[Any]) -> None:
        if self._on_ephemeral_t_ns is None:
            super()._take_ephemerals(updates)
            return
        for update in updates:
            self._on_ephemeral_t_ns(update.t_ns)
