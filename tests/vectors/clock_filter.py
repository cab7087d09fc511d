"""Shared test vectors for the clock filter: four-timestamp exchanges and what the Python
SDK's :class:`holo.client.clock.ClockSync` estimates from them, for the Unity bridge's
ClockFilter (unity_bridge/Core/ClockFilter.cs).

``python tests/vectors/clock_filter.py`` writes ``clock_filter.json``. Each scenario is a
sequence of exchanges (t1, t2, t3, t4, rate, epoch) drawn from a seeded generator: a
client clock with a known offset from the session clock, delays that differ each way
(the error the filter bounds), a replay clock at another speed, a seek (new epoch), a
paused clock, negative local times (floor division), session times near 1.8e18 (beyond
what a double holds exactly). The exchanges go through the real ``ClockSync.sync`` (its
RPC stub replaced by one that answers with the scenario's timestamps), and after each the
vector records what the SDK then says: the sample, ``offset_ns``, ``delay_ns``, ``rate``,
``epoch``, and ``to_session`` / ``to_local`` of a few query times (``null`` where it
refuses: a paused clock has no local time). ``tests/test_unity_vectors.py`` checks the
file is current; the C# tests replay it (ClockVectorTests.cs).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from holo.client import ClientError
from holo.client.clock import ClockSync

OUT = Path(__file__).with_name("clock_filter.json")
SESSION_T0 = 1_780_000_000_000_000_000  # session times near 1.8e18 ns (wall-clock anchored)


class _Channel:
    """Enough of a channel for ClockSync to build its stub (replaced before any call)."""

    def unary_unary(self, *args: object, **kwargs: object) -> None:
        return None


class _Answers:
    """The stub: answers each Sync with the next prepared reply, echoing t1."""

    def __init__(self) -> None:
        self.reply: dict[str, Any] = {}

    async def Sync(self, request: Any, metadata: object = None, timeout: object = None) -> Any:  # noqa: N802
        return SimpleNamespace(client_send_ns=request.client_send_ns, **self.reply)


def _exchanges(rng: random.Random, kind: str) -> list[dict[str, Any]]:
    """The exchanges of one scenario: local t1, t4 and session t2, t3 with known offsets."""
    out = []
    local = rng.randint(-50_000_000_000, 50_000_000_000) if kind == "negative" else 10**12
    offset = SESSION_T0 - local + rng.randint(-(10**9), 10**9)
    rate, epoch = 1.0, 0
    session_at = offset + local  # the session clock's reading at local time `local`
    count = {"live": 24, "negative": 12, "replay": 30, "single": 1}[kind]
    for n in range(count):
        if kind == "replay" and n in (10, 20):
            epoch += 1  # a seek, then a change of speed
            session_at += rng.randint(-5 * 10**9, 5 * 10**9)
            rate = 2.0 if n == 10 else 0.5
        if kind == "replay" and n == 27:
            rate = 0.0  # paused
        up = rng.randint(100_000, 8_000_000)  # ns, client -> server
        down = rng.randint(100_000, 8_000_000)  # server -> client
        serve = rng.randint(10_000, 500_000)  # real ns the server took
        t1 = local
        t2 = session_at + round(rate * up)
        t3 = t2 + round(rate * serve)
        t4 = t1 + up + serve + down
        out.append({"t1": t1, "t2": t2, "t3": t3, "t4": t4, "rate": rate, "epoch": epoch})
        gap = rng.randint(1_000_000, 50_000_000)
        local = t4 + gap
        session_at = t3 + round(rate * (down + gap))
    return out


def _say(call: Any) -> int | None:
    try:
        return int(call())
    except ClientError:
        return None


async def _scenario(seed: int, kind: str, window: int, best: int) -> dict[str, Any]:
    rng = random.Random(seed)
    exchanges = _exchanges(rng, kind)
    answers = _Answers()
    times: list[int] = []
    sync = ClockSync(
        _Channel(),
        local_ns=lambda: times.pop(0),
        window=window,
        best=best,
    )
    sync._stub = answers  # type: ignore[assignment]
    steps = []
    for exchange in exchanges:
        times[:] = [exchange["t1"], exchange["t4"]]
        answers.reply = {
            "server_receive_ns": exchange["t2"],
            "server_send_ns": exchange["t3"],
            "rate": exchange["rate"],
            "epoch": exchange["epoch"],
        }
        sample = await sync.sync()
        queries = [exchange["t4"], exchange["t4"] + rng.randint(0, 10**10), exchange["t1"] - 12_345]
        sessions = [sync.to_session(q) for q in queries]
        steps.append(
            {
                "exchange": exchange,
                "sample": {
                    "local_mid_ns": sample.local_mid_ns,
                    "session_mid_ns": sample.session_mid_ns,
                    "delay_ns": sample.delay_ns,
                    "offset_ns": sample.offset_ns,
                },
                "samples_held": len(sync.samples),
                "offset_ns": sync.offset_ns,
                "delay_ns": sync.delay_ns,
                "rate": sync.rate,
                "epoch": sync.epoch,
                "to_session": [[q, s] for q, s in zip(queries, sessions, strict=True)],
                "to_local": [
                    [s, _say(lambda s=s: sync.to_local(s))] for s in [*sessions, SESSION_T0]
                ],
            }
        )
    return {"seed": seed, "kind": kind, "window": window, "best": best, "steps": steps}


def vectors() -> dict[str, Any]:
    plan = [
        (0, "live", 16, 3),
        (1, "live", 4, 2),
        (2, "negative", 16, 3),
        (3, "replay", 16, 3),
        (4, "replay", 8, 1),
        (5, "single", 16, 3),
    ]
    scenarios = [asyncio.run(_scenario(*p)) for p in plan]
    return {
        "about": (
            "holo clock filter vectors (holo/client/clock.py ClockSync); regenerate with "
            "python tests/vectors/clock_filter.py"
        ),
        "scenarios": scenarios,
    }


def render() -> str:
    return json.dumps(vectors(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.exit(0)
