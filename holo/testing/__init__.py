"""Test instruments that ship with holo: a real server in-process or as a process, the
headset simulator, an instrumented session client, and the video sync probe.

None of it is used by the server or the SDK; tests, benchmarks and ``holo simulate`` use
it. Nothing here is a stand-in: :class:`TestServer` is the real server on a free port.

==================================  ======================================================
:mod:`.server`                      :class:`TestServer` (in-process), :class:`ServeProcess`
                                    (the ``server`` extra)
:mod:`.clients`                     :class:`InstrumentedSessionClient`
:mod:`.simulate`                    ``holo simulate``: a presenter, experts and observers
                                    (the lean install has it)
:mod:`.testcard`, :mod:`.probe`     frame numbers burned into pictures; the sync error
:mod:`.accuracy`                    a conversion's bones against analytic capsules: Dice,
                                    surface distances (the ``convert`` extra)
:mod:`.registration`                registration against analytic truth: known transforms,
                                    noise of known size (the ``convert`` extra)
==================================  ======================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from holo.testing.server import ServeProcess, TestServer, start_test_server

__all__ = ["ServeProcess", "TestServer", "start_test_server"]


def __getattr__(name: str) -> Any:
    # The server's names load the server (its extra) only when asked for: the simulator
    # and the instrumented client need only the SDK.
    if name in __all__:
        from holo.testing import server

        return getattr(server, name)
    raise AttributeError(f"module 'holo.testing' has no attribute {name!r}")
