"""Property: for random interleavings of intents from several clients, every client's
folded state equals the server's state at the same seq.

Each example opens a fresh session on a real server, fires a random script of intents
(valid and invalid ones: the server refuses some, which must not desynchronise anyone)
from a presenter, two experts and an observer, concurrently in random groups, then checks
every state each client held against the server's log folded to the same seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holo.client import ClientError
from holo.client.session import SessionClient
from holo.session import HubConfig
from holo.session.records import Pose
from holo.session.state import SessionState, apply
from holo.testing import TestServer

ROLES = ("presenter", "expert", "expert", "observer")
_cases = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    # Presence timeouts far beyond an example's length: only the script changes state.
    config = HubConfig(away_after_s=120, remove_after_s=240)
    with TestServer(tmp_path_factory.mktemp("prop"), session=config) as running:
        yield running


def _pose(k: int) -> Pose:
    return Pose((0.01 * k, 1.0, -0.5), (0.0, 0.0, 0.0, 1.0))


intent = st.tuples(
    st.integers(0, len(ROLES) - 1),  # who
    st.sampled_from(
        ["commit", "marker", "stroke", "label", "remove", "request", "grant", "revoke", "drag"]
    ),
    st.integers(0, 5),  # an argument: pose index, annotation number or target
)
script = st.lists(st.lists(intent, min_size=1, max_size=4), min_size=1, max_size=10)


async def _fire(
    c: SessionClient, others: list[SessionClient], kind: str, arg: int, model: str
) -> None:
    target = others[arg % len(others)].participant_id
    calls = {
        "commit": lambda: c.commit_anchor(model, _pose(arg)),
        "marker": lambda: c.add_marker(f"a{arg}", model, [0.0, 0.01 * arg, 0.0]),
        "stroke": lambda: c.add_stroke(f"a{arg}", model, [[0, 0, 0], [0.01, 0.0, 0.01 * arg]]),
        "label": lambda: c.add_label(f"a{arg}", model, [0.0, 0.0, 0.0], f"note {arg}"),
        "remove": lambda: c.remove_annotation(f"a{arg}"),
        "request": c.request_control,
        "grant": lambda: c.grant_control(target),
        "revoke": lambda: c.revoke_control(target),
        "drag": lambda: c.drag(model, _pose(arg)),
    }
    # Refused intents (role, rule or a stale id) must leave every state consistent.
    with contextlib.suppress(ClientError):
        await calls[kind]()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=script)
def test_every_client_folds_the_servers_state(
    server: TestServer, knee_glb: Path, steps: list[list[tuple[int, str, int]]]
) -> None:
    case = f"prop-{next(_cases)}"
    model = server.publish_model(case, knee_glb)

    async def body() -> None:
        history: dict[int, dict[int, dict[str, Any]]] = {}

        def recorder(i: int, client: list[SessionClient]) -> Any:
            return lambda event: history.setdefault(i, {}).__setitem__(
                event.seq, client[0].state.public_dict()
            )

        clients: list[SessionClient] = []
        for i, role in enumerate(ROLES):
            holder: list[SessionClient] = []
            c = SessionClient(
                server.address,
                token=server.token(role, case, subject=f"{role}{i}"),
                insecure=True,
                on_event=recorder(i, holder),
            )
            holder.append(c)
            clients.append(c)
        session_id = (await clients[0].create_session()).session_id.value
        for c in clients:
            await c.join(session_id)
        await clients[0].load_model(model, _pose(0))
        for group in steps:  # each group's intents race each other
            await asyncio.gather(
                *(
                    _fire(clients[who], clients[:who] + clients[who + 1 :], kind, arg, model)
                    for who, kind, arg in group
                )
            )
        assert server.running is not None
        live = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(server.running.hub.get(session_id), server.loop)
        )
        final = live.state.seq
        for c in clients:
            await c.wait_seq(final)
            assert not c.errors, c.errors
        # Fold the server's log and compare at every seq any client recorded.
        folded = SessionState()
        for event in list(live.events):
            apply(folded, event)
            for i in history:
                if event.seq in history[i]:
                    assert history[i][event.seq] == folded.public_dict(), (i, event.seq)
        for c in clients:
            assert c.state.public_dict() == folded.public_dict()
            await c.close()

    asyncio.run(asyncio.wait_for(body(), 60))
