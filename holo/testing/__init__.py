"""Test instruments that ship with holo: a real server in-process or as a process, the
headset simulator, an instrumented session client, and the video sync probe.

None of it is used by the server or the SDK; tests, benchmarks and ``holo simulate`` use
it. Nothing here is a stand-in: :class:`TestServer` is the real server on a free port.

==================================  ======================================================
:mod:`.server`                      :class:`TestServer` (in-process), :class:`ServeProcess`
:mod:`.clients`                     :class:`InstrumentedSessionClient`
:mod:`.simulate`                    ``holo simulate``: a presenter, experts and observers
:mod:`.testcard`, :mod:`.probe`     frame numbers burned into pictures; the sync error
==================================  ======================================================
"""

from holo.testing.server import ServeProcess, TestServer, start_test_server

__all__ = ["ServeProcess", "TestServer", "start_test_server"]
